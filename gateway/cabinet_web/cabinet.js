// Личный кабинет: a client of the self-care JSON API (/api/v1) and of nothing else.
// Plain ES module, no build step, no inline code (the page's CSP allows scripts from this origin only).
//
// Every answer of the API carries a Russian `message`; a refusal is shown exactly as the API words it.
// The page checks only that required fields are filled (its own Russian messages, no browser bubbles).
// Session (SPEC P5): the API ends a session after `idle_timeout_s` without requests; the page counts the
// same time down from its last request, warns two minutes before, and returns to sign-in when the API
// says the session has ended (or when the countdown runs out). It never calls the API on its own, so an
// idle page does stay idle.

import { el } from "./dom.js";

const API = "/api/v1";
const STORE_KEY = "ussdgw.cabinet";
const WARN_BEFORE_S = 120;
const TZ = "Europe/Moscow"; // the operator's time (sms_codes.OPERATOR_TZ)

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const state = {
  token: null, msisdn: null, idle: 1200, last: 0, acting: null,
  timer: null, linked: [], joined: [], catalogue: null,
};

// ---- talking to the API --------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

class SessionEnded extends Error {}

const SESSION_OVER = new Set(["session_expired", "unauthorized"]);

let inFlight = 0;

/** The page is busy while any API request is on its way (assistive technology and tests wait for it). */
function busy(step) {
  inFlight += step;
  document.body.setAttribute("aria-busy", String(inFlight > 0));
}

async function api(method, path, body, { auth = true, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (auth) {
    if (!state.token) throw new SessionEnded();
    sent.Authorization = `Bearer ${state.token}`;
  }
  let response;
  let data;
  busy(+1);
  try {
    response = await fetch(API + path, {
      method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
    });
    data = await response.json().catch(() => ({}));
  } catch {
    throw new ApiError(0, "network", "Нет связи с сервером. Проверьте подключение и повторите.");
  } finally {
    busy(-1);
  }
  const ended = auth && response.status === 401 && SESSION_OVER.has(data.error);
  if (auth && !ended) touch(); // the API restarted the session's idle time with this request
  if (response.ok) return data;
  const message = data.message || fallbackMessage(response);
  if (ended) {
    endSession(message, "warn");
    throw new SessionEnded(message);
  }
  throw new ApiError(response.status, data.error || "http", message, data.details || {});
}

/** What to show for an error answer without the API's own words (a proxy's page, an empty body). */
function fallbackMessage(response) {
  if (response.status === 503) { // busy: the API says when to come back
    const wait = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return Number.isFinite(wait) && wait > 0
      ? `Сервис сейчас перегружен. Повторите через ${wait} с.`
      : "Сервис сейчас перегружен. Повторите чуть позже.";
  }
  return `Сервер ответил ошибкой ${response.status}. Повторите позже.`;
}

/** The account the page acts on: `me`, or a linked or joined number. */
function acc(path = "") {
  const who = state.acting && state.acting !== state.msisdn ? state.acting : "me";
  return `/accounts/${who}${path}`;
}

// ---- formatting ----------------------------------------------------------------------------------
function rub(kop) {
  const value = (kop / 100).toLocaleString("ru-RU", {
    minimumFractionDigits: kop % 100 ? 2 : 0, maximumFractionDigits: 2,
  });
  return `${value} ₽`;
}

function phone(msisdn) {
  const m = /^7(\d{3})(\d{3})(\d{2})(\d{2})$/.exec(msisdn || "");
  return m ? `+7 ${m[1]} ${m[2]}-${m[3]}-${m[4]}` : msisdn || "";
}

function plural(n, one, few, many) {
  const d = n % 10, h = n % 100;
  if (d === 1 && h !== 11) return one;
  if (d >= 2 && d <= 4 && (h < 12 || h > 14)) return few;
  return many;
}

const dateTime = new Intl.DateTimeFormat("ru-RU", {
  timeZone: TZ, day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit",
  second: "2-digit",
});
const when = (ts) => dateTime.format(new Date(ts * 1000));

/** "2026-11-30T14:05:33+03:00" -> "30.11.2026 14:05" (the operator's own time, as the record has it). */
function recordTime(iso) {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(iso || "");
  return m ? `${m[3]}.${m[2]}.${m[1]} ${m[4]}:${m[5]}` : iso;
}

function isoDay(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function ruDay(iso) {
  const m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(iso || "");
  return m ? `${m[3]}.${m[2]}.${m[1]}` : iso;
}

function duration(seconds) {
  const min = Math.floor(seconds / 60), sec = seconds % 60;
  return min ? `${min} мин${sec ? ` ${sec} с` : ""}` : `${sec} с`;
}

function mmss(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

const EVENTS = {
  seeded: "Абонент заведён", signin: "Вход в кабинет", signout: "Выход из кабинета",
  session_expired: "Сеанс завершён без активности", password_issued: "Выдан пароль",
  password_refused: "Пароль не выдан", password_changed: "Пароль изменён", password_change: "Смена пароля",
  password_recovered: "Пароль восстановлен по кодовому слову", password_recovery: "Восстановление пароля",
  password_reset: "Пароль сброшен", support_reset: "Сброс пароля в поддержке", top_up: "Пополнение счёта",
  charged: "Списание", balance_shown: "Запрос баланса", tariff_switched: "Смена тарифа", tariff_switch: "Смена тарифа",
  service_on: "Подключение услуги", service_off: "Отключение услуги", number_linked: "Номер добавлен в «Мои номера»",
  number_link: "Добавление номера", number_unlinked: "Номер убран из «Моих номеров»",
  linked_by: "Номер добавлен в другой кабинет", number_blocked: "Блокировка номера", number_block: "Блокировка номера",
  number_unblocked: "Номер разблокирован", owner_changed: "Смена владельца", owner_change: "Смена владельца",
  owner_change_fee: "Плата за смену владельца", gift_sent: "Подарок баллов", gift_offered: "Вам дарят баллы",
  gift_accepted: "Подаренные баллы получены", gift_accept: "Ввод кода подарка", gift_expired: "Код подарка истёк",
  hold_captured: "Резерв списан", hold_refunded: "Резерв возвращён", call_detail: "Детализация",
  email_failed: "Письмо не доставлено", sms_archive_code: "Код архива SMS", sms_archive_opened: "Открыт архив SMS",
  sms_archive_open: "Открытие архива SMS", mms_archive_opened: "Открыт архив MMS", mo_received: "Получено сообщение",
  mt_submitted: "Отправлено сообщение", mt_receipt: "Отчёт о доставке", unknown_request: "Непонятный запрос",
  easy_payment: "Лёгкий платёж", locator_consent: "Согласие на Локатор", locate: "Локатор", located: "Локатор",
  parental_blacklist: "Родительский контроль", n2_applied: "Заявка на «Управление номерами»",
  n2_apply: "Заявка на «Управление номерами»", n2_activated: "«Управление номерами» подключена",
  n2_rejected: "Заявка на «Управление номерами» отклонена", n2_off: "«Управление номерами» отключена",
  n2_password: "Общий пароль", n2_state_shown: "Состояние «Управления номерами»",
};
const CHANNELS = { api: "кабинет", sms: "SMS", ussd: "USSD", admin: "поддержка", system: "система",
  review: "проверка заявки" };
const OUTCOMES = { ok: "успешно", wrong_password: "неверный пароль", locked: "вход заблокирован",
  rate_limited: "лимит запросов", expired: "истёк", wrong_code: "неверный код", insufficient_funds: "недостаточно средств",
  conflict: "отказ", debt: "задолженность", wrong_code_word: "неверное кодовое слово", delivered: "доставлено",
  help_sent: "отправлена справка", not_active: "не подключена" };
const NUMBER_STATES = { active: "Активен", scheduled: "Блокировка назначена", blocked: "Заблокирован" };
const KINDS = { call: "Звонок", sms: "SMS", internet: "Интернет" };
const GIFT_IN = { offered: "ждёт кода", accepted: "получен", expired: "код истёк", void: "отменён" };
const GIFT_OUT = { held: "ждёт кода получателя", captured: "получен", refunded: "баллы возвращены" };
const N2_STATES = {
  off: "«Управление номерами» не подключена.", pending: "Заявка на «Управление номерами» на рассмотрении.",
  active: "«Управление номерами» подключена.", rejected: "Заявка на «Управление номерами» отклонена.",
};

// ---- forms: the page's own checks, the API's answers ----------------------------------------------
function setResult(node, text, kind) {
  if (!node) return;
  node.textContent = text || "";
  if (text) node.dataset.state = kind;
  else delete node.dataset.state;
}

function prepareFields(form) {
  for (const input of $$("input[data-required]", form)) {
    const error = el("p", { class: "field-error", id: `${input.id}-error` });
    (input.closest(".field") || input.parentElement).append(error);
    input.setAttribute("aria-describedby", error.id);
    input.addEventListener("input", () => {
      input.removeAttribute("aria-invalid");
      error.textContent = "";
    });
  }
}

/** Required fields filled? Otherwise the page's own message under each empty one (no browser bubbles). */
function filled(form) {
  let first = null;
  for (const input of $$("input[data-required]", form)) {
    if (input.closest("[hidden]") || input.disabled) continue;
    const error = document.getElementById(`${input.id}-error`);
    if (input.value.trim()) continue;
    input.setAttribute("aria-invalid", "true");
    if (error) error.textContent = input.dataset.required;
    first ??= input;
  }
  first?.focus();
  return first === null;
}

/** Run `action` (which returns the text to show) with the form's buttons disabled; show its outcome. */
async function run(resultNode, buttons, action) {
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const text = await action();
    setResult(resultNode, text, "ok");
    return true;
  } catch (error) {
    if (error instanceof SessionEnded) return false;
    if (error instanceof ApiError) setResult(resultNode, error.message, "error");
    else {
      console.error(error);
      setResult(resultNode, "Что-то пошло не так на странице. Обновите её и повторите.", "error");
    }
    return false;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function onSubmit(id, action) {
  const form = document.getElementById(id);
  prepareFields(form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!filled(form)) return;
    run($(".result", form), $$("button", form), () => action(form));
  });
}

const value = (id) => document.getElementById(id).value.trim();

// ---- the session (P5) ------------------------------------------------------------------------------
function save() {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify({
      token: state.token, msisdn: state.msisdn, idle: state.idle, last: state.last, acting: state.acting,
    }));
  } catch { /* private mode: the session lives as long as the page */ }
}

function saved() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
  } catch {
    return null;
  }
}

function forget() {
  try { sessionStorage.removeItem(STORE_KEY); } catch { /* nothing kept */ }
}

function touch() {
  state.last = Date.now();
  save();
  tick();
}

function tick() {
  if (!state.token) return;
  const left = state.idle - (Date.now() - state.last) / 1000;
  if (left <= 0) {
    idleOut();
    return;
  }
  const low = left <= WARN_BEFORE_S;
  $("#idle-time").textContent = mmss(left);
  $("#idle").classList.toggle("low", low);
  $("#idle-left").textContent = mmss(left);
  $("#idle-warning").hidden = !low;
}

/** The countdown ran out: the session is over here; the API is told so (it may have ended it already). */
function idleOut() {
  const token = state.token;
  const minutes = Math.round(state.idle / 60);
  endSession(`Сеанс завершён: ${minutes} ${plural(minutes, "минута", "минуты", "минут")} без активности. `
    + "Войдите снова.", "warn");
  fetch(`${API}/sessions/current`, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } })
    .then((response) => (response.status === 401 ? response.json() : null))
    .then((data) => { if (data?.message) showNotice(data.message, "warn"); })
    .catch(() => {});
}

function showNotice(text, kind) {
  const notice = $("#signin-notice");
  notice.textContent = text || "";
  notice.hidden = !text;
  notice.dataset.kind = kind || "info";
}

function endSession(message, kind) {
  clearInterval(state.timer);
  Object.assign(state, { token: null, msisdn: null, acting: null, timer: null, linked: [], joined: [] });
  forget();
  wipe();
  showNotice(message, kind);
  show("signin");
  $("#signin-password").value = "";
}

/** Nothing of the last account stays in the page after it is left. */
function wipe() {
  const cabinet = $("#cabinet-view");
  $$("form", cabinet).forEach((form) => form.reset());
  $$(".result", cabinet).forEach((node) => setResult(node, ""));
  $$("ul.cards, ul.list, ul.plain, tbody, tfoot", cabinet).forEach((node) => node.replaceChildren());
  $$(".tile b, #block-state, #n2-state, #mms-archive-state, #ov-plan, #ov-owner, .facts dd", cabinet).forEach((node) => {
    node.textContent = "—";
  });
  $("#calls-table").hidden = true;
  $("#sms-archive-table").hidden = true;
  $("#acting").replaceChildren();
  $$(".result", $("#signin-view")).forEach((node) => setResult(node, ""));
}

function show(view) {
  document.body.dataset.view = view;
  $("#signin-view").hidden = view !== "signin";
  $("#cabinet-view").hidden = view !== "cabinet";
  $("#session-bar").hidden = view !== "cabinet";
  if (view !== "cabinet") $("#idle-warning").hidden = true;
}

async function enter(data) {
  Object.assign(state, { token: data.token, msisdn: data.msisdn, idle: data.idle_timeout_s || 1200 });
  state.acting ??= data.msisdn;
  touch();
  clearInterval(state.timer);
  state.timer = setInterval(tick, 1000);
  showNotice("");
  show("cabinet");
  await refreshNumbers();
  setActing(state.acting, { render: false });
  route();
}

// ---- the number the page acts on: own, linked (N1) or joined (N2) -----------------------------------
async function refreshNumbers() {
  const [linked, account] = await Promise.all([api("GET", "/accounts/me/linked"), api("GET", "/accounts/me")]);
  state.linked = linked.data.numbers || [];
  state.joined = account.data.joined || [];
  const select = $("#acting");
  const options = [el("option", { value: state.msisdn }, phone(state.msisdn))];
  for (const n of state.linked) options.push(el("option", { value: n.msisdn }, `${phone(n.msisdn)} · привязан`));
  for (const n of state.joined) {
    if (!state.linked.some((l) => l.msisdn === n)) options.push(el("option", { value: n }, `${phone(n)} · объединён`));
  }
  select.replaceChildren(...options);
  const known = [state.msisdn, ...state.linked.map((n) => n.msisdn), ...state.joined];
  if (!known.includes(state.acting)) state.acting = state.msisdn;
  select.value = state.acting;
}

function setActing(msisdn, { render = true } = {}) {
  state.acting = msisdn || state.msisdn;
  save();
  $("#acting").value = state.acting;
  const other = state.acting !== state.msisdn;
  $("#acting-note").hidden = !other;
  $("#acting-number").textContent = phone(state.acting);
  if (render) {
    $$(".result", $("#cabinet-view")).forEach((node) => setResult(node, "")); // they were about the other number
    route();
  }
}

// ---- sections --------------------------------------------------------------------------------------
const SECTIONS = {
  overview: renderOverview, tariffs: renderTariffs, services: renderServices, numbers: renderNumbers,
  bonus: renderBonus, calls: renderCalls, archive: renderArchive, number: renderNumber,
  settings: renderSettings, audit: renderAudit,
};

function currentSection() {
  const name = location.hash.slice(1);
  return Object.hasOwn(SECTIONS, name) ? name : "overview";
}

function route({ focus = false } = {}) {
  if (!state.token) return;
  const name = currentSection();
  document.body.dataset.section = name;
  for (const section of $$("[data-section-body]")) {
    const active = section.dataset.sectionBody === name;
    if (!active) $$(".result", section).forEach((node) => setResult(node, ""));
    section.hidden = !active;
  }
  for (const link of $$(".sections a")) {
    if (link.dataset.section === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const section = document.getElementById(name);
  if (focus) {
    const heading = $("h1", section);
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    $(`.sections a[data-section="${name}"]`)?.scrollIntoView({ block: "nearest", inline: "nearest" });
  }
  const result = $(":scope > .result", section) || $(".result", section);
  SECTIONS[name]().catch((error) => {
    if (error instanceof SessionEnded) return;
    if (!(error instanceof ApiError)) console.error(error);
    setResult(result, error instanceof ApiError ? error.message : "Не удалось показать раздел. Обновите страницу.",
      "error");
  });
}

async function account() {
  return (await api("GET", acc())).data;
}

async function catalogue() {
  state.catalogue ??= (await api("GET", "/catalogue", undefined, { auth: false })).data;
  return state.catalogue;
}

function tariffName(id) {
  return state.catalogue?.tariffs.find((t) => t.id === id)?.name || id;
}

// Баланс
async function renderOverview() {
  const data = await account();
  $("#ov-balance").textContent = rub(data.balance_kop);
  $("#ov-points").textContent = data.bonus_points;
  $("#ov-tariff").textContent = data.tariff_name || data.tariff || "—";
  $("#ov-state").textContent = NUMBER_STATES[data.state] || data.state;
  $("#ov-owner").textContent = [phone(data.msisdn), data.owner_name, data.corporate ? "корпоративный клиент" : ""]
    .filter(Boolean).join(" · ");
  const cat = await catalogue().catch(() => null);
  const tariff = cat?.tariffs.find((t) => t.id === data.tariff);
  $("#ov-plan").replaceChildren(el("b", {}, `«${data.tariff_name || data.tariff}»`),
    tariff ? ` — ${tariff.description}` : "");
  const names = data.services.map((id) => cat?.services.find((s) => s.id === id)?.name || id);
  $("#ov-services").replaceChildren(...(names.length ? names.map((name) => el("li", {}, `✓ ${name}`))
    : [el("li", { class: "muted" }, "Дополнительные услуги не подключены.")]));
}

function kopecks(text) {
  const m = /^(\d{1,6})(?:[.,](\d{1,2}))?$/.exec(text.replace(/\s|₽/g, ""));
  if (!m) throw new ApiError(0, "bad_request", "Сумма — число рублей, например 500 или 99,90.");
  return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
}

function paymentId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Тарифы
async function renderTariffs() {
  const { data } = await api("GET", acc("/tariffs"));
  const list = $("#tariff-list");
  list.replaceChildren(...data.tariffs.map((t) => {
    const nameId = `tariff-${t.id}`;
    let action;
    if (t.current) action = el("span", { class: "badge on" }, "Ваш тариф");
    else if (t.available === false) action = el("span", { class: "badge" }, "Только для корпоративных клиентов");
    else {
      action = el("button", {
        type: "button", "aria-describedby": nameId, onclick: (event) => switchTariff(t, event.currentTarget),
      }, "Перейти на этот тариф");
    }
    return el("li", { class: t.current ? "current" : "", dataset: { tariff: t.id } },
      el("h3", { id: nameId }, t.name),
      el("p", { class: "desc" }, t.description),
      el("p", { class: "price" }, t.monthly_fee_kop ? `Абонентская плата: ${rub(t.monthly_fee_kop)} в месяц`
        : "Без абонентской платы"),
      el("p", { class: "price muted" }, t.switch_price_kop ? `Переход: ${rub(t.switch_price_kop)}` : "Переход бесплатный"),
      el("div", { class: "actions" }, action));
  }));
}

async function switchTariff(tariff, button) {
  const result = $("#tariffs > .result");
  const ok = await run(result, [button], async () => (await api("PUT", acc("/tariff"), { tariff_id: tariff.id })).message);
  if (ok) await renderTariffs().catch(() => {});
}

// Услуги
async function renderServices() {
  const { data } = await api("GET", acc("/services"));
  $("#service-list").replaceChildren(...data.services.map(serviceCard));
}

function serviceCard(s) {
  const nameId = `service-${s.id}`;
  const lines = [
    el("h3", { id: nameId }, s.name, " ", el("span", { class: s.enabled ? "badge on" : "badge" },
      s.enabled ? "Подключена" : "Не подключена")),
    el("p", { class: "desc" }, s.description),
    el("p", { class: "price" }, s.monthly_fee_kop ? `Абонентская плата: ${rub(s.monthly_fee_kop)} в месяц`
      : "Без абонентской платы"),
    el("p", { class: "price muted" }, s.connect_price_kop ? `Подключение: ${rub(s.connect_price_kop)}`
      : "Подключение бесплатное"),
  ];
  if (s.enabled && s.params?.amount_kop) {
    lines.push(el("p", { class: "price" }, `Пополняет на ${rub(s.params.amount_kop)}, когда баланс не выше `
      + `${rub(s.params.threshold_kop)}.`));
  }
  const actions = el("div", { class: "actions" });
  if (s.enabled) {
    actions.append(el("button", {
      type: "button", class: "ghost", "aria-describedby": nameId,
      onclick: (event) => toggleService(s, false, event.currentTarget),
    }, "Отключить"));
  } else if (s.id === "autopay") {
    const form = el("form", { class: "row-form", novalidate: true, id: "autopay-form" },
      el("div", { class: "field" }, el("label", { for: "autopay-amount" }, "Пополнять на, ₽"),
        el("input", { id: "autopay-amount", inputmode: "decimal", autocomplete: "off", placeholder: "300",
          "data-required": "Введите сумму автопополнения" })),
      el("div", { class: "field" }, el("label", { for: "autopay-threshold" }, "Когда баланс не выше, ₽"),
        el("input", { id: "autopay-threshold", inputmode: "decimal", autocomplete: "off", placeholder: "0" })),
      el("button", { type: "submit", "aria-describedby": nameId }, "Подключить"));
    prepareFields(form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!filled(form)) return;
      toggleService(s, true, $("button", form), () => ({
        amount_kop: kopecks(value("autopay-amount")), threshold_kop: kopecks(value("autopay-threshold") || "0"),
      }));
    });
    actions.append(form);
  } else {
    actions.append(el("button", {
      type: "button", "aria-describedby": nameId, onclick: (event) => toggleService(s, true, event.currentTarget),
    }, "Подключить"));
  }
  return el("li", { dataset: { service: s.id } }, ...lines, actions);
}

async function toggleService(service, on, button, params) {
  const result = $("#services > .result");
  const ok = await run(result, [button], async () => {
    const path = acc(`/services/${encodeURIComponent(service.id)}`);
    const answer = on ? await api("PUT", path, params ? { params: params() } : undefined) : await api("DELETE", path);
    return answer.message;
  });
  if (ok) await renderServices().catch(() => {});
}

// Мои номера
async function renderNumbers() {
  await catalogue().catch(() => null);
  const [{ data: linked }, { data: me }] = await Promise.all([api("GET", "/accounts/me/linked"),
    api("GET", "/accounts/me")]);
  state.linked = linked.numbers;
  state.joined = me.joined;
  const rows = linked.numbers.map((n) => el("li", { dataset: { msisdn: n.msisdn } },
    el("span", { class: "who" }, phone(n.msisdn)),
    el("span", { class: "what" }, `${rub(n.balance_kop)} · ${tariffName(n.tariff)} · `
      + `${(NUMBER_STATES[n.state] || n.state).toLowerCase()}`),
    el("span", { class: "buttons" },
      el("button", { type: "button", class: "small", "aria-label": `Управлять номером ${n.msisdn}`,
        onclick: () => { setActing(n.msisdn, { render: false }); location.hash = "#overview"; route(); } }, "Управлять"),
      el("button", { type: "button", class: "small ghost", "aria-label": `Отвязать номер ${n.msisdn}`,
        onclick: (event) => unlink(n.msisdn, event.currentTarget) }, "Отвязать"))));
  $("#linked-list").replaceChildren(...(rows.length ? rows
    : [el("li", { class: "empty" }, "Пока нет привязанных номеров.")]));
  $("#n2-state").textContent = N2_STATES[me.n2_state] || me.n2_state;
  $("#joined-list").replaceChildren(...me.joined.map((n) => el("li", { dataset: { msisdn: n } },
    el("span", { class: "who" }, phone(n)),
    el("span", { class: "what" }, "объединён с вашим номером"),
    el("span", { class: "buttons" }, el("button", { type: "button", class: "small",
      "aria-label": `Управлять номером ${n}`,
      onclick: () => { setActing(n, { render: false }); location.hash = "#overview"; route(); } }, "Управлять")))));
}

async function unlink(msisdn, button) {
  const result = $("#numbers > .result");
  const ok = await run(result, [button], async () => (await api("DELETE", `/accounts/me/linked/${msisdn}`)).message);
  if (ok) {
    await refreshNumbers().catch(() => {});
    setActing(state.acting, { render: false });
    await renderNumbers().catch(() => {});
  }
}

// Бонусы
async function renderBonus() {
  const [data, gifts] = await Promise.all([account(), api("GET", acc("/gifts"))]);
  $("#bonus-points").textContent = `${data.bonus_points}`;
  const items = [
    ...gifts.data.received.map((g) => el("li", {},
      el("span", { class: "who" }, `от ${phone(g.from)}`),
      el("span", { class: "what" }, `${g.points} ${plural(g.points, "балл", "балла", "баллов")} · `
        + `${GIFT_IN[g.state] || g.state}${g.state === "offered" ? ` (до ${when(g.expires_at)})` : ""}`))),
    ...gifts.data.sent.map((g) => el("li", {},
      el("span", { class: "who" }, `для ${phone(g.to)}`),
      el("span", { class: "what" }, `${g.points} ${plural(g.points, "балл", "балла", "баллов")} · `
        + `${GIFT_OUT[g.state] || g.state}`))),
  ];
  $("#gift-list").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "Подарков пока нет.")]));
}

// Детализация
function renderCalls() {
  const today = new Date();
  if (!$("#calls-to").value) $("#calls-to").value = isoDay(today);
  if (!$("#calls-from").value) $("#calls-from").value = isoDay(new Date(today.getTime() - 6 * 86400e3));
  return Promise.resolve();
}

function showCalls(data) {
  const table = $("#calls-table");
  $("tbody", table).replaceChildren(...data.records.map((r) => el("tr", {},
    el("td", { class: "when" }, recordTime(r.at)),
    el("td", { class: "act" }, `${KINDS[r.kind] || r.kind}${r.kind === "internet" ? ""
      : r.direction === "in" ? ", входящий" : ", исходящий"}`),
    el("td", { class: "peer" }, r.kind === "internet" ? "—" : phone(r.peer)),
    el("td", { class: "vol" }, r.kind === "call" ? duration(r.duration_s)
      : r.kind === "internet" ? `${(r.volume_kb / 1024).toLocaleString("ru-RU", { maximumFractionDigits: 1 })} МБ` : "1 SMS"),
    el("td", { class: "num" }, rub(r.cost_kop)))));
  let foot = $("tfoot", table);
  if (!foot) table.append(foot = el("tfoot"));
  foot.replaceChildren(el("tr", {}, el("td", { colspan: "4" }, `Итого за ${ruDay(data.from)}–${ruDay(data.to)}`),
    el("td", { class: "num" }, rub(data.total_cost_kop))));
  table.hidden = false;
}

// Архив сообщений
async function renderArchive() {
  const { message } = await api("GET", acc("/mms-archive"));
  $("#mms-archive-state").textContent = message;
}

// Блокировка и владелец
async function renderNumber() {
  const data = await account();
  const since = data.blocked_from ? ` с ${ruDay(data.blocked_from)}` : "";
  $("#block-state").textContent = data.state === "active" ? "Номер активен."
    : data.state === "scheduled" ? `Блокировка назначена${since}.` : `Номер заблокирован${since}.`;
  const blocked = data.state !== "active";
  $("#block-from").closest(".field").hidden = blocked;
  $("#block-form button[type=submit]").hidden = blocked;
  $("#unblock").hidden = !blocked;
  if (!$("#block-from").value) $("#block-from").value = isoDay(new Date());
}

// Настройки
async function renderSettings() {
  const data = await account();
  $("#set-code-word").textContent = data.code_word_set ? "задано" : "не задано";
  $("#set-email").textContent = data.email || "не указан";
  const own = state.acting === state.msisdn;
  $("#pw-username").value = state.msisdn;
  $("#password-form").hidden = !own;
  $("#password-own-only").hidden = own;
}

// История действий
async function renderAudit() {
  const { data } = await api("GET", acc("/audit?count=200"));
  const rows = data.events.slice().reverse().map((e) => el("tr", { class: e.outcome === "ok" ? "" : "bad",
    dataset: { event: e.event } },
  el("td", { class: "when" }, when(e.ts)),
  el("td", { class: "act" }, EVENTS[e.event] || e.event),
  el("td", { class: "chan" }, CHANNELS[e.channel] || e.channel),
  el("td", { class: "out" }, OUTCOMES[e.outcome] || e.outcome),
  el("td", { class: "detail" }, e.detail)));
  $("#audit-table tbody").replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: "5", class: "muted empty" }, "Событий пока нет."))]));
}

// ---- wiring ------------------------------------------------------------------------------------------
function wire() {
  onSubmit("signin-form", async () => {
    const { data, message } = await api("POST", "/sessions",
      { msisdn: value("signin-msisdn"), password: $("#signin-password").value }, { auth: false });
    state.acting = null;
    await enter(data);
    return message;
  });
  onSubmit("sms-password-form", async () => {
    const msisdn = value("sms-password-msisdn");
    const { message } = await api("POST", "/password-requests", { msisdn }, { auth: false });
    if (!value("signin-msisdn")) $("#signin-msisdn").value = msisdn;
    if (value("signin-msisdn") === msisdn) $("#signin-password").focus();
    return message;
  });
  onSubmit("recover-form", async (form) => {
    const delivery = $("input[name=delivery]:checked", form).value;
    return (await api("POST", "/password-recovery",
      { msisdn: value("recover-msisdn"), code_word: value("recover-word"), delivery }, { auth: false })).message;
  });

  onSubmit("topup-form", async () => {
    const amount_kop = kopecks(value("topup-amount"));
    const { message } = await api("POST", acc("/top-ups"), { amount_kop }, { headers: { "Idempotency-Key": paymentId() } });
    $("#topup-amount").value = "";
    renderOverview().catch(() => {});
    return message;
  });
  for (const chip of $$("#topup-form [data-amount]")) {
    chip.addEventListener("click", () => {
      const input = $("#topup-amount");
      input.value = chip.dataset.amount;
      input.dispatchEvent(new Event("input"));
    });
  }

  onSubmit("link-form", async (form) => {
    const { message } = await api("POST", "/accounts/me/linked",
      { msisdn: value("link-msisdn"), password: $("#link-password").value });
    form.reset();
    await refreshNumbers().catch(() => {});
    renderNumbers().catch(() => {});
    return message;
  });

  onSubmit("gift-form", async (form) => {
    const { message } = await api("POST", acc("/gifts"), { to: value("gift-to"), points: value("gift-points") });
    form.reset();
    renderBonus().catch(() => {});
    return message;
  });
  onSubmit("accept-form", async (form) => {
    const { message } = await api("POST", acc("/gifts/accept"), { code: value("accept-code") });
    form.reset();
    renderBonus().catch(() => {});
    return message;
  });

  const period = () => ({ from: value("calls-from"), to: value("calls-to") });
  onSubmit("calls-form", async () => {
    const { from, to } = period();
    const answer = await api("GET", acc(`/calls?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`));
    showCalls(answer.data);
    return answer.message;
  });
  $("#calls-email").addEventListener("click", () => {
    const form = $("#calls-form");
    if (!filled(form)) return;
    run($(".result", form), $$("button", form), async () => (await api("POST", acc("/calls/email"), period())).message);
  });

  onSubmit("sms-archive-form", async (form) => {
    const { data, message } = await api("POST", acc("/sms-archive"), { code: value("sms-archive-code") });
    form.reset();
    const table = $("#sms-archive-table");
    $("tbody", table).replaceChildren(...data.entries.slice().reverse().map((e) => el("tr", {},
      el("td", { class: "when" }, when(e.at)), el("td", { class: "act" }, EVENTS[e.event] || e.event),
      el("td", { class: "out" }, e.peer), el("td", { class: "chan" }, CHANNELS[e.channel] || e.channel))));
    table.hidden = false;
    return message;
  });

  onSubmit("block-form", async () => {
    const { message } = await api("PUT", acc("/block"), { from: value("block-from") });
    renderNumber().catch(() => {});
    return message;
  });
  $("#unblock").addEventListener("click", (event) => {
    run($("#block-form .result"), [event.currentTarget], async () => {
      const { message } = await api("DELETE", acc("/block"));
      renderNumber().catch(() => {});
      return message;
    });
  });
  onSubmit("owner-form", async (form) => {
    const { message } = await api("POST", acc("/owner-change"),
      { new_owner_msisdn: value("owner-msisdn"), password: $("#owner-password").value });
    form.reset();
    return message;
  });

  onSubmit("code-word-form", async (form) => {
    const { message } = await api("PUT", acc("/code-word"), { code_word: $("#code-word-new").value });
    form.reset();
    renderSettings().catch(() => {});
    return message;
  });
  onSubmit("email-form", async (form) => {
    const { message } = await api("PUT", acc("/email"), { email: value("email-new") });
    form.reset();
    renderSettings().catch(() => {});
    return message;
  });

  onSubmit("password-form", async (form) => {
    const { message } = await api("PUT", "/accounts/me/password", {
      old_password: $("#pw-old").value, new_password: $("#pw-new").value, new_password_repeat: $("#pw-repeat").value,
    });
    form.reset();
    return message;
  });

  $("#logout").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const { message } = await api("DELETE", "/sessions/current");
      endSession(message, "info");
    } catch (error) {
      if (!(error instanceof SessionEnded)) endSession(error.message, "warn");
    } finally {
      button.disabled = false;
    }
  });
  $("#idle-continue").addEventListener("click", () => {
    api("GET", "/sessions/current").catch(() => {});
  });
  $("#acting").addEventListener("change", (event) => setActing(event.currentTarget.value));
  $("#acting-back").addEventListener("click", () => setActing(state.msisdn));
  window.addEventListener("hashchange", () => route({ focus: true }));
  document.addEventListener("visibilitychange", tick);
}

async function boot() {
  wire();
  const kept = saved();
  if (kept?.token && Date.now() - kept.last < kept.idle * 1000) {
    Object.assign(state, { token: kept.token, msisdn: kept.msisdn, idle: kept.idle, last: kept.last,
      acting: kept.acting });
    try {
      const { data } = await api("GET", "/sessions/current");
      await enter({ token: kept.token, msisdn: data.msisdn, idle_timeout_s: kept.idle });
      return;
    } catch (error) {
      if (error instanceof SessionEnded) return;
      endSession(error.message, "warn");
      return;
    }
  }
  if (kept?.token) endSession("Сеанс завершён: 20 минут без активности. Войдите снова.", "warn");
  else show("signin");
}

boot();
