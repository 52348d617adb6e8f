// The web phone: one virtual handset of the SMSC simulator, live over server-sent events.
// Plain ES module, no build step. Everything it shows comes from /api/phones/{msisdn}/events.

const $ = (selector) => document.querySelector(selector);
const DEFAULT_PHONE = "79161234567";
const USSD_RE = /^[*#][0-9*#]*#$/;

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
  ussdTimer: null,
};

// ---- helpers ---------------------------------------------------------------------------------
async function api(method, path, body) {
  const changes = method !== "GET";  // the simulator takes changes as JSON only (no cross-site form posts)
  const response = await fetch(path, {
    method,
    headers: changes ? { "Content-Type": "application/json" } : {},
    body: changes ? JSON.stringify(body || {}) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function toast(text, bad = false) {
  const el = $("#toast");
  el.textContent = text;
  el.classList.toggle("bad", bad);
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3500);
}

const pad = (n) => String(n).padStart(2, "0");
function hhmmss(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} с`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} мин`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(seconds % 3600 ? 1 : 0)} ч`;
  return `${(seconds / 86400).toFixed(1)} сут`;
}

// ---- fates, in words -------------------------------------------------------------------------
function mtState(entry) {
  switch (entry.state) {
    case "DELIVERED":
      return { cls: "ok", text: "✓ доставлено" };
    case "ENROUTE":
      return entry.held_until
        ? { cls: "wait", text: `◷ ожидает: ${entry.reason_text || "абонент недоступен"} · до ${hhmmss(entry.held_until)}` }
        : { cls: "wait", text: "в пути" };
    case "EXPIRED":
      return { cls: "bad", text: `✗ не доставлено: ${entry.reason_text || "истёк срок"}` };
    default:
      return { cls: "bad", text: `✗ не доставлено: ${entry.reason_text || entry.state}` };
  }
}

function moState(entry) {
  if (entry.state === "accepted") return { cls: "ok", text: "✓ принято сетью" };
  if (entry.state === "rejected") return { cls: "bad", text: `✗ отклонено (0x${(entry.status ?? 0).toString(16)})` };
  return { cls: "wait", text: "отправляется…" };
}

// ---- rendering -------------------------------------------------------------------------------
function renderPhone() {
  const p = view.phone;
  $("#sb-number").textContent = view.msisdn ? `+${view.msisdn}` : "—";
  const net = $("#sb-network");
  const offline = p.power !== "on" || p.unknown_number;
  net.classList.toggle("off", offline);
  net.textContent = p.power === "off" ? "выключен" : p.power === "airplane" ? "✈ режим полёта"
    : p.unknown_number ? "нет в сети" : "▂▄▆█ ussdgw";
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
  items.sort((a, b) => b.at - a.at);
  const thread = $("#thread");
  if (!items.length) {
    thread.replaceChildren(el("li", { class: "empty" }, "Сообщений пока нет. Напишите на сервисный номер, например ПАРОЛЬ на 3339."));
    return;
  }
  thread.replaceChildren(...items.map(({ mt, mo }) => {
    if (mo) {
      const s = moState(mo);
      return el("li", { class: "out", "data-testid": "sms-out", "data-state": mo.state },
        el("div", { class: "meta" }, el("span", {}, "Кому: ", el("b", {}, mo.to)), el("span", {}, hhmmss(mo.at))),
        el("div", { class: "body" }, mo.text || "(пустое сообщение)"),
        el("div", { class: `state ${s.cls}` }, s.text));
    }
    const s = mtState(mt);
    const cls = mt.state === "DELIVERED" ? "in" : mt.state === "ENROUTE" ? "held" : "lost";
    return el("li", { class: cls, "data-testid": "sms-in", "data-state": mt.state, "data-sender": mt.sender },
      el("div", { class: "meta" }, el("span", {}, "От: ", el("b", {}, mt.sender)),
         el("span", {}, hhmmss(mt.submitted_at), mt.parts > 1 ? ` · ${mt.parts} части` : "")),
      el("div", { class: "body" }, mt.text),
      el("div", { class: `state ${s.cls}`, "data-testid": "mt-state" }, s.text));
  }));
}

function renderNetwork() {
  const rows = [...view.network.values()].sort((a, b) => b.submitted_at - a.submitted_at);
  const body = $("#network");
  if (!rows.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 5 }, "Сеть ещё ничего не отправляла на этот номер")));
    return;
  }
  body.replaceChildren(...rows.map((mt) => {
    const s = mtState(mt);
    return el("tr", { "data-state": mt.state },
      el("td", {}, hhmmss(mt.submitted_at)),
      el("td", {}, mt.sender),
      el("td", {}, mt.kind === "ussd" ? "USSD" : mt.parts > 1 ? `SMS ×${mt.parts}` : "SMS"),
      el("td", { class: `state ${s.cls}` }, s.text, mt.error ? ` (err ${mt.error})` : ""),
      el("td", { class: "text", title: mt.text }, mt.text));
  }));
}

const OPS = { 0: "PSSD", 1: "PSSR", 2: "USSR", 3: "USSN", 16: "PSSD resp", 17: "PSSR resp", 18: "USSR conf", 19: "USSN conf" };

function renderPdus() {
  const list = $("#pdus");
  if (!view.pdus.length) {
    list.replaceChildren(el("li", { class: "empty" }, "PDU по этому номеру ещё не было"));
    return;
  }
  list.replaceChildren(...view.pdus.slice(-200).reverse().map((p) => {
    const inbound = p.direction === "smsc->gateway";
    const details = [];
    if (p.from) details.push(`from=${p.from}`);
    if (p.to) details.push(`to=${p.to}`);
    if (p.receipt) details.push("receipt");
    if (p.ussd_service_op !== null && p.ussd_service_op !== undefined) {
      details.push(`ussd_service_op=${p.ussd_service_op} ${OPS[p.ussd_service_op] || ""}`.trim());
    }
    if (p.data_coding !== undefined) details.push(`dcs=${p.data_coding}`);
    if (p.esm_class) details.push(`esm=0x${p.esm_class.toString(16)}`);
    if (p.message_id) details.push(`id=${p.message_id}`);
    const status = p.status === undefined ? null
      : el("span", { class: `st ${p.status ? "bad" : ""}` }, p.status ? `resp 0x${p.status.toString(16)}` : "resp OK");
    return el("li", {},
      el("span", { class: "t" }, hhmmss(p.at)),
      el("span", { class: `dir ${inbound ? "in" : "out"}` }, inbound ? "SMSC → шлюз" : "шлюз → SMSC"),
      el("span", { class: "cmd" }, p.command),
      el("span", {}, details.join(" ")),
      status);
  }));
}

function renderUssd() {
  const d = view.ussd;
  const overlay = $("#ussd");
  const visible = d.state === "sent" || d.state === "waiting" || d.state === "closed";
  overlay.hidden = !visible;
  clearTimeout(view.ussdTimer);
  if (!visible) return;
  const spinner = $("#ussd-spinner");
  spinner.hidden = d.state !== "sent";
  spinner.lastChild.textContent = "Выполняется USSD-запрос…";
  if (d.state === "sent") {
    view.ussdTimer = setTimeout(() => { spinner.lastChild.textContent = "Сеть не отвечает… (можно отменить)"; }, 20000);
  }
  $("#ussd-text").textContent = d.state === "sent" ? "" : d.text;
  overlay.dataset.state = d.state;
  const answer = $("#ussd-answer");
  answer.hidden = d.state !== "waiting";
  $("#ussd-send").hidden = d.state !== "waiting";
  $("#ussd-cancel").textContent = d.state === "closed" ? "OK" : "Отмена";
  if (d.state === "waiting") { answer.value = ""; answer.focus(); }
}

// The POST that dialled and the event stream both report the dialogue: the newest version wins.
function setUssd(dialogue) {
  if (view.ussd.version !== undefined && dialogue.version < view.ussd.version) return;
  view.ussd = dialogue;
  renderUssd();
}

function renderUnread() {
  const badge = $("#unread");
  badge.hidden = view.unread === 0;
  badge.textContent = view.unread;
}

function renderClock(offset) {
  $("#clock-offset").textContent = offset ? `+${duration(offset)}` : "сейчас";
}

function renderAll() {
  renderPhone(); renderThread(); renderNetwork(); renderPdus(); renderUssd(); renderUnread();
}

// ---- the event stream ------------------------------------------------------------------------
async function connect(msisdn) {
  try { await api("POST", "/api/phones", { msisdn }); } catch (e) { toast(e.message, true); return; }  // looks make no phone
  if (view.source) view.source.close();
  Object.assign(view, { msisdn, phone: {}, inbox: [], network: new Map(), outbox: new Map(), ussd: { state: "idle" },
                        pdus: [], unread: 0 });
  $("#msisdn").value = msisdn;
  localStorage.setItem("ussdgw.phone", msisdn);
  if (location.hash.slice(1) !== msisdn) history.replaceState(null, "", `#${msisdn}`);
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
    view.outbox = new Map(s.outbox.map((e) => [e.id, e]));
    view.ussd = s.ussd;
    view.pdus = s.pdus;
    renderClock(s.clock_offset);
    renderAll();
    document.body.dataset.ready = msisdn;
  });
  on("phone", (p) => { view.phone = p; renderPhone(); });
  on("inbox", (m) => {
    view.inbox.push(m);
    if (m.kind === "sms" && view.tab !== "sms") { view.unread += 1; renderUnread(); }
  });
  on("network", (e) => { view.network.set(e.message_id, e); renderThread(); renderNetwork(); });
  on("outbox", (e) => { view.outbox.set(e.id, e); renderThread(); });
  on("ussd", setUssd);
  on("pdu", (p) => { view.pdus.push(p); if (view.pdus.length > 400) view.pdus.splice(0, 200); renderPdus(); });
  source.onopen = () => linkState(true);
  source.onerror = () => linkState(false);
  refreshKnownPhones();
}

function linkState(up) {
  $("#link-state").classList.toggle("up", up);
  $("#link-state .label").textContent = up ? "на связи" : "переподключение…";
}

async function refreshKnownPhones() {
  try {
    const { phones } = await api("GET", "/api/phones");
    $("#known-phones").replaceChildren(...phones.map((p) => el("option", { value: p.msisdn })));
  } catch { /* the list is a convenience */ }
}

async function loadServices() {
  let services = { sms: [], ussd: [] };
  try { services = await api("GET", "/api/services"); } catch { /* shortcuts only */ }
  const ussd = services.ussd.length ? services.ussd : [{ code: "*100#", description: "баланс" }];
  $("#ussd-chips").replaceChildren(...ussd.map((s) =>
    el("button", { class: "chip", type: "button", title: s.description, onclick: () => { $("#dial-number").value = s.code; } },
       el("b", {}, s.code), " ", s.description.split(" - ").pop())));
  $("#sms-chips").replaceChildren(...services.sms.map((s) =>
    el("button", { class: "chip", type: "button", title: s.description,
                   onclick: () => { $("#sms-to").value = s.to; $("#sms-text").value = s.keyword; updateCounter(); } },
       el("b", {}, s.keyword || s.description.split(" - ")[0]), ` → ${s.to}`)));
}

// ---- actions ---------------------------------------------------------------------------------
async function patch(body) {
  try { view.phone = await api("PATCH", `/api/phones/${view.msisdn}`, body); renderPhone(); } catch (e) { toast(e.message, true); }
}

async function dial() {
  const code = $("#dial-number").value.trim();
  if (!code) return;
  if (!USSD_RE.test(code)) {
    toast("Голосовые вызовы симулятор не умеет: наберите USSD-код, например *100#", true);
    return;
  }
  try {
    setUssd(await api("POST", `/api/phones/${view.msisdn}/ussd/dial`, { code }));
  } catch (e) { toast(e.message, true); }
}

async function ussdAnswer(event) {
  event.preventDefault();
  const text = $("#ussd-answer").value.trim();
  if (!text) return;
  try { setUssd(await api("POST", `/api/phones/${view.msisdn}/ussd/answer`, { text })); }
  catch (e) { toast(e.message, true); }
}

async function ussdCancel() {
  try { setUssd(await api("POST", `/api/phones/${view.msisdn}/ussd/cancel`)); }
  catch (e) { toast(e.message, true); }
}

async function sendSms(event) {
  event.preventDefault();
  const to = $("#sms-to").value.trim();
  const text = $("#sms-text").value;
  try {
    await api("POST", `/api/phones/${view.msisdn}/sms`, { to, text });
    $("#sms-text").value = "";
    updateCounter();
  } catch (e) { toast(e.message, true); }
}

function updateCounter() {
  const text = $("#sms-text").value;
  if (!text) { $("#sms-counter").textContent = ""; return; }
  const ucs2 = /[^\x20-\x7E\n\r£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉÄÖÑÜ§¿äöñüà]/.test(text);
  const one = ucs2 ? 70 : 160;
  const part = ucs2 ? 67 : 153;
  const parts = text.length <= one ? 1 : Math.ceil(text.length / part);
  $("#sms-counter").textContent = `${text.length} симв. · ${parts} SMS · ${ucs2 ? "UCS2" : "GSM 7-бит"}`;
}

function selectTab(tab) {
  view.tab = tab;
  for (const button of document.querySelectorAll(".tabs button")) button.classList.toggle("active", button.dataset.tab === tab);
  for (const body of document.querySelectorAll(".tab-body")) body.hidden = body.dataset.tabBody !== tab;
  if (tab === "sms") { view.unread = 0; renderUnread(); }
}

function wire() {
  $("#pick").addEventListener("submit", (event) => {
    event.preventDefault();
    const msisdn = $("#msisdn").value.trim().replace(/^\+/, "");
    if (!/^[0-9]{5,15}$/.test(msisdn)) { toast("Номер: от 5 до 15 цифр", true); return; }
    connect(msisdn);
  });
  for (const button of document.querySelectorAll(".tabs button")) button.addEventListener("click", () => selectTab(button.dataset.tab));
  $("#keypad").addEventListener("click", (event) => {
    const key = event.target.closest("button")?.dataset.key;
    if (key) $("#dial-number").value += key;
  });
  $("#backspace").addEventListener("click", () => { $("#dial-number").value = $("#dial-number").value.slice(0, -1); });
  $("#call").addEventListener("click", dial);
  $("#dial-number").addEventListener("keydown", (event) => { if (event.key === "Enter") dial(); });
  $("#ussd-form").addEventListener("submit", ussdAnswer);
  $("#ussd-cancel").addEventListener("click", ussdCancel);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !$("#ussd").hidden) ussdCancel(); });
  $("#compose").addEventListener("submit", sendSms);
  $("#sms-text").addEventListener("input", updateCounter);
  $("#sms-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) sendSms(event);
  });
  for (const radio of document.querySelectorAll('input[name="power"]')) {
    radio.addEventListener("change", () => patch({ power: radio.value }));
  }
  $("#f-inbox-full").addEventListener("change", (event) => patch({ inbox_full: event.target.checked }));
  $("#f-unknown").addEventListener("change", (event) => patch({ unknown_number: event.target.checked }));
  $("#block-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("#block-code").value.trim();
    if (!code) return;
    patch({ blocked_senders: [...new Set([...(view.phone.blocked_senders || []), code])] });
    $("#block-code").value = "";
  });
  for (const button of document.querySelectorAll("[data-advance]")) {
    button.addEventListener("click", async () => {
      try {
        const result = await api("POST", "/api/clock/advance", { seconds: Number(button.dataset.advance) });
        renderClock(result.offset);
        toast(`Время симулятора: +${duration(result.offset)}` + (result.expired ? `, истекло MT: ${result.expired}` : ""));
      } catch (e) { toast(e.message, true); }
    });
  }
  setInterval(() => {
    const d = new Date();
    $("#sb-clock").textContent = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }, 1000);
  window.addEventListener("hashchange", () => {
    const msisdn = location.hash.slice(1);
    if (/^[0-9]{5,15}$/.test(msisdn) && msisdn !== view.msisdn) connect(msisdn);
  });
}

wire();
loadServices();
const first = location.hash.slice(1);
connect(/^[0-9]{5,15}$/.test(first) ? first : localStorage.getItem("ussdgw.phone") || DEFAULT_PHONE);
