// The web phone: one virtual handset of the SMSC simulator, live over server-sent events.
// Plain ES module, no build step. Everything it shows comes from /api/phones/{msisdn}/events;
// every time on it is the simulator's clock (real time plus how far a tester fast-forwarded it).

import { el } from "./dom.js";

const $ = (selector) => document.querySelector(selector);
const DEFAULT_PHONE = "79161234567";
const SECOND_PHONE = "79260000001";
const MAX_USSD = 182;        // characters of one dialled USSD string (the simulator's limit too)
const MAX_SMS_CHARS = 1600;  // characters of one SMS text the simulator takes (at most 11 parts of UCS2)
const USSD_RE = /^[*#]{1,2}\d{1,4}(?:\*\+?\d{1,20})*#$/;  // as ussdgw.smpp.ussd reads a dialled string
const PARAMS = new URLSearchParams(location.search);
const numbers = new Intl.NumberFormat("ru-RU");
const oneDecimal = new Intl.NumberFormat("ru-RU", { maximumFractionDigits: 1 });

const view = {
  msisdn: null,
  source: null,
  phone: {},
  inbox: [],
  network: new Map(),   // message_id -> MT addressed to this phone, with its fate
  outbox: new Map(),    // id -> MO the phone sent
  ussd: { state: "idle" },
  pdus: [],
  unread: 0,
  tab: "dial",
  clockOffset: 0,       // seconds the simulator's clock is ahead of real time
  filter: "",
  recorded: [],         // what was done on this page, as scenario steps
  expected: new Set(),  // message ids already turned into expectations
  ussdSeen: -1,         // the dialogue version last turned into an expectation
  selfcare: false,
  mailbox: null,
  services: { sms: [], ussd: [] },
};

// ---- talking to the simulator, errors in Russian ------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.field = body.field;
    this.code = body.code;
  }
}

async function api(method, path, body) {
  const changes = method !== "GET";  // the simulator takes changes as JSON only (no cross-site form posts)
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: changes ? { "Content-Type": "application/json" } : {},
      body: changes ? JSON.stringify(body || {}) : undefined,
    });
  } catch {
    throw new ApiError(0, { code: "no_link" });  // "Failed to fetch": the simulator is gone
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const RECIPIENT_HELP = "Кому: короткий номер сервиса (например 3339) или номер абонента (+7 и 10 цифр).";
const CODE_TEXTS = {
  no_link: "Нет связи с симулятором: он остановлен или недоступен. Запустите его и повторите.",
  phone_off: "Телефон выключен: включите его в панели «Состояние телефона», чтобы набрать USSD-код.",
  phone_airplane: "Телефон в режиме полёта: выключите режим полёта, чтобы набрать USSD-код.",
  phone_unknown_number: "Неверный номер: такого абонента в сети нет, USSD-запрос не отправлен. "
    + "Снимите неисправность «Неверный номер».",
  ussd_busy: "USSD-сеанс уже идёт: дождитесь ответа сети или нажмите «Отмена».",
  nothing_asked: "Сеть ничего не спрашивала: отвечать не на что.",
  ussd_answer_too_long: "Ответ не помещается в одно USSD-сообщение: не больше 160 латинских или 80 русских букв.",
  ussd_too_long: `USSD-запрос длиннее ${MAX_USSD} символов: такой сеть не примет.`,
  malformed_ussd: "Неверный USSD-запрос. Наберите, например, *100# или *111*1#.",
  bad_recipient: RECIPIENT_HELP,
  own_number: "Это номер самого телефона: SMS себе не отправить.",
};
const FIELD_TEXTS = {
  msisdn: "Номер телефона: от 5 до 15 цифр, например 79161234567.",
  to: RECIPIENT_HELP,
  text: `Текст SMS: не больше ${numbers.format(MAX_SMS_CHARS)} символов.`,
  code: CODE_TEXTS.malformed_ussd,
  blocked_senders: "Блокировать можно короткий номер или номер абонента: цифры, не больше 20 знаков, до 100 номеров.",
  seconds: "Время симулятора: от 0 до 366 суток вперёд.",
  power: "Питание: включён, выключен или режим полёта.",
};
const STATUS_TEXTS = {
  404: "Симулятор не знает такого телефона или адреса.",
  409: "Сейчас это действие невозможно.",
  413: "Слишком большой запрос.",
  415: "Симулятор принимает изменения только в JSON.",
  421: "Симулятор отвечает только на адреса этой машины (localhost).",
};

function russian(error, context = {}) {
  if (!(error instanceof ApiError)) return `Ошибка страницы: ${error.message}`;
  if (error.code === "malformed_ussd" && context.code) return ussdProblem(context.code) || CODE_TEXTS.malformed_ussd;
  return CODE_TEXTS[error.code] || FIELD_TEXTS[error.field] || STATUS_TEXTS[error.status]
    || (error.status >= 500 ? "Ошибка симулятора: подробности в его журнале." : `Запрос отклонён (HTTP ${error.status}).`);
}

function toast(text, bad = false) {
  const node = $("#toast");
  node.textContent = text;
  node.classList.toggle("bad", bad);
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

// The page's own validation texts, next to the field (never the browser's bubbles).
function fieldError(slot, text, input) {
  const node = $(`#${slot}`);
  node.textContent = text || "";
  if (input) input.classList.toggle("invalid", !!text);
  if (input && text) input.setAttribute("aria-invalid", "true"); else if (input) input.removeAttribute("aria-invalid");
}

// ---- time and numbers, as Russian writes them ---------------------------------------------------
const simNow = () => Date.now() / 1000 + view.clockOffset;
const pad = (n) => String(n).padStart(2, "0");
function hhmmss(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function duration(seconds) {
  if (seconds < 60) return `${numbers.format(Math.round(seconds))} с`;
  if (seconds < 3600) return `${numbers.format(Math.round(seconds / 60))} мин`;
  if (seconds < 86400) return `${oneDecimal.format(seconds / 3600)} ч`;
  return `${oneDecimal.format(seconds / 86400)} сут`;
}

const rubles = (kop) => `${new Intl.NumberFormat("ru-RU", { minimumFractionDigits: 2 }).format(kop / 100)} ₽`;

// ---- codes and passwords: a copy button each ----------------------------------------------------
const CODE_RE = /(?<![\p{L}\p{N}])(?=[\p{L}\p{N}]*\p{N})[A-Za-z0-9]{4,12}(?![\p{L}\p{N}])/gu;

function codesIn(text, sender = "") {
  const services = new Set([sender, ...view.services.sms.map((s) => s.to)]);
  return [...new Set((text.match(CODE_RE) || []).filter((c) => !services.has(c) && /[A-Za-z]|^\d{4,8}$/.test(c)))];
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {  // no clipboard permission (plain http on another host): the old way
    const area = el("textarea", { class: "offscreen" }, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast(`Скопировано: ${text}`);
}

function copyButtons(text, sender) {
  const codes = codesIn(text || "", sender);
  if (!codes.length) return null;
  return el("div", { class: "copies" }, codes.map((code) =>
    el("button", { type: "button", class: "copy", "data-testid": "copy-code", "data-code": code,
                   title: `Скопировать ${code}`, onclick: () => copyText(code) }, el("code", {}, code), " копировать")));
}

// ---- fates, in words ---------------------------------------------------------------------------
const REASONS = {
  unknown_number: "номер не существует",
  absent: "абонент недоступен (телефон выключен или в режиме полёта)",
  expired: "истёк срок доставки: телефон не включился",
  inbox_full: "память SMS переполнена",
  anti_spam: "отклонено антиспамом на телефоне",
  incomplete: "не пришли все части длинного сообщения",
  undecodable: "не удалось прочитать текст",
};

function mtState(entry) {
  switch (entry.state) {
    case "DELIVERED":
      return { cls: "ok", text: "✓ доставлено" };
    case "ENROUTE":
      return entry.held_until
        ? { cls: "wait", text: `◷ ожидает: ${entry.reason_text || REASONS.absent} · до ${hhmmss(entry.held_until)}` }
        : { cls: "wait", text: "в пути" };
    case "EXPIRED":
      return { cls: "bad", text: `✗ не доставлено: ${entry.reason_text || "истёк срок"}` };
    default:
      return { cls: "bad", text: `✗ не доставлено: ${entry.reason_text || entry.state}` };
  }
}

// What happened to an MT besides its state: how long the network held it, the platform's receipt.
function mtHistory(entry) {
  const lines = [];
  if (entry.held_since) {
    lines.push(`сеть держала с ${hhmmss(entry.held_since)}`
      + (entry.done_at ? `, ${entry.state === "DELIVERED" ? "доставлено" : "итог"} в ${hhmmss(entry.done_at)}`
        + ` (ждало ${duration(entry.done_at - entry.held_since)})` : ""));
  } else if (entry.done_at && entry.state !== "DELIVERED") {
    lines.push(`итог в ${hhmmss(entry.done_at)}`);
  }
  if (entry.error) lines.push(`ошибка доставки ${entry.error}`);
  if (entry.receipt === "recorded") lines.push(`квитанция ${entry.state}: платформа записала (${hhmmss(entry.receipt_at)})`);
  else if (entry.receipt === "sent") lines.push("квитанция отправлена платформе…");
  else if (entry.receipt === "refused") lines.push(`квитанцию платформа отклонила (0x${(entry.receipt_status ?? 0).toString(16)})`);
  return lines.join(" · ");
}

function moState(entry) {
  if (entry.delivery) {  // to another subscriber: the network delivers it phone to phone
    if (entry.delivery === "DELIVERED") return { cls: "ok", text: "✓ доставлено абоненту" };
    if (entry.delivery === "ENROUTE") {
      return { cls: "wait", text: `◷ ждёт доставки${entry.reason ? `: ${REASONS[entry.reason] || entry.reason}` : ""}` };
    }
    return { cls: "bad", text: `✗ не доставлено абоненту: ${REASONS[entry.reason] || entry.delivery}` };
  }
  if (entry.state === "accepted") return { cls: "ok", text: "✓ принято сетью" };
  if (entry.state === "rejected") return { cls: "bad", text: `✗ отклонено (0x${(entry.status ?? 0).toString(16)})` };
  return { cls: "wait", text: "отправляется…" };
}

const shown = (number) => (/^\d{10,15}$/.test(number) ? `+${number}` : number);

// ---- rendering ---------------------------------------------------------------------------------
function renderPhone() {
  const p = view.phone;
  $("#sb-number").textContent = view.msisdn ? `+${view.msisdn}` : "—";
  const net = $("#sb-network");
  const offline = p.power !== "on" || p.unknown_number;
  net.classList.toggle("off", offline);
  net.textContent = p.power === "off" ? "выключен" : p.power === "airplane" ? "✈ режим полёта"
    : p.unknown_number ? "✗ неверный номер" : "▂▄▆█ ussdgw";
  $("#offline-note").hidden = !offline || !view.msisdn || p.power === undefined;
  for (const radio of document.querySelectorAll('input[name="power"]')) radio.checked = radio.value === p.power;
  $("#f-inbox-full").checked = !!p.inbox_full;
  $("#f-unknown").checked = !!p.unknown_number;
  const blocked = $("#blocked");
  blocked.replaceChildren(...(p.blocked_senders || []).map((code) =>
    el("button", { class: "chip", type: "button", title: "Снять блокировку", "data-testid": "blocked-chip",
                   onclick: () => patch({ blocked_senders: p.blocked_senders.filter((c) => c !== code) }) },
       code, el("span", { class: "x" }, "×"))));
  if (!p.blocked_senders || !p.blocked_senders.length) blocked.append(el("small", {}, "никого"));
}

function renderThread() {
  const items = [];
  for (const mt of view.network.values()) if (mt.kind === "sms") items.push({ at: mt.submitted_at, mt });
  for (const mo of view.outbox.values()) if (mo.kind === "sms") items.push({ at: mo.at, mo });
  const newestFirst = $("#newest-first").checked;
  items.sort((a, b) => (newestFirst ? b.at - a.at : a.at - b.at));  // a phone's order: newest at the bottom
  const thread = $("#thread");
  thread.classList.toggle("newest-first", newestFirst);
  if (!items.length) {
    thread.replaceChildren(el("li", { class: "empty" }, "Сообщений пока нет. Напишите на сервисный номер, например ПАРОЛЬ на 3339."));
    return;
  }
  thread.replaceChildren(...items.map(({ mt, mo }) => {
    if (mo) {
      const s = moState(mo);
      return el("li", { class: "out", "data-testid": "sms-out", "data-state": mo.state, "data-delivery": mo.delivery || null,
                        "data-to": mo.to },
        el("div", { class: "meta" }, el("span", {}, "Кому: ", el("b", {}, shown(mo.to))), el("span", {}, hhmmss(mo.at))),
        el("div", { class: "body" }, mo.text || "(пустое сообщение)"),
        el("div", { class: `state ${s.cls}`, "data-testid": "mo-state" }, s.text));
    }
    const s = mtState(mt);
    const history = mtHistory(mt);
    const cls = mt.state === "DELIVERED" ? "in" : mt.state === "ENROUTE" ? "held" : "lost";
    return el("li", { class: cls, "data-testid": "sms-in", "data-state": mt.state, "data-sender": mt.sender },
      el("div", { class: "meta" }, el("span", {}, "От: ", el("b", {}, shown(mt.sender))),
         el("span", {}, hhmmss(mt.submitted_at), mt.parts > 1 ? ` · ${mt.parts} части` : "")),
      el("div", { class: "body" }, mt.text),
      mt.state === "DELIVERED" ? copyButtons(mt.text, mt.sender) : null,
      el("div", { class: `state ${s.cls}`, "data-testid": "mt-state" }, s.text),
      history ? el("div", { class: "history", "data-testid": "mt-history" }, history) : null);
  }));
  if (!newestFirst) {
    const body = thread.closest(".tab-body");
    body.scrollTop = body.scrollHeight;
  }
}

const matches = (...texts) => !view.filter || texts.some((t) => String(t ?? "").toLowerCase().includes(view.filter));

function renderNetwork() {
  const rows = [...view.network.values()].sort((a, b) => b.submitted_at - a.submitted_at)
    .filter((mt) => matches(mt.sender, mt.text, mt.state, mt.kind, mt.reason_text, mt.message_id));
  const body = $("#network");
  if (!rows.length) {
    const empty = view.network.size ? "Ничего не подходит под фильтр" : "Сеть ещё ничего не отправляла на этот номер";
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 5 }, empty)));
    return;
  }
  body.replaceChildren(...rows.map((mt) => {
    const s = mtState(mt);
    const history = mtHistory(mt);
    return el("tr", { "data-state": mt.state },
      el("td", { "data-label": "Время" }, hhmmss(mt.submitted_at)),
      el("td", { "data-label": "От" }, shown(mt.sender)),
      el("td", { "data-label": "Тип" }, mt.kind === "ussd" ? "USSD" : mt.parts > 1 ? `SMS ×${mt.parts}` : "SMS"),
      el("td", { class: `state ${s.cls}`, "data-label": "Состояние", "data-testid": "network-state" }, s.text,
         history ? el("div", { class: "history" }, history) : null),
      el("td", { class: "text", title: mt.text, "data-label": "Текст" }, mt.text));
  }));
}

function pduHeadline(p) {
  const bits = [];
  if (p.from) bits.push(`${shown(p.from)} → ${shown(p.to)}`);
  if (p.ussd_service_op !== undefined && p.ussd_service_op !== null) {
    bits.push(`ussd_service_op=${p.ussd_service_op}${p.ussd_op_name ? ` ${p.ussd_op_name}` : ""}`);
  }
  if (p.session) {
    bits.push(`сеанс ${p.session.number} №${p.session.sequence}${p.session.end ? " · конец сеанса (end bit)" : ""}`);
  }
  if (p.part) bits.push(`часть ${p.part.seq}/${p.part.total} (${p.part.by}, ref ${p.part.ref})`);
  if (p.receipt) {
    bits.push(`${p.receipt.intermediate ? "уведомление" : "квитанция"} ${p.receipt.state}`
      + `${p.receipt.error ? ` err:${p.receipt.error}` : ""} на ${p.receipt.message_id}`);
  }
  if (p.message_id) bits.push(`id=${p.message_id}`);
  bits.push(`dcs=${p.data_coding}`);
  if (p.esm_class) bits.push(`esm=0x${p.esm_class.toString(16)}`);
  if (p.attempt > 1) bits.push(`попытка ${p.attempt}`);
  return bits.join(" · ");
}

function renderPdus() {
  const list = $("#pdus");
  const entries = view.pdus.slice(-200).reverse().filter((p) => matches(
    p.command, p.from, p.to, p.status_name, p.message_id, p.ussd_op_name, p.receipt?.state, p.fields?.text));
  if (!entries.length) {
    list.replaceChildren(el("li", { class: "empty" },
      view.pdus.length ? "Ничего не подходит под фильтр" : "PDU по этому номеру ещё не было"));
    return;
  }
  list.replaceChildren(...entries.map((p) => {
    const inbound = p.direction === "smsc->gateway";
    const status = p.status === undefined ? null
      : el("span", { class: `st ${p.status ? "bad" : "ok"}`, "data-testid": "pdu-status" }, `resp ${p.status_name || p.status}`);
    const fields = Object.entries(p.fields || {}).map(([name, value]) =>
      [el("dt", {}, name), el("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value))]);
    return el("li", { "data-testid": "pdu", "data-command": p.command },
      el("details", {},
        el("summary", {},
          el("span", { class: "t" }, hhmmss(p.at)),
          el("span", { class: "seq" }, `#${p.sequence}`),
          el("span", { class: `dir ${inbound ? "in" : "out"}` }, inbound ? "SMSC → шлюз" : "шлюз → SMSC"),
          el("span", { class: "cmd" }, p.command),
          el("span", { class: "what" }, pduHeadline(p)),
          status),
        el("dl", { class: "fields", "data-testid": "pdu-fields" }, fields.flat(),
           el("dt", {}, "command_status"), el("dd", {}, `${p.status_name || ""} (0x${(p.status ?? 0).toString(16).padStart(8, "0")})`),
           el("dt", {}, "sequence_number"), el("dd", {}, String(p.sequence)))));
  }));
}

function ussdProblem(code) {
  if (!code) return "Наберите USSD-код, например *100#.";
  if (/^\+?[0-9]+$/.test(code)) return "Голосовые вызовы симулятор не умеет: наберите USSD-код, например *100#.";
  if (code.length > MAX_USSD) return `USSD-запрос длиннее ${MAX_USSD} символов (набрано ${numbers.format(code.length)}): такой сеть не примет.`;
  if (/[^0-9*#+]/.test(code)) return "В USSD-запросе бывают только цифры, * и #.";
  if (!/^[*#]/.test(code)) return "USSD-запрос начинается с * или #, например *100#.";
  if (!code.endsWith("#")) return "USSD-запрос заканчивается на #, например *100#.";
  const service = /^[*#]{1,2}(\d*)/.exec(code)[1];
  if (!service) return "После * нужен код услуги: от 1 до 4 цифр, например *100#.";
  if (service.length > 4) {
    return `Код услуги — от 1 до 4 цифр, а набрано ${numbers.format(service.length)}: такой запрос сеть не примет.`;
  }
  if (USSD_RE.test(code)) return "";
  if (code.slice(1, -1).split("*").some((part) => part.replace("+", "").length > 20)) {
    return "Часть запроса между * — не больше 20 цифр.";
  }
  return CODE_TEXTS.malformed_ussd;
}

function renderUssd() {
  const d = view.ussd;
  const overlay = $("#ussd");
  const visible = d.state === "sent" || d.state === "waiting" || d.state === "closed";
  overlay.hidden = !visible;
  if (!visible) return;
  const last = (d.history || []).at(-1);
  const dialled = (d.history || []).find((h) => h.from === "phone" && typeof h.op === "number");
  $("#ussd-title").textContent = dialled ? dialled.text : d.service || "";
  const spinner = $("#ussd-spinner");
  spinner.hidden = d.state !== "sent";
  $("#ussd-text").textContent = d.state === "sent" ? "" : d.text;
  overlay.dataset.state = d.state;
  overlay.dataset.reason = last && typeof last.op === "string" ? last.op : "";  // timeout, refused, abort
  const answer = $("#ussd-answer");
  answer.hidden = d.state !== "waiting";
  $("#ussd-send").hidden = d.state !== "waiting";
  $("#ussd-cancel").textContent = d.state === "closed" ? "OK" : "Отмена";
  if (d.state === "waiting") { answer.value = ""; answer.focus(); }
  tickUssd();
}

// How long the phone will still wait for the network (the dialogue's deadline, simulator time).
function tickUssd() {
  const d = view.ussd;
  const waitNode = $("#ussd-wait");
  if ((d.state === "sent" || d.state === "waiting") && d.deadline) {
    const left = Math.max(0, d.deadline - simNow());
    waitNode.textContent = d.state === "sent"
      ? `Сеть отвечает… телефон ждёт ещё ${duration(left)}, потом прервёт запрос.`
      : `Сеанс закроется через ${duration(left)} без ответа.`;
  } else {
    waitNode.textContent = "";
  }
}

// The POST that dialled and the event stream both report the dialogue: the newest version wins.
function setUssd(dialogue) {
  if (view.ussd.version !== undefined && dialogue.version < view.ussd.version) return;
  view.ussd = dialogue;
  renderUssd();
  expectUssd(dialogue);
  refreshSubscriberSoon();
}

function renderUnread() {
  const badge = $("#unread");
  badge.hidden = view.unread === 0;
  badge.textContent = view.unread;
}

function renderClock() {
  $("#clock-offset").textContent = view.clockOffset ? `+${duration(view.clockOffset)}` : "сейчас";
  const d = new Date(simNow() * 1000);
  $("#sb-clock").textContent = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  $("#sb-clock").title = `Время симулятора: ${d.toLocaleString("ru-RU")}`;
}

function renderAll() {
  renderPhone(); renderThread(); renderNetwork(); renderPdus(); renderUssd(); renderUnread(); renderClock();
}

// ---- recording what was done, as a scenario -----------------------------------------------------
// A step is recorded before its request goes out: what the network answers (an event that may come
// before the request's own response) is recorded after it. A refused request takes its step back.
function record(step) { view.recorded.push(step); return step; }
function unrecord(step) {
  const at = view.recorded.lastIndexOf(step);
  if (at >= 0) view.recorded.splice(at, 1);
}

function pattern(text) {
  // The runner reads a non-breaking space as a space (simulator.scenario._matches).
  const line = (text || "").split("\n")[0].slice(0, 60).replace(/\u00a0/g, " ");
  let out = line.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  for (const code of codesIn(line)) out = out.replace(code, "[A-Za-z0-9]+");  // a password differs each run
  return out;
}

function expectSms(mt) {
  if (mt.kind !== "sms" || !["DELIVERED", "EXPIRED", "UNDELIVERABLE"].includes(mt.state)) return;
  if (view.expected.has(mt.message_id)) return;
  view.expected.add(mt.message_id);
  const want = { from: mt.sender, text: pattern(mt.text), state: mt.state };
  if (mt.reason && mt.state !== "DELIVERED") want.reason = mt.reason;
  record({ expect: { sms: want, within: 10 } });
}

function expectUssd(d) {
  if (!view.recorded.length || (d.state !== "waiting" && d.state !== "closed") || d.version <= view.ussdSeen) return;
  view.ussdSeen = d.version;
  if (!d.text) return;
  record({ expect: { ussd: { text: pattern(d.text), state: d.state } } });
}

function scenarioYaml() {
  const stamp = new Date(simNow() * 1000).toLocaleString("ru-RU");
  const q = (value) => JSON.stringify(value);  // JSON is YAML: flow mappings, double-quoted strings
  return [
    `# Записано в веб-телефоне симулятора ussdgw ${stamp}. Запуск: ussdgw scenario ${view.msisdn}.yaml`,
    `name: ${q(`Веб-телефон +${view.msisdn}: записано ${stamp}`)}`,
    `phone: ${q(view.msisdn)}`,
    "steps:",
    ...view.recorded.map((step) => `  - ${q(step)}`),
    "",
  ].join("\n");
}

function saveScenario() {
  if (!view.recorded.length) {
    toast("Пока нечего сохранить: отправьте SMS, наберите USSD-код или смените состояние телефона.", true);
    return;
  }
  const link = el("a", { href: URL.createObjectURL(new Blob([scenarioYaml()], { type: "application/yaml" })),
                         download: `scenario-${view.msisdn}.yaml` });
  document.body.append(link);
  link.click();
  link.remove();
  toast(`Сценарий сохранён: шагов ${view.recorded.length}`);
}

// ---- the event stream --------------------------------------------------------------------------
async function connect(msisdn) {
  try { await api("POST", "/api/phones", { msisdn }); } catch (e) { toast(russian(e), true); return; }  // looks make no phone
  if (view.source) view.source.close();
  Object.assign(view, { msisdn, phone: {}, inbox: [], network: new Map(), outbox: new Map(), ussd: { state: "idle" },
                        pdus: [], unread: 0, recorded: [], expected: new Set(), ussdSeen: -1 });
  $("#msisdn").value = msisdn;
  localStorage.setItem("ussdgw.phone", msisdn);
  if (location.hash.slice(1) !== msisdn) history.replaceState(null, "", `${location.search}#${msisdn}`);
  document.title = `+${msisdn} · ussdgw`;
  renderAll();
  const source = new EventSource(`/api/phones/${msisdn}/events`);
  view.source = source;
  const on = (kind, handler) => source.addEventListener(kind, (event) => {
    if (view.source === source) handler(JSON.parse(event.data));
  });
  on("snapshot", (s) => {
    view.phone = s.phone;
    view.inbox = s.inbox;
    view.network = new Map(s.network.map((e) => [e.message_id, e]));
    for (const id of view.network.keys()) view.expected.add(id);  // what happened before this page is no step of its
    view.outbox = new Map(s.outbox.map((e) => [e.id, e]));
    view.ussd = s.ussd;
    view.ussdSeen = Math.max(view.ussdSeen, s.ussd.version ?? -1);
    view.pdus = s.pdus;
    view.clockOffset = s.clock_offset;
    renderAll();
    document.body.dataset.ready = msisdn;
  });
  on("phone", (p) => { view.phone = p; renderPhone(); });
  on("inbox", (m) => {
    view.inbox.push(m);
    if (m.kind === "sms" && view.tab !== "sms") { view.unread += 1; renderUnread(); }
  });
  on("network", (e) => {
    view.network.set(e.message_id, e);
    expectSms(e);
    renderThread(); renderNetwork();
    refreshSubscriberSoon();
  });
  on("outbox", (e) => { view.outbox.set(e.id, e); renderThread(); });
  on("ussd", setUssd);
  on("pdu", (p) => { view.pdus.push(p); if (view.pdus.length > 400) view.pdus.splice(0, 200); renderPdus(); });
  on("clock", (c) => { view.clockOffset = c.offset; renderClock(); renderUssd(); });
  source.onopen = () => linkState(true);
  source.onerror = () => linkState(false);
  refreshKnownPhones();
  refreshSubscriber();
}

function linkState(up) {
  $("#link-state").classList.toggle("up", up);
  $("#link-state .label").textContent = up ? "на связи" : "нет связи с симулятором, переподключение…";
}

async function refreshKnownPhones() {
  try {
    const { phones } = await api("GET", "/api/phones");
    $("#known-phones").replaceChildren(...phones.map((p) => el("option", { value: p.msisdn })));
  } catch { /* the list is a convenience */ }
}

async function loadServices() {
  try { view.services = await api("GET", "/api/services"); } catch { /* shortcuts only */ }
  const services = view.services;
  const ussd = services.ussd.length ? services.ussd : [{ code: "*100#", description: "баланс" }];
  $("#ussd-chips").replaceChildren(...ussd.map((s) =>
    el("button", { class: "chip", type: "button", title: s.description, onclick: () => { $("#dial-number").value = s.code; } },
       el("b", {}, s.code), " ", s.description.split(" - ").pop())));
  $("#sms-chips").replaceChildren(...services.sms.map((s) =>
    el("button", { class: "chip", type: "button", title: s.description,
                   onclick: () => { $("#sms-to").value = s.to; $("#sms-text").value = s.keyword; updateCounter(); } },
       el("b", {}, s.keyword || s.description.split(" - ")[0]), ` → ${s.to}`)));
}

// ---- the subscriber on the platform (self-care API, when the simulator knows it) -----------------
async function refreshSubscriber() {
  const panel = $("#subscriber-panel");
  panel.hidden = !view.selfcare;
  if (!view.selfcare || !view.msisdn) return;
  const box = $("#subscriber");
  try {
    const { data } = await api("GET", `/api/phones/${view.msisdn}/subscriber`);
    const services = data.services.length ? data.services.join(", ") : "нет";
    const n2 = data.joined?.length ? `объединён с ${data.joined.map(shown).join(", ")}` : { off: "нет", active: "подключена" }[data.n2_state] || data.n2_state;
    const rows = [
      ["Баланс", rubles(data.balance_kop), "subscriber-balance"],
      ["Тариф", data.tariff_name || data.tariff, "subscriber-tariff"],
      ["Услуги", services, "subscriber-services"],
      ["Объединение номеров (N2)", n2, "subscriber-n2"],
      ["Номер", data.state === "blocked" ? `заблокирован${data.blocked_from ? ` с ${hhmmss(data.blocked_from)}` : ""}` : "активен", "subscriber-block"],
      ["Бонусы", numbers.format(data.bonus_points || 0), null],
      ["E-mail", data.email || "не указан", null],
    ];
    box.replaceChildren(el("dl", {}, rows.map(([name, value, id]) => [el("dt", {}, name), el("dd", { "data-testid": id }, value)])));
  } catch (e) {
    box.replaceChildren(el("p", { class: "field-error", "data-testid": "subscriber-error" },
      e instanceof ApiError && e.code === "selfcare" ? e.message : russian(e)));
  }
}

function refreshSubscriberSoon() {
  if (!view.selfcare) return;
  clearTimeout(refreshSubscriberSoon.timer);
  refreshSubscriberSoon.timer = setTimeout(refreshSubscriber, 300);
}

// ---- the e-mail sink's mailboxes ----------------------------------------------------------------
async function refreshMail() {
  if (!$("#mail-panel").open) return;
  let boxes = [];
  try { ({ mailboxes: boxes } = await api("GET", "/api/mail")); } catch { return; }
  if (!view.mailbox && boxes.length) view.mailbox = boxes[0].address;
  const chips = $("#mailboxes");
  chips.replaceChildren(...boxes.map((b) => el("button", {
    type: "button", class: `chip${b.address === view.mailbox ? " active" : ""}`, "data-testid": "mailbox",
    onclick: () => { view.mailbox = b.address; refreshMail(); },
  }, b.address, " ", el("small", {}, `(${b.count}${b.state !== "ok" ? `, ${b.state === "full" ? "переполнен" : "нет такого"}` : ""})`))));
  if (!boxes.length) chips.append(el("small", {}, "Писем ещё не было: платформа шлёт их, например, с детализацией звонков."));
  if (!view.mailbox) { $("#letters").replaceChildren(); return; }
  try {
    const box = await api("GET", `/api/mail/${encodeURIComponent(view.mailbox)}`);
    $("#letters").replaceChildren(...box.messages.slice().reverse().map((m) => el("li", { "data-testid": "letter" },
      el("div", { class: "meta" }, el("b", {}, m.subject || "(без темы)"), el("span", {}, `от ${m.sender} · ${hhmmss(m.received_at)}`)),
      el("pre", {}, m.body),
      copyButtons(m.body),
      m.attachments.length ? el("small", {}, `вложения: ${m.attachments.map((a) => a.filename || a.content_type).join(", ")}`) : null)));
  } catch (e) { toast(russian(e), true); }
}

// ---- actions -----------------------------------------------------------------------------------
async function patch(body) {
  const step = record({ set_phone: body });
  try {
    view.phone = await api("PATCH", `/api/phones/${view.msisdn}`, body);
    renderPhone();
    fieldError("block-error", "");
  } catch (e) { unrecord(step); fieldError("block-error", russian(e)); }
}

async function dial() {
  const input = $("#dial-number");
  const code = input.value.trim();
  const problem = ussdProblem(code);
  fieldError("dial-error", problem, input);
  if (problem) return;  // never sent: the network would refuse it, and the popup must not wait for it
  const step = record({ dial: code });
  try {
    setUssd(await api("POST", `/api/phones/${view.msisdn}/ussd/dial`, { code }));
  } catch (e) { unrecord(step); fieldError("dial-error", russian(e, { code }), input); }
}

async function ussdAnswer(event) {
  event.preventDefault();
  const text = $("#ussd-answer").value.trim();
  if (!text) return;
  const step = record({ answer: text });
  try {
    setUssd(await api("POST", `/api/phones/${view.msisdn}/ussd/answer`, { text }));
  } catch (e) { unrecord(step); toast(russian(e), true); }
}

async function ussdCancel() {
  const open = view.ussd.state === "sent" || view.ussd.state === "waiting";
  const step = open ? record({ cancel: null }) : null;
  try {
    setUssd(await api("POST", `/api/phones/${view.msisdn}/ussd/cancel`));
  } catch (e) { unrecord(step); toast(russian(e), true); }
}

// Where an SMS goes, as the simulator reads it (simulator.handset.recipient_of).
function recipientOf(to) {
  const raw = to.replace(/[\s()-]/g, "");
  if (/^\+\d{10,15}$/.test(raw)) return raw.slice(1);
  if (/^8\d{10}$/.test(raw)) return `7${raw.slice(1)}`;
  if (/^9\d{9}$/.test(raw)) return `7${raw}`;
  if (/^\d{1,8}$/.test(raw) || /^\d{10,15}$/.test(raw)) return raw;
  return null;
}

function smsProblem(to, text) {
  if (!to) return "Кому: укажите номер, например 3339.";
  const number = recipientOf(to);
  if (number === null) return RECIPIENT_HELP;
  if (number === view.msisdn) return CODE_TEXTS.own_number;
  if ([...text].length > MAX_SMS_CHARS) return counterOf(text).warning;
  return "";
}

async function sendSms(event) {
  event.preventDefault();
  const toInput = $("#sms-to");
  const to = toInput.value.trim();
  const text = $("#sms-text").value;
  const problem = smsProblem(to, text);
  fieldError("sms-error", problem, problem && problem !== counterOf(text).warning ? toInput : null);
  if (problem) return;
  const number = recipientOf(to);
  const step = record({ sms: { to: number, text } });
  try {
    await api("POST", `/api/phones/${view.msisdn}/sms`, { to: number, text });
    $("#sms-text").value = "";
    updateCounter();
  } catch (e) { unrecord(step); fieldError("sms-error", russian(e), e.field === "to" ? toInput : null); }
}

// ---- the SMS counter (TS 23.038: extension characters take two septets) --------------------------
const GSM_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENSION = "\f^{}\\[~]|€";

function counterOf(text) {
  const chars = [...text];
  const gsm = chars.every((c) => GSM_BASIC.includes(c) || GSM_EXTENSION.includes(c));
  // Units per character: septets in GSM 7-bit, octets in UCS2 (a surrogate pair is 4).
  const units = chars.map((c) => (gsm ? (GSM_EXTENSION.includes(c) ? 2 : 1) : c.length * 2));
  const total = units.reduce((a, b) => a + b, 0);
  const single = gsm ? 160 : 140;
  const capacity = gsm ? 153 : 134;
  let parts = 1;
  if (total > single) {  // as the simulator splits: a character never cut across parts
    let used = 0;
    for (const u of units) {
      if (used + u > capacity) { parts += 1; used = 0; }
      used += u;
    }
  }
  const size = gsm ? `${numbers.format(total)} септет.` : `${numbers.format(chars.length)} симв.`;
  const tooLong = chars.length > MAX_SMS_CHARS;
  return {
    gsm, parts, chars: chars.length, tooLong,
    text: `${numbers.format(chars.length)} симв. · ${gsm ? size : ""}${gsm ? " · " : ""}${numbers.format(parts)} SMS · ${gsm ? "GSM 7-бит" : "UCS2"}`
      .replace(" ·  · ", " · "),
    warning: tooLong ? `Слишком длинное сообщение: ${numbers.format(chars.length)} символов, можно не больше `
      + `${numbers.format(MAX_SMS_CHARS)} (длинное SMS собирается из частей, но у сети есть предел).` : "",
  };
}

function updateCounter() {
  const text = $("#sms-text").value;
  const counter = $("#sms-counter");
  if (!text) { counter.textContent = ""; counter.classList.remove("bad"); return; }
  const c = counterOf(text);
  counter.textContent = c.tooLong ? `${c.text} — ${c.warning}` : c.text;
  counter.classList.toggle("bad", c.tooLong);
}

function selectTab(tab) {
  view.tab = tab;
  for (const button of document.querySelectorAll(".tabs button")) button.classList.toggle("active", button.dataset.tab === tab);
  for (const body of document.querySelectorAll(".tab-body")) body.hidden = body.dataset.tabBody !== tab;
  if (tab === "sms") { view.unread = 0; renderUnread(); renderThread(); }
}

function pickedNumber() {
  const raw = $("#msisdn").value.trim().replace(/[\s()-]/g, "");
  const msisdn = raw.replace(/^\+/, "").replace(/^8(\d{10})$/, "7$1");
  return /^[0-9]{5,15}$/.test(msisdn) ? msisdn : null;
}

function wire() {
  $("#pick").addEventListener("submit", (event) => {
    event.preventDefault();
    const msisdn = pickedNumber();
    fieldError("msisdn-error", msisdn ? "" : FIELD_TEXTS.msisdn, $("#msisdn"));
    if (msisdn) connect(msisdn);
  });
  $("#side-by-side").addEventListener("click", () => {
    const other = pickedNumber();
    const second = other && other !== view.msisdn ? other : SECOND_PHONE === view.msisdn ? DEFAULT_PHONE : SECOND_PHONE;
    location.href = `/?phones=${view.msisdn},${second}`;
  });
  for (const button of document.querySelectorAll(".tabs button")) button.addEventListener("click", () => selectTab(button.dataset.tab));
  $("#keypad").addEventListener("click", (event) => {
    const key = event.target.closest("button")?.dataset.key;
    if (key) $("#dial-number").value += key;
  });
  $("#backspace").addEventListener("click", () => { $("#dial-number").value = $("#dial-number").value.slice(0, -1); });
  $("#call").addEventListener("click", dial);
  $("#dial-number").addEventListener("keydown", (event) => { if (event.key === "Enter") dial(); });
  $("#dial-number").addEventListener("input", () => fieldError("dial-error", "", $("#dial-number")));
  $("#ussd-form").addEventListener("submit", ussdAnswer);
  $("#ussd-cancel").addEventListener("click", ussdCancel);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !$("#ussd").hidden) ussdCancel(); });
  $("#compose").addEventListener("submit", sendSms);
  $("#sms-text").addEventListener("input", () => { updateCounter(); fieldError("sms-error", ""); });
  $("#sms-to").addEventListener("input", () => fieldError("sms-error", "", $("#sms-to")));
  $("#sms-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) sendSms(event);
  });
  $("#newest-first").checked = localStorage.getItem("ussdgw.newestFirst") === "1";
  $("#newest-first").addEventListener("change", (event) => {
    localStorage.setItem("ussdgw.newestFirst", event.target.checked ? "1" : "0");
    renderThread();
  });
  for (const radio of document.querySelectorAll('input[name="power"]')) {
    radio.addEventListener("change", () => patch({ power: radio.value }));
  }
  $("#f-inbox-full").addEventListener("change", (event) => patch({ inbox_full: event.target.checked }));
  $("#f-unknown").addEventListener("change", (event) => patch({ unknown_number: event.target.checked }));
  $("#block-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#block-code");
    const code = input.value.trim();
    if (!/^\+?[0-9]{1,20}$/.test(code)) {
      fieldError("block-error", code ? FIELD_TEXTS.blocked_senders : "Укажите номер, который блокировать, например 3339.", input);
      return;
    }
    fieldError("block-error", "", input);
    patch({ blocked_senders: [...new Set([...(view.phone.blocked_senders || []), code])] });
    input.value = "";
  });
  for (const button of document.querySelectorAll("[data-advance]")) {
    button.addEventListener("click", async () => {
      const seconds = Number(button.dataset.advance);
      const step = record({ advance_time: `${seconds}s` });
      try {
        const result = await api("POST", "/api/clock/advance", { seconds });
        view.clockOffset = result.offset;
        renderClock();
        toast(`Время симулятора: +${duration(result.offset)}` + (result.expired ? `, истёк срок у ${result.expired} MT` : ""));
      } catch (e) { unrecord(step); toast(russian(e), true); }
    });
  }
  $("#clock-reset").addEventListener("click", async () => {
    try {
      const result = await api("POST", "/api/clock/reset");
      view.clockOffset = result.offset;
      renderClock();
      toast("Время симулятора снова настоящее");
    } catch (e) { toast(russian(e), true); }
  });
  $("#log-filter").addEventListener("input", (event) => {
    view.filter = event.target.value.trim().toLowerCase();
    renderNetwork(); renderPdus();
  });
  $("#save-scenario").addEventListener("click", saveScenario);
  $("#subscriber-refresh").addEventListener("click", refreshSubscriber);
  $("#mail-panel").addEventListener("toggle", refreshMail);
  setInterval(() => { renderClock(); tickUssd(); }, 1000);
  setInterval(refreshMail, 3000);
  window.addEventListener("hashchange", () => {
    const msisdn = location.hash.slice(1);
    if (/^[0-9]{5,15}$/.test(msisdn) && msisdn !== view.msisdn) connect(msisdn);
  });
}

// ---- several phones side by side: each one this page, in a frame ----------------------------------
function sideBySide(list) {
  document.body.classList.add("multi");
  const phones = [...new Set(list.split(",").map((n) => n.trim().replace(/^\+/, "")).filter((n) => /^[0-9]{5,15}$/.test(n)))];
  const row = el("div", { class: "side-by-side", "data-testid": "phones-row" }, phones.slice(0, 4).map((msisdn) =>
    el("iframe", { src: `/?embed=1#${msisdn}`, title: `Телефон +${msisdn}`, "data-msisdn": msisdn })));
  const add = el("form", { class: "pick", novalidate: true },
    el("input", { placeholder: "ещё номер", inputmode: "tel", "aria-label": "Ещё телефон" }),
    el("button", { type: "submit" }, "Добавить"),
    el("a", { href: `/#${phones[0] || DEFAULT_PHONE}` }, "Один телефон"));
  add.addEventListener("submit", (event) => {
    event.preventDefault();
    const extra = add.querySelector("input").value.trim().replace(/^\+/, "");
    if (/^[0-9]{5,15}$/.test(extra)) location.search = `?phones=${[...phones, extra].join(",")}`;
  });
  document.body.replaceChildren(
    el("header", { class: "topbar" }, el("div", { class: "brand" }, el("span", { class: "logo" }), "ussdgw ", el("small", {}, "телефоны рядом")), add),
    row);
}

async function start() {
  if (PARAMS.has("phones")) { sideBySide(PARAMS.get("phones")); return; }
  if (PARAMS.get("embed") === "1") document.body.classList.add("embed");
  wire();
  try { view.selfcare = !!(await api("GET", "/api/health")).selfcare; } catch { /* the panel stays hidden */ }
  loadServices();
  refreshMail();
  const first = location.hash.slice(1);
  connect(/^[0-9]{5,15}$/.test(first) ? first : localStorage.getItem("ussdgw.phone") || DEFAULT_PHONE);
}

start();
