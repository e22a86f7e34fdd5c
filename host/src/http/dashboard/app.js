"use strict";

// The modhost dashboard. Everything a module or a user supplies reaches the
// DOM as text (never markup) and only after clean(), so module text can never
// pass for the host's own chrome.

const TOKEN_KEY = "modhost.token";
const ACTIVE = ["pending", "running", "waiting-confirmation"];
const FINAL = ["completed", "failed", "cancelled", "interrupted"];
const STATUSES = [...ACTIVE, ...FINAL];
const TOAST_LEVELS = ["info", "success", "warning", "error"];
const BUTTON_STYLES = ["primary", "secondary", "danger"];
const DECISIONS = ["allowed", "denied", "invalid", "limited"];
const PAGE_SIZE = 30;
const AUDIT_PAGE_SIZE = 50;
const MAX_TEXT = 4000;
const TOAST_MS = 6000;

// ---------------------------------------------------------------------------
// Text safety

// C0 controls except \t and \n, DEL and C1, the Arabic letter mark,
// zero-width characters, LRM/RLM, bidi embeddings, overrides and isolates,
// word joiner and BOM.
// Controls, format characters (bidi, zero-width, tags, soft hyphen) and the
// fillers and joiners that render blank; newline and tab are kept.
const UNSAFE = /[\p{Cc}\p{Cf}\u034F\u115F\u1160\u3164\uFFA0\uFE00-\uFE0F]/gu;

function clean(s) {
  if (s === null || s === undefined) return "";
  let str = typeof s === "string" ? s : String(s);
  if (str.length > MAX_TEXT) {
    let end = MAX_TEXT;
    // Do not leave half a surrogate pair behind.
    const code = str.charCodeAt(end - 1);
    if (code >= 0xd800 && code <= 0xdbff) end -= 1;
    str = str.slice(0, end) + "…";
  }
  return str.replace(UNSAFE, (ch) => (ch === "\n" || ch === "\t") ? ch :
    "⟦U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "⟧");
}

function text(s) {
  return document.createTextNode(clean(s));
}

function setText(node, s) {
  node.textContent = clean(s);
}

// Builds an element; string children become cleaned text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : text(child));
  }
  return node;
}

// Text that came from outside the host: isolated so it cannot reorder
// the page's own text around it.
function ext(tag, value, cls) {
  return el(tag, { class: cls, dir: "ltr" }, value);
}

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

function fmtTime(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
  return new Date(ms).toLocaleString();
}

function pretty(value) {
  try {
    const out = JSON.stringify(value, null, 2);
    return out === undefined ? String(value) : out;
  } catch (_) {
    return String(value);
  }
}

function oneOf(value, allowed, fallback) {
  return allowed.includes(value) ? value : fallback;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Feedback: the error banner and toasts

function showError(message) {
  const banner = $("#error");
  setText(banner, message);
  banner.hidden = false;
}

function clearError() {
  const banner = $("#error");
  banner.hidden = true;
  banner.textContent = "";
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Thrown for answers that arrive after a sign-out; nobody should see them.
class StaleError extends Error {}

function report(err) {
  if (err instanceof StaleError) return;
  showError(err && err.message ? err.message : String(err));
}

// `module` is set for toasts a module asked for, so they are labelled as such.
function toast(level, message, module) {
  const item = el("div", { class: `toast toast-${oneOf(level, TOAST_LEVELS, "info")}`, role: "status" });
  if (module) item.append(el("div", { class: "toast-source" }, "from module ", ext("span", module)));
  item.append(ext("div", message, "toast-message"));
  setTimeout(() => item.remove(), TOAST_MS);
  $("#toasts").append(item);
}

// ---------------------------------------------------------------------------
// API

const session = { token: null, gen: 0, me: null, modules: [] };

async function api(method, path, body) {
  const gen = session.gen;
  const init = {
    method,
    cache: "no-store",
    headers: { Authorization: `Bearer ${session.token}`, Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (_) {
    if (gen !== session.gen) throw new StaleError();
    throw new ApiError(0, "network", "The host could not be reached.");
  }
  const payload = await res.json().catch(() => null);
  if (gen !== session.gen) throw new StaleError();
  if (!res.ok) {
    const err = errorOf(res, payload);
    if (res.status === 401) signOut(err.message);
    throw err;
  }
  return payload;
}

function errorOf(res, payload) {
  const e = payload && typeof payload === "object" ? payload.error : null;
  const message = e && typeof e.message === "string" && e.message
    ? e.message
    : `Request failed: ${res.status} ${res.statusText}`.trim();
  return new ApiError(res.status, e && e.code, message);
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------
// Sign-in

async function signIn(token) {
  token = (token || "").trim();
  if (!token) {
    showError("Enter a token to sign in.");
    return;
  }
  stopStream();
  session.gen += 1;
  session.token = token;
  const button = $("#sign-in");
  button.disabled = true;
  try {
    const me = await api("GET", "/v1/whoami");
    sessionStorage.setItem(TOKEN_KEY, token);
    session.me = me;
    clearError();
    setText($("#whoami"), `${me.user_id}@${me.organization_id} (${me.role})`);
    $("#filter-org-wrap").hidden = me.role !== "admin";
    $("#filter-org").checked = false;
    $("#token").value = "";
    $("#signin").hidden = true;
    $("#app").hidden = false;
    $("#nav").hidden = false;
    $("#session").hidden = false;
    showView("tasks");
    loadModules().catch(report);
    loadTasks(true).catch(report);
    startStream();
  } catch (err) {
    report(err);
  } finally {
    button.disabled = false;
  }
}

function signOut(message) {
  session.gen += 1;
  session.token = null;
  session.me = null;
  session.modules = [];
  sessionStorage.removeItem(TOKEN_KEY);
  stopStream();
  for (const d of $$("dialog")) if (d.open) d.close();
  tasks.clear();
  $("#tasks").replaceChildren();
  $("#modules").replaceChildren();
  $("#audit tbody").replaceChildren();
  $("#action-output").hidden = true;
  $("#filter-module").value = "";
  $("#filter-status").value = "";
  $("#audit-module").value = "";
  $("#audit-decision").value = "";
  $("#audit-capability").value = "";
  $("#more").hidden = true;
  $("#audit-more").hidden = true;
  $("#whoami").textContent = "";
  $("#app").hidden = true;
  $("#nav").hidden = true;
  $("#session").hidden = true;
  $("#signin").hidden = false;
  if (message) showError(message);
  else clearError();
  $("#token").focus();
}

// ---------------------------------------------------------------------------
// Views

let currentView = "tasks";

function showView(name) {
  currentView = name;
  for (const v of ["tasks", "modules", "audit"]) {
    $(`#view-${v}`).hidden = v !== name;
    const nav = $(`#nav-${v}`);
    nav.classList.toggle("active", v === name);
    nav.setAttribute("aria-pressed", String(v === name));
  }
  if (name === "modules") loadModules().catch(report);
  if (name === "audit") loadAudit(true).catch(report);
}

// ---------------------------------------------------------------------------
// Modules

async function loadModules() {
  const payload = await api("GET", "/v1/modules");
  session.modules = Array.isArray(payload && payload.modules) ? payload.modules : [];
  renderModules();
  fillModuleSelect($("#filter-module"));
  fillModuleSelect($("#audit-module"));
  fillActionSelect();
}

const list = (value) => (Array.isArray(value) ? value : []);

function fillModuleSelect(select) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, "All"));
  for (const m of session.modules) select.append(el("option", { value: m.name }, m.name));
  select.value = session.modules.some((m) => m.name === keep) ? keep : "";
}

// Option value → [module, action]; names may themselves contain "/".
const actionTargets = new Map();

function fillActionSelect() {
  const select = $("#action-select");
  const keep = select.value;
  actionTargets.clear();
  select.replaceChildren();
  for (const m of session.modules) {
    for (const a of list(m.actions)) {
      const value = `${m.name}/${a.name}`;
      actionTargets.set(value, { module: m.name, action: a.name, description: a.description });
      select.append(el("option", { value }, value));
    }
  }
  if (!actionTargets.size) select.append(el("option", { value: "", disabled: true }, "No actions"));
  if (actionTargets.has(keep)) select.value = keep;
  describeAction();
}

function describeAction() {
  const target = actionTargets.get($("#action-select").value);
  setText($("#action-desc"), target ? target.description || "" : "");
  $("#action-run").disabled = !target;
}

function renderModules() {
  const root = $("#modules");
  root.replaceChildren();
  if (!session.modules.length) {
    root.append(el("p", { class: "empty" }, "No modules are loaded."));
    return;
  }
  for (const m of session.modules) {
    const card = el("article", { class: "card module-card" },
      el("header", { class: "card-head" },
        ext("h3", m.name, "module-name"),
        m.version ? ext("span", `v${m.version}`, "version") : null),
      m.description ? ext("p", m.description, "description") : null,
      entrySection("Actions", m.actions),
      entrySection("Tasks", m.tasks),
      entrySection("Blocking functions", m.blocking));
    const grants = list(m.grants);
    const grantList = el("ul", { class: "grants" });
    for (const g of grants) grantList.append(ext("li", g));
    if (!grants.length) grantList.append(el("li", { class: "muted" }, "No grants: the module can reach nothing outside itself."));
    card.append(el("section", { class: "module-section" }, el("h4", {}, "Grants"), grantList));
    root.append(card);
  }
}

function entrySection(title, entries) {
  const items = list(entries);
  const ul = el("ul", { class: "entries" });
  for (const e of items) {
    ul.append(el("li", {},
      ext("code", e && e.name, "entry-name"),
      e && e.description ? el("span", { class: "muted" }, " — ", ext("span", e.description)) : null));
  }
  if (!items.length) ul.append(el("li", { class: "muted" }, "none"));
  return el("section", { class: "module-section" }, el("h4", {}, title), ul);
}

// ---------------------------------------------------------------------------
// Tasks

// id → { task, seq, card }; only tasks with a card on the page. `seq` counts
// live events, so a fetch that raced with them does not undo them.
const tasks = new Map();
const listState = { gen: 0, cursor: null };

function filters() {
  const status = $("#filter-status").value;
  return {
    module: $("#filter-module").value,
    statuses: status ? status.split(",") : [],
    org: session.me && session.me.role === "admin" && $("#filter-org").checked,
  };
}

function matchesFilters(task) {
  const f = filters();
  if (f.module && task.module !== f.module) return false;
  if (f.statuses.length && !f.statuses.includes(task.status)) return false;
  if (!f.org && session.me && task.user_id && task.user_id !== session.me.user_id) return false;
  return true;
}

// A task older than the last loaded one belongs to a page not loaded yet.
function withinLoaded(task) {
  if (listState.cursor === null) return true;
  const cards = $$("#tasks .task-card");
  const last = cards.length ? tasks.get(cards[cards.length - 1].dataset.taskId) : null;
  return !last || compareTasks(task, last.task) <= 0;
}

// Newest first.
function compareTasks(a, b) {
  const ta = Number(a.created_at) || 0;
  const tb = Number(b.created_at) || 0;
  if (ta !== tb) return tb - ta;
  return String(b.id).localeCompare(String(a.id));
}

async function loadTasks(reset) {
  if (reset) listState.gen += 1;
  const gen = listState.gen;
  const f = filters();
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (f.module) q.set("module", f.module);
  if (f.statuses.length) q.set("status", f.statuses.join(","));
  if (f.org) q.set("scope", "organization");
  if (!reset && listState.cursor) q.set("cursor", listState.cursor);
  const more = $("#more");
  more.disabled = true;
  try {
    const page = await api("GET", `/v1/tasks?${q}`);
    if (gen !== listState.gen) return;
    if (reset) {
      tasks.clear();
      $("#tasks").replaceChildren();
    }
    listState.cursor = page && page.next_cursor != null ? String(page.next_cursor) : null;
    for (const t of list(page && page.tasks)) upsertTask(t, { fromList: true });
    more.hidden = listState.cursor === null;
    updateEmpty();
  } finally {
    more.disabled = false;
  }
}

function updateEmpty() {
  $("#tasks-empty").hidden = tasks.size > 0;
}

// Adds or updates a task's card. Tasks not from a list page get a card only
// when they match the filters.
function upsertTask(task, { fromList = false, seqAtFetch = null } = {}) {
  if (!task || typeof task.id !== "string") return;
  const entry = tasks.get(task.id);
  if (entry) {
    const merged = { ...entry.task, ...task };
    if (seqAtFetch !== null && entry.seq !== seqAtFetch) {
      // Live events arrived while this was fetched; they are newer.
      merged.status = entry.task.status;
      merged.progress = entry.task.progress;
      merged.label = entry.task.label;
    }
    const moved = merged.created_at !== entry.task.created_at;
    entry.task = merged;
    updateCard(entry.card, merged);
    if (moved) placeCard(entry.card, merged);
    return;
  }
  if (!fromList && !(matchesFilters(task) && withinLoaded(task))) return;
  const card = buildCard(task);
  tasks.set(task.id, { task: { ...task }, seq: 0, card });
  updateCard(card, task);
  placeCard(card, task);
  updateEmpty();
}

function placeCard(card, task) {
  const root = $("#tasks");
  card.remove();
  // Scan from the end: list pages append, live tasks go near the top.
  let before = null;
  for (let node = root.lastElementChild; node; node = node.previousElementSibling) {
    const other = tasks.get(node.dataset.taskId);
    if (other && compareTasks(task, other.task) < 0) before = node;
    else break;
  }
  root.insertBefore(card, before);
}

function buildCard(task) {
  const card = el("article", { class: "card task-card", "data-task-id": task.id });
  card.append(
    el("header", { class: "card-head" },
      el("h3", { class: "title", dir: "ltr" }),
      el("span", { class: "status" })),
    el("p", { class: "module", dir: "ltr" }),
    el("div", { class: "progress" },
      el("div", { class: "progress-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" })),
    el("p", { class: "label", dir: "ltr" }),
    el("footer", { class: "card-foot" },
      el("span", { class: "meta" }, el("time", { class: "created" }), el("span", { class: "owner", dir: "ltr" })),
      el("div", { class: "actions" })));
  return card;
}

function updateCard(card, task) {
  const status = String(task.status || "");
  card.dataset.status = status;
  setText($(".title", card), task.title || task.task_name);
  setText($(".module", card), `${task.module} · ${task.task_name}`);

  const badge = $(".status", card);
  badge.className = `status status-${oneOf(status, STATUSES, "unknown")}`;
  setText(badge, status);

  const progress = Number(task.progress);
  const fraction = Number.isFinite(progress) ? Math.min(1, Math.max(0, progress)) : 0;
  const bar = $(".progress-bar", card);
  bar.dataset.progress = String(task.progress ?? 0);
  bar.style.width = `${fraction * 100}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  bar.setAttribute("aria-label", `progress of ${clean(task.title || task.task_name)}`);

  setText($(".label", card), task.label || "");
  const created = $(".created", card);
  setText(created, fmtTime(task.created_at));
  if (typeof task.created_at === "number") created.dateTime = new Date(task.created_at).toISOString();
  const other = session.me && task.user_id && task.user_id !== session.me.user_id;
  setText($(".owner", card), other ? ` · ${task.user_id}` : "");

  // Rebuilt only when the status changes: progress events arrive many times
  // a second and must not swap a button out from under a click.
  const actions = $(".actions", card);
  if (actions.dataset.status === status) return;
  actions.dataset.status = status;
  actions.replaceChildren(el("button", { type: "button", class: "button small details" }, "Details"));
  if (status === "waiting-confirmation") {
    actions.append(el("button", { type: "button", class: "button small primary answer" }, "Answer"));
  }
  if (ACTIVE.includes(status)) {
    actions.append(el("button", { type: "button", class: "button small danger-outline cancel" }, "Cancel"));
  }
}

// One GET per task at a time; a request made meanwhile fetches once more
// afterwards, so the last answer is never older than the last request.
const inflight = new Map();

function refreshTask(id) {
  const running = inflight.get(id);
  if (running) {
    running.again = true;
    return running.promise;
  }
  const job = { again: true, promise: null };
  job.promise = (async () => {
    let full = null;
    while (job.again) {
      job.again = false;
      const entry = tasks.get(id);
      const seq = entry ? entry.seq : 0;
      full = await api("GET", `/v1/tasks/${enc(id)}`);
      upsertTask(full, { seqAtFetch: seq });
      if (details.taskId === id && $("#details").open) renderDetails(full);
    }
    return full;
  })().finally(() => inflight.delete(id));
  inflight.set(id, job);
  return job.promise;
}

// Refresh prompted by an event: failures are not the user's business.
function refreshQuietly(id) {
  refreshTask(id).catch((err) => {
    if (err instanceof ApiError && err.status === 401) return;
    if (!(err instanceof StaleError) && !(err instanceof ApiError)) report(err);
  });
}

function liveUpdate(id, change) {
  const entry = tasks.get(id);
  if (!entry) return false;
  entry.seq += 1;
  Object.assign(entry.task, change);
  updateCard(entry.card, entry.task);
  return true;
}

async function cancelTask(id) {
  const result = await api("POST", `/v1/tasks/${enc(id)}/cancel`);
  liveUpdate(id, { status: (result && result.status) || "cancelled" });
  const entry = tasks.get(id);
  toast("success", `Cancelled ${entry ? clean(entry.task.title || entry.task.task_name) : id}.`);
  refreshQuietly(id);
}

// ---------------------------------------------------------------------------
// Starting actions

async function runAction() {
  const target = actionTargets.get($("#action-select").value);
  if (!target) return;
  const raw = $("#action-args").value.trim() || "{}";
  let args;
  try {
    args = JSON.parse(raw);
  } catch (err) {
    showError(`Arguments are not valid JSON: ${err.message}`);
    return;
  }
  const button = $("#action-run");
  button.disabled = true;
  try {
    const out = await api("POST", `/v1/modules/${enc(target.module)}/actions/${enc(target.action)}`, args);
    clearError();
    showActionOutput(target, out);
    for (const effect of list(out && out.effects)) {
      if (!effect || typeof effect !== "object") continue;
      if (effect.type === "toast") toast(effect.level, effect.message, target.module);
      else if (effect.type === "show-task" && typeof effect.task_id === "string") showTask(effect.task_id);
    }
  } catch (err) {
    // The module's own refusal: said to be the module's, so its text
    // cannot pass for the host's (a fake "session expired", say).
    if (err instanceof ApiError && err.status !== 401) {
      showError(`module ${clean(target.module)} replied: ${err.message}`);
      return;
    }
    throw err;
  } finally {
    button.disabled = false;
  }
}

async function showTask(id) {
  try {
    const full = await refreshTask(id);
    const entry = tasks.get(id);
    if (entry) {
      entry.card.classList.remove("flash");
      void entry.card.offsetWidth; // restart the animation
      entry.card.classList.add("flash");
    } else if (full) {
      toast("info", `Task ${clean(full.title || full.task_name)} started; the current filters hide it.`);
    }
  } catch (err) {
    report(err);
  }
}

function showActionOutput(target, out) {
  const box = $("#action-output");
  box.replaceChildren();
  const data = out ? out.data : undefined;
  if (data !== undefined && data !== null) {
    box.append(el("div", { class: "output-head" }, "Data returned by ", ext("span", `${target.module}/${target.action}`)),
      ext("pre", pretty(data), "json"));
  }
  for (const effect of list(out && out.effects)) {
    if (effect && effect.type === "render" && effect.surface) {
      box.append(el("div", { class: "output-head" }, "modhost · view rendered by module ", ext("span", target.module, "chrome-module")),
        renderSurface(effect.surface, { readOnly: true, prefix: "render" }));
    }
  }
  box.hidden = !box.childElementCount;
}

// ---------------------------------------------------------------------------
// Surfaces

// Renders a module's surface. Interactive surfaces call onButton(id);
// read-only ones show `answer` (button pressed, values picked) if given.
function renderSurface(surface, { onButton = null, readOnly = false, answer = null, prefix = "" } = {}) {
  const root = el("div", { class: "surface", dir: "ltr" });
  root.append(el("h2", { class: "surface-title", dir: "ltr" }, surface && surface.title));
  const picked = answer && answer.values && typeof answer.values === "object" ? answer.values : {};
  let buttons = 0;

  const addButton = (row, b) => {
    const id = b && b.id != null ? String(b.id) : "";
    const style = oneOf(b && b.style, BUTTON_STYLES, "secondary");
    const button = el("button", {
      type: "button",
      class: `button surface-button btn-${style}`,
      "data-button-id": id,
      dir: "ltr",
      disabled: readOnly,
    }, b && b.label);
    if (answer && answer.button === id) button.classList.add("chosen");
    if (onButton && !readOnly) button.addEventListener("click", () => onButton(id));
    row.append(button);
    buttons += 1;
  };

  for (const c of list(surface && surface.components)) {
    switch (c && c.type) {
      case "text":
        root.append(ext("p", c.text, "surface-text"));
        break;
      case "markdown":
        root.append(ext("p", c.markdown, "markdown"));
        break;
      case "key-value": {
        const dl = el("dl", { class: "kv", dir: "ltr" });
        for (const pair of list(c.pairs)) {
          const [k, v] = Array.isArray(pair) ? pair : [pair && pair.key, pair && pair.value];
          dl.append(ext("dt", k), ext("dd", v));
        }
        root.append(dl);
        break;
      }
      case "choices": {
        const name = String(c.name ?? "");
        const chosen = list(picked[name]).map(String);
        const fs = el("fieldset", { class: "choices", "data-name": name, dir: "ltr" });
        fs.append(ext("legend", name));
        for (const option of list(c.options)) {
          const value = option && option.id != null ? String(option.id) : "";
          const input = el("input", {
            type: c.multiple ? "checkbox" : "radio",
            // A read-only copy must not join the live form's radio group.
            name: prefix ? `${prefix}:${name}` : name,
            value,
            disabled: readOnly,
            checked: chosen.includes(value),
          });
          fs.append(el("label", { class: "choice" }, input, ext("span", option && option.label)));
        }
        root.append(fs);
        break;
      }
      case "buttons": {
        const row = el("div", { class: "surface-buttons" });
        for (const b of list(c.buttons)) addButton(row, b);
        root.append(row);
        break;
      }
      case "task-card":
        root.append(el("p", { class: "surface-task" }, "task ", ext("code", c.task_id)));
        break;
      case "divider":
        root.append(el("hr"));
        break;
      default:
        root.append(el("p", { class: "surface-unknown" }, "unsupported component ", ext("code", c && c.type)));
    }
  }
  if (!buttons) {
    const row = el("div", { class: "surface-buttons" });
    addButton(row, { id: "ok", label: "OK", style: "primary" });
    root.append(row);
  }
  return root;
}

// ---------------------------------------------------------------------------
// The confirmation dialog

const dialog = { taskId: null, askedAt: null, busy: false };

function dialogError(message) {
  const box = $("#confirmation .dialog-error");
  setText(box, message || "");
  box.hidden = !message;
}

async function openConfirmation(id) {
  const task = await refreshTask(id);
  const conf = task && task.confirmation;
  if (!conf || !conf.surface || task.status !== "waiting-confirmation" || conf.answer) {
    showError("This task is not waiting for an answer any more.");
    return;
  }
  const box = $("#confirmation");
  dialog.taskId = id;
  dialog.askedAt = conf.asked_at;
  dialog.busy = false;

  const chrome = $("#confirmation-chrome");
  chrome.replaceChildren(
    el("div", { class: "chrome-line" },
      el("strong", {}, "modhost"), " · confirmation asked by module ", ext("span", task.module, "chrome-module")),
    el("div", { class: "chrome-sub" },
      "for task ", ext("span", task.title || task.task_name, "chrome-task"),
      ` · asked ${fmtTime(conf.asked_at)}`,
      conf.expires_at != null ? ` · expires ${fmtTime(conf.expires_at)}` : ""));
  $("#confirmation .surface-host").replaceChildren(
    el("div", { class: "surface-caption" }, "The module's question:"),
    renderSurface(conf.surface, { onButton: sendAnswer }));
  dialogError("");
  if (!box.open) box.showModal();
  // Focus the host's own button, so a stray Enter answers nothing.
  $("#dialog-close").focus();
}

function collectValues() {
  const values = {};
  for (const fs of $$("#confirmation fieldset.choices")) {
    const name = fs.dataset.name;
    const ids = $$("input:checked", fs).map((input) => input.value);
    values[name] = (values[name] || []).concat(ids);
  }
  return values;
}

function setSurfaceButtons(enabled) {
  for (const b of $$("#confirmation .surface-button")) b.disabled = !enabled;
}

async function sendAnswer(buttonId) {
  if (dialog.busy || !dialog.taskId) return;
  const id = dialog.taskId;
  dialog.busy = true;
  setSurfaceButtons(false);
  dialogError("");
  try {
    await api("POST", `/v1/tasks/${enc(id)}/confirmation`, {
      button: buttonId,
      values: collectValues(),
      asked_at: dialog.askedAt,
    });
    dialog.taskId = null;
    $("#confirmation").close();
    toast("success", "Answer sent.");
    refreshQuietly(id);
  } catch (err) {
    if (err instanceof StaleError) return;
    dialogError(err.message);
    setSurfaceButtons(true);
  } finally {
    dialog.busy = false;
  }
}

// Someone else answered, or the question expired, while the dialog was open.
function confirmationGone(id, message) {
  if (dialog.taskId !== id || dialog.busy || !$("#confirmation").open) return;
  dialogError(message);
  setSurfaceButtons(false);
}

// ---------------------------------------------------------------------------
// The details dialog

const details = { taskId: null };

async function openDetails(id) {
  details.taskId = id;
  const task = await refreshTask(id);
  renderDetails(task);
  const box = $("#details");
  if (!box.open) box.showModal();
}

function renderDetails(t) {
  const body = $("#details-body");
  body.replaceChildren();
  if (!t) return;
  const progress = Number(t.progress);
  const fields = [
    ["ID", t.id],
    ["Module", t.module],
    ["Task", t.task_name],
    ["Key", t.task_key ?? "—"],
    ["Status", t.status],
    ["Progress", Number.isFinite(progress) ? `${Math.round(progress * 100)}%` : "—"],
    ["Label", t.label ?? "—"],
    ["User", t.user_id],
    ["Organization", t.organization_id],
    ["Created", fmtTime(t.created_at)],
    ["Started", fmtTime(t.started_at)],
    ["Updated", fmtTime(t.updated_at)],
    ["Finished", fmtTime(t.finished_at)],
    ["Attempts", t.attempts ?? "—"],
    ["Resumable", t.resumable ? "yes" : "no"],
  ];
  const dl = el("dl", { class: "kv fields" });
  for (const [k, v] of fields) dl.append(el("dt", {}, k), ext("dd", v));
  body.append(ext("h2", t.title || t.task_name, "details-title"), dl);

  if (t.failure) {
    body.append(section("Failure",
      el("p", { class: "failure" }, ext("code", t.failure.kind), " ", ext("span", t.failure.message))));
  }
  if (t.checkpoint !== undefined) body.append(section("Checkpoint", ext("pre", pretty(t.checkpoint), "json")));
  if (t.result !== undefined) body.append(section("Result", ext("pre", pretty(t.result), "json")));

  const conf = t.confirmation;
  if (conf) {
    const a = conf.answer;
    const meta = el("p", { class: "muted" },
      `Asked ${fmtTime(conf.asked_at)}`,
      conf.expires_at != null ? ` · expires ${fmtTime(conf.expires_at)}` : "");
    const answered = a
      ? el("p", { class: "answered" }, "Answered with ", ext("code", a.answer && a.answer.button),
        " by ", ext("span", a.answered_by), ` at ${fmtTime(a.answered_at)}`)
      : el("p", { class: "muted" }, "Not answered yet.");
    const parts = [meta, answered];
    if (a && a.answer && a.answer.values && Object.keys(a.answer.values).length) {
      parts.push(ext("pre", pretty(a.answer.values), "json"));
    }
    if (conf.surface) {
      parts.push(el("div", { class: "surface-caption" }, "The module's question, as shown:"),
        renderSurface(conf.surface, { readOnly: true, answer: a && a.answer, prefix: "details" }));
    }
    body.append(section("Confirmation", ...parts));
  }

  const ol = el("ol", { class: "timeline" });
  for (const ev of list(t.timeline)) {
    ol.append(el("li", {},
      el("time", {}, fmtTime(ev && ev.at)), " · ",
      ext("span", ev && ev.event, "event"),
      ev && ev.detail != null ? el("span", {}, " · ", ext("span", ev.detail, "detail")) : null));
  }
  if (!ol.childElementCount) ol.append(el("li", { class: "muted" }, "No events."));
  body.append(section("Timeline", ol));
}

function section(title, ...children) {
  return el("section", { class: "details-section" }, el("h3", {}, title), ...children);
}

// ---------------------------------------------------------------------------
// Audit

const auditState = { gen: 0, before: null };
const AUDIT_KNOWN = new Set(["id", "at", "module", "user_id", "organization_id", "capability", "subject", "detail", "decision", "reason", "end"]);
const CAPABILITIES = ["subprocess", "http", "filesystem", "task", "confirmation"];

async function loadAudit(reset) {
  if (reset) auditState.gen += 1;
  const gen = auditState.gen;
  const q = new URLSearchParams({ limit: String(AUDIT_PAGE_SIZE) });
  const module = $("#audit-module").value;
  const decision = $("#audit-decision").value;
  const capability = $("#audit-capability").value;
  if (module) q.set("module", module);
  if (capability) q.set("capability", capability);
  if (decision) q.set("decision", decision);
  if (!reset && auditState.before) q.set("before", auditState.before);
  const more = $("#audit-more");
  more.disabled = true;
  try {
    const page = await api("GET", `/v1/audit?${q}`);
    if (gen !== auditState.gen) return;
    const tbody = $("#audit tbody");
    if (reset) tbody.replaceChildren();
    for (const rec of list(page && page.records)) tbody.append(auditRow(rec));
    if (!tbody.childElementCount) {
      tbody.append(el("tr", { class: "empty-row" }, el("td", { colspan: "8" }, "No records.")));
    }
    auditState.before = page && page.next_before != null ? String(page.next_before) : null;
    more.hidden = auditState.before === null;
  } finally {
    more.disabled = false;
  }
}

// What a record was about, in one line, by its capability.
function auditWhat(capability, subject, d) {
  switch (capability) {
    case "subprocess": return [subject, ...list(d.args).map((a) => String(a))].join(" ");
    case "http": return `${d.method ?? ""} ${subject}${d.status != null ? ` → ${d.status}` : ""}`;
    case "filesystem": return `${d.operation ?? ""} ${subject}`;
    case "task": return d.task_key != null ? `${subject} (key ${d.task_key})` : subject;
    case "confirmation": return `${subject}: ${d.answer ?? ""}`;
    default: return subject;
  }
}

// Detail fields the "What" column does not already show.
const AUDIT_SHOWN = { subprocess: ["args"], http: ["method", "status"], filesystem: ["operation"], task: ["task_key"], confirmation: ["answer"] };

function auditRow(rec) {
  const d = rec && typeof rec === "object" ? rec : {};
  const detail = d.detail && typeof d.detail === "object" ? d.detail : {};
  const capability = typeof d.capability === "string" ? d.capability : "";
  const outcome = d.end ?? null;
  const what = auditWhat(capability, String(d.subject ?? ""), detail);
  const decision = typeof d.decision === "string" ? d.decision : "";

  const shown = new Set(AUDIT_SHOWN[capability] ?? []);
  const extras = Object.entries(detail).filter(([k, v]) => !shown.has(k) && isShown(v));
  extras.push(...Object.entries(d).filter(([k, v]) => !AUDIT_KNOWN.has(k) && isShown(v)));
  const more = el("td", { class: "extra" });
  if (outcome && typeof outcome === "object") {
    more.append(ext("div", Object.entries(outcome).filter(([, v]) => isShown(v))
      .map(([k, v]) => `${k}=${compact(v)}`).join(" "), "outcome"));
  }
  for (const [k, v] of extras) more.append(el("div", {}, el("span", { class: "muted" }, `${clean(k)}: `), ext("span", compact(v))));

  return el("tr", {},
    el("td", { class: "nowrap" }, fmtTime(d.at)),
    el("td", {}, ext("span", d.module)),
    el("td", {}, ext("span", d.user_id)),
    el("td", {}, ext("span", oneOf(capability, CAPABILITIES, "unknown"))),
    el("td", {}, ext("code", what, "command")),
    el("td", {}, el("span", { class: `decision decision-${oneOf(decision, DECISIONS, "unknown")}` }, decision || "—")),
    el("td", {}, ext("span", d.reason ?? "—")),
    more);
}

function isShown(v) {
  return v !== null && v !== undefined && !(Array.isArray(v) && v.length === 0);
}

function compact(v) {
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

let auditTimer = null;

function auditChanged() {
  if (currentView !== "audit" || $("#app").hidden) return;
  clearTimeout(auditTimer);
  auditTimer = setTimeout(() => loadAudit(true).catch(report), 300);
}

// ---------------------------------------------------------------------------
// Live events over fetch (EventSource cannot send the bearer token)

const stream = { controller: null, lastEventId: null, error: null };

function setLive(state) {
  const live = $("#live");
  live.dataset.state = state;
  live.textContent = state;
}

function startStream() {
  stream.lastEventId = null;
  streamLoop(session.gen);
}

function stopStream() {
  if (stream.controller) stream.controller.abort();
  stream.controller = null;
  setLive("offline");
}

// Reconnects with the current filters (an admin's scope may have changed).
function restartStream() {
  if (stream.controller) stream.controller.abort();
}

async function streamLoop(gen) {
  let failures = 0;
  while (gen === session.gen) {
    const controller = new AbortController();
    stream.controller = controller;
    let delay = 1000;
    setLive(failures ? "reconnecting" : "connecting");
    try {
      const q = new URLSearchParams();
      if (filters().org) q.set("scope", "organization");
      const headers = { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" };
      const resumeFrom = stream.lastEventId;
      if (resumeFrom) headers["Last-Event-ID"] = resumeFrom;
      const res = await fetch(`/v1/events${q.toString() ? `?${q}` : ""}`, {
        headers, cache: "no-store", signal: controller.signal,
      });
      if (gen !== session.gen) return;
      if (res.status === 401) {
        const payload = await res.json().catch(() => null);
        signOut(errorOf(res, payload).message);
        return;
      }
      if (res.status === 400 && resumeFrom) {
        // The host no longer knows that id (it restarted): start afresh.
        stream.lastEventId = null;
        loadTasks(true).catch(report);
        continue;
      }
      if (!res.ok || !res.body) {
        const payload = await res.json().catch(() => null);
        stream.error = errorOf(res, payload).message;
        showError(stream.error);
        failures += 1;
        delay = res.status === 429 ? 5000 : Math.min(30000, 5000 * failures);
      } else {
        failures = 0;
        setLive("live");
        // Take down the stream's own complaint, and nothing else.
        if (stream.error !== null && $("#error").textContent === clean(stream.error)) clearError();
        stream.error = null;
        await readEvents(res.body, gen);
        failures = 1;
      }
    } catch (err) {
      if (gen !== session.gen) return;
      // An abort without a sign-out is a deliberate restart.
      if (controller.signal.aborted) continue;
      failures += 1;
    }
    if (gen !== session.gen) return;
    setLive("reconnecting");
    await sleep(delay);
  }
}

async function readEvents(body, gen) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "";
  let data = [];
  let id = stream.lastEventId;

  const line = (l) => {
    if (l === "") {
      stream.lastEventId = id;
      if (data.length) dispatch(event || "message", data.join("\n"));
      event = "";
      data = [];
      return;
    }
    if (l.startsWith(":")) return;
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id" && !value.includes("\0")) id = value;
    else if (field === "event") event = value;
    else if (field === "data") data.push(value);
  };

  for (;;) {
    const { value, done } = await reader.read();
    if (done || gen !== session.gen) return;
    buffer += decoder.decode(value, { stream: true });
    let m;
    while ((m = /\r\n|\r|\n/.exec(buffer))) {
      // A lone \r at the end may be the first half of \r\n.
      if (m[0] === "\r" && m.index === buffer.length - 1) break;
      line(buffer.slice(0, m.index));
      buffer = buffer.slice(m.index + m[0].length);
    }
    if (buffer.length > 1 << 20) throw new Error("event line too long");
  }
}

function dispatch(name, raw) {
  let ev;
  try {
    ev = JSON.parse(raw);
  } catch (_) {
    return;
  }
  if (!ev || typeof ev !== "object") return;
  try {
    handleEvent(ev.type || name, ev);
  } catch (err) {
    report(err);
  }
}

function handleEvent(type, ev) {
  const id = typeof ev.task_id === "string" ? ev.task_id : null;
  switch (type) {
    case "task-created": {
      if (!id || tasks.has(id)) return;
      upsertTask({
        id,
        module: ev.module,
        task_name: ev.task_name,
        title: ev.title ?? null,
        status: "pending",
        progress: 0,
        label: null,
        user_id: ev.user_id,
        organization_id: ev.organization_id,
        created_at: typeof ev.at === "number" ? ev.at : Date.now(),
      });
      if (tasks.has(id)) refreshQuietly(id);
      return;
    }
    case "status": {
      if (!id) return;
      const known = liveUpdate(id, { status: ev.status });
      // Waiting and final states carry a question or a result to fetch; an
      // unknown task may now match the filters.
      if (!known || ev.status === "waiting-confirmation" || FINAL.includes(ev.status)) refreshQuietly(id);
      return;
    }
    case "progress": {
      if (!id) return;
      const change = { progress: ev.progress };
      // A null label leaves the stored one in place.
      if (ev.label !== null && ev.label !== undefined) change.label = ev.label;
      liveUpdate(id, change);
      return;
    }
    case "confirmation-asked": {
      if (!id) return;
      const known = liveUpdate(id, {
        status: "waiting-confirmation",
        // The event carries the question's title; the dialog reads the
        // whole surface from the task when it opens.
        confirmation: { surface: { title: ev.title, components: [] }, asked_at: ev.asked_at, expires_at: null, answer: null },
      });
      if (!known) refreshQuietly(id);
      return;
    }
    case "confirmation-answered":
      if (!id) return;
      confirmationGone(id, `This question was answered by ${clean(ev.answered_by)}.`);
      if (tasks.has(id)) refreshQuietly(id);
      return;
    case "confirmation-timed-out":
      if (!id) return;
      confirmationGone(id, "This question timed out; it can no longer be answered.");
      if (tasks.has(id)) refreshQuietly(id);
      return;
    case "subprocess":
      auditChanged();
      return;
    case "reload":
      loadTasks(true).catch(report);
      auditChanged();
      return;
    default:
  }
}

// ---------------------------------------------------------------------------
// Wiring

function on(target, type, handler) {
  target.addEventListener(type, (event) => {
    try {
      const result = handler(event);
      if (result && typeof result.catch === "function") result.catch(report);
    } catch (err) {
      report(err);
    }
  });
}

function init() {
  on($("#sign-in"), "click", () => signIn($("#token").value));
  on($("#token"), "keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      return signIn($("#token").value);
    }
    return undefined;
  });
  on($("#sign-out"), "click", () => signOut());
  on($("#error"), "click", clearError);

  on($("#nav-tasks"), "click", () => showView("tasks"));
  on($("#nav-modules"), "click", () => showView("modules"));
  on($("#nav-audit"), "click", () => showView("audit"));

  on($("#filter-module"), "change", () => loadTasks(true));
  on($("#filter-status"), "change", () => loadTasks(true));
  on($("#filter-org"), "change", () => {
    restartStream();
    return loadTasks(true);
  });
  on($("#more"), "click", () => loadTasks(false));

  on($("#action-select"), "change", describeAction);
  on($("#action-run"), "click", runAction);
  on($("#action-args"), "keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      return runAction();
    }
    return undefined;
  });

  // One listener for every card's buttons, including cards added later.
  on($("#tasks"), "click", (e) => {
    const button = e.target.closest("button");
    const card = button && button.closest(".task-card");
    if (!card) return undefined;
    const id = card.dataset.taskId;
    if (button.classList.contains("details")) return openDetails(id);
    if (button.classList.contains("answer")) return openConfirmation(id);
    if (button.classList.contains("cancel")) {
      button.disabled = true;
      return cancelTask(id).finally(() => { button.disabled = false; });
    }
    return undefined;
  });

  on($("#dialog-close"), "click", () => $("#confirmation").close());
  on($("#confirmation"), "close", () => { dialog.taskId = null; });
  on($("#details-close"), "click", () => $("#details").close());
  on($("#details"), "close", () => { details.taskId = null; });

  on($("#audit-module"), "change", () => loadAudit(true));
  on($("#audit-decision"), "change", () => loadAudit(true));
  on($("#audit-capability"), "change", () => loadAudit(true));
  on($("#audit-more"), "click", () => loadAudit(false));

  describeAction();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else $("#token").focus();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
