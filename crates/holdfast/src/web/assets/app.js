// holdfast dashboard: the status snapshot, refreshed whenever the live event stream
// (server-sent events) says something happened; controls POST to /control with the
// token kept in this tab's sessionStorage. No framework, no build step.
"use strict";

const TOKEN_KEY = "holdfast-token";
const MAX_EVENTS = 300;
const SPARK_POINTS = 24;
const LEVEL = { ok: 2, degraded: 1, unhealthy: 0 };
const BAD_KINDS = new Set(["exited", "gave_up", "escalated", "crash_reported", "core_dumped",
  "watchdog_timeout", "start_timed_out", "rolled_back", "upgrade_refused", "stop_abandoned"]);
const GOOD_KINDS = new Set(["became_ready", "started", "upgraded"]);

const ui = {
  status: null,
  fetchedAt: 0,
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  selected: null,
  health: new Map(), // service -> [{seq, level}]
  pending: new Set(),
  // service -> the verb whose /control answer it waits for (up to 90 s).
  waiting: new Map(),
};

const $ = (sel, el = document) => el.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function clock(rfc3339) {
  return (rfc3339 || "").slice(11, 23);
}

// --- token -------------------------------------------------------------------

function takeTokenFromFragment() {
  const m = location.hash.match(/token=([0-9a-fA-F]+)/);
  if (!m) return;
  setToken(m[1]);
  // Out of the address bar (and of screenshots and shared links).
  history.replaceState(null, "", location.pathname + location.search);
}

function setToken(token) {
  ui.token = token.trim();
  if (ui.token) sessionStorage.setItem(TOKEN_KEY, ui.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  renderLock();
  renderServices();
  refreshCrashes();
  refreshLog();
}

// Logs and crash reports hold what services print: the server shows them with the token.
const LOCKED_TEXT = "enter the token to read logs and crash reports";

function authHeaders() {
  return ui.token ? { Authorization: "Bearer " + ui.token } : {};
}

function renderLock() {
  const lock = $("#lock");
  const unlocked = Boolean(ui.token);
  lock.textContent = unlocked ? "controls enabled" : "read-only";
  lock.className = "lock " + (unlocked ? "unlocked" : "locked");
  $("#token").hidden = unlocked;
  $("#token-save").hidden = unlocked;
  $("#token-forget").hidden = !unlocked;
}

// --- notices -----------------------------------------------------------------

let noticeTimer = null;
function notice(text, kind = "ok") {
  const n = $("#notice");
  n.textContent = text;
  n.className = "notice " + kind;
  n.dataset.kind = kind;
  n.hidden = false;
  clearTimeout(noticeTimer);
  // A pending notice stays until its answer replaces it.
  if (kind !== "pending") noticeTimer = setTimeout(() => { n.hidden = true; }, kind === "ok" ? 6000 : 15000);
}

// --- control -----------------------------------------------------------------

const DOING = { start: "starting", stop: "stopping", restart: "restarting", upgrade: "upgrading" };

// start, stop and restart are answered once the service got there (up to 90 s): until
// then the service's buttons are disabled, so that a second click sends no second request.
async function control(verb, service) {
  if (ui.waiting.has(service)) return;
  ui.waiting.set(service, verb);
  renderServices();
  notice(`${DOING[verb] || verb} ${service}…`, "pending");
  try {
    await send(verb, service);
  } finally {
    ui.waiting.delete(service);
    renderServices();
  }
}

async function send(verb, service) {
  const headers = { "Content-Type": "application/json", ...authHeaders() };
  let answer, body;
  try {
    answer = await fetch("/control", {
      method: "POST", headers, body: JSON.stringify({ verb, services: [service] }),
    });
    body = await answer.json().catch(() => ({}));
  } catch (e) {
    notice(`${verb} ${service}: holdfast did not answer (${e})`, "error");
    return;
  }
  if (answer.status === 401) {
    notice(`refused: ${verb} ${service} needs the token — ${body.error ? body.error.message : "401"}`, "refused");
    return;
  }
  // A waited verb (start, stop, restart) was applied even when a service then failed or
  // took too long (502/504): the outcomes say how it ended, and a non-done one is an error.
  const outcomes = body.outcomes || [];
  const missed = outcomes.filter((o) => o.verdict !== "done");
  if (missed.length > 0) {
    const said = missed.map((o) => `${o.name}: ${o.verdict === "timed_out" ? "timed out, " : ""}${o.message}`);
    notice(`${verb} ${service} failed: ${said.join("; ")}`, "error");
    scheduleStatus();
    return;
  }
  if (!answer.ok) {
    notice(`${verb} ${service} failed: ${body.error ? body.error.message : answer.status}`, "error");
    return;
  }
  const said = (outcomes.length > 0 ? outcomes : body.replies || []).map((r) => r.message).filter(Boolean).join("; ");
  notice(`${verb} ${service}: ${said || "accepted"}`, "ok");
  scheduleStatus();
}

// --- services ----------------------------------------------------------------

function levelOf(service) {
  return service.health ? service.health.state : null;
}

function spark(name, current) {
  const points = (ui.health.get(name) || []).slice(-SPARK_POINTS).map((p) => p.level);
  if (current && (points.length === 0 || points[points.length - 1] !== current)) points.push(current);
  const w = 84, h = 20, pad = 3;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.dataset.points = points.join(",");
  if (points.length === 0) return svg;
  const step = points.length > 1 ? (w - 2 * pad) / (points.length - 1) : 0;
  const y = (level) => pad + (2 - LEVEL[level]) * ((h - 2 * pad) / 2);
  const coords = points.map((lvl, i) => [pad + i * step, y(lvl)]);
  const line = document.createElementNS(svg.namespaceURI, "polyline");
  line.setAttribute("points", coords.map((c) => c.join(",")).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#5b6b7d");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  coords.forEach(([cx, cy], i) => {
    const dot = document.createElementNS(svg.namespaceURI, "circle");
    dot.setAttribute("cx", cx);
    dot.setAttribute("cy", cy);
    dot.setAttribute("r", i === coords.length - 1 ? 3 : 2);
    dot.style.fill = `var(--${points[i]})`;
    svg.append(dot);
  });
  return svg;
}

function actionButton(verb, service, enabled = true, why = null) {
  const locked = !ui.token;
  const waiting = ui.waiting.get(service.name);
  return el("button", {
    type: "button",
    class: locked ? "locked" : null,
    "data-verb": verb,
    "data-service": service.name,
    "data-waiting": waiting === verb ? "yes" : null,
    title: !enabled ? why : waiting ? `waiting for the answer to ${waiting}`
      : locked ? "read-only: enter the token to use the controls" : `${verb} ${service.name}`,
    disabled: !enabled || Boolean(waiting),
    onclick: (e) => { e.stopPropagation(); control(verb, service.name); },
  }, verb);
}

function serviceRow(s, now) {
  const level = levelOf(s);
  const elapsed = now - ui.fetchedAt;
  const uptime = s.uptime_ms === undefined || s.uptime_ms === null ? null : s.uptime_ms + elapsed;
  const state = s.state;
  const row = el("tr", {
    "data-service": s.name,
    "data-state": state,
    class: ui.selected === s.name ? "selected" : null,
    onclick: () => selectService(s.name),
  },
  el("td", {},
    el("div", { class: "name", text: s.name }),
    el("div", { class: "sub", text: s.status_text || (s.group ? "@" + s.group : "") })),
  el("td", {},
    el("span", { class: `badge ${state}`, text: state }),
    s.reason ? el("div", { class: "sub", title: s.reason, text: s.reason }) : null),
  el("td", {}, el("div", { class: "health" },
    el("span", { class: "level " + (level || "none"), text: level || "—" }),
    level ? spark(s.name, level) : null)),
  el("td", { class: "pid", text: s.pid === null || s.pid === undefined ? "—" : String(s.pid) }),
  el("td", { class: "num restarts", text: String(s.restarts) }),
  el("td", { class: "num uptime", "data-uptime": uptime === null ? "" : String(uptime), text: duration(uptime) }),
  el("td", {},
    s.last_exit
      ? el("div", { class: "sub", title: s.last_exit.description, text: `${s.last_exit.description}, ${duration(s.last_exit.ago_ms + elapsed)} ago` })
      : el("span", { class: "sub", text: "—" })),
  el("td", {}, el("div", { class: "actions" },
    actionButton("start", s),
    actionButton("stop", s),
    actionButton("restart", s),
    actionButton("upgrade", s, Boolean(s.upgrade), "no [upgrade] section in its config"))));
  return row;
}

function renderServices() {
  const status = ui.status;
  if (!status) return;
  const d = status.daemon;
  const now = Date.now();
  $("#daemon").replaceChildren(
    el("b", { text: `pid ${d.pid}` }), ` · v${d.version} · up ${duration(d.uptime_ms + now - ui.fetchedAt)}`,
    d.shutting_down ? " · shutting down" : "", ` · ${d.config}`);
  const body = $("#services tbody");
  body.replaceChildren(...status.services.map((s) => serviceRow(s, now)));
  const counts = {};
  for (const s of status.services) counts[s.state] = (counts[s.state] || 0) + 1;
  $("#summary").textContent = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(" · ");
  const select = $("#log-service");
  const names = status.services.map((s) => s.name);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  }
  if (!ui.selected && names.length) selectService(names[0]);
  else if (ui.selected) select.value = ui.selected;
}

function tickUptimes() {
  if (!ui.status) return;
  // Only the clocks move between snapshots.
  const elapsed = Date.now() - ui.fetchedAt;
  const d = ui.status.daemon;
  const daemon = $("#daemon");
  if (daemon.childNodes[1]) daemon.childNodes[1].textContent = ` · v${d.version} · up ${duration(d.uptime_ms + elapsed)}`;
  for (const s of ui.status.services) {
    const cell = $(`tr[data-service="${CSS.escape(s.name)}"] .uptime`);
    if (cell && s.uptime_ms !== null && s.uptime_ms !== undefined) cell.textContent = duration(s.uptime_ms + elapsed);
  }
}

let statusTimer = null;
function scheduleStatus() {
  clearTimeout(statusTimer);
  statusTimer = setTimeout(refreshStatus, 120);
}

async function refreshStatus() {
  try {
    const answer = await fetch("/api/status", { cache: "no-store" });
    if (!answer.ok) throw new Error(answer.status);
    ui.status = await answer.json();
    ui.fetchedAt = Date.now();
    renderServices();
  } catch (e) {
    $("#daemon").textContent = `status unavailable (${e.message || e})`;
  }
}

// --- events ------------------------------------------------------------------

function noteHealth(record) {
  if (record.kind !== "health_changed" || !record.service) return;
  const list = ui.health.get(record.service) || [];
  if (list.length === 0 && record.data.from) list.push({ seq: record.seq - 0.5, level: record.data.from });
  list.push({ seq: record.seq, level: record.data.to });
  ui.health.set(record.service, list.slice(-SPARK_POINTS));
}

function eventRow(record, fresh) {
  const cls = [BAD_KINDS.has(record.kind) ? "bad" : GOOD_KINDS.has(record.kind) ? "good" : "", fresh ? "fresh" : ""].join(" ").trim();
  return el("li", { class: cls || null, "data-seq": record.seq, "data-kind": record.kind, "data-service": record.service || "" },
    el("span", { class: "time", text: clock(record.time) }),
    el("span", { class: "svc", text: record.service || "holdfast" }),
    el("span", { class: "kind", text: record.kind }),
    el("span", { class: "msg", title: record.message, text: record.message }));
}

function addEvent(record, fresh) {
  noteHealth(record);
  const list = $("#events");
  list.prepend(eventRow(record, fresh));
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  if (record.kind === "crash_reported" || record.kind === "core_dumped") refreshCrashes();
  if (record.service && record.service === ui.selected) scheduleLog();
  scheduleStatus();
}

function connect() {
  const live = $("#live");
  const source = new EventSource("/api/events?last=" + MAX_EVENTS);
  // The backlog comes first; the server marks its end (`caught_up`): what follows is news.
  let replaying = true;
  source.onopen = () => {
    live.className = "live on";
    live.querySelector(".label").textContent = "live";
    replaying = true;
    // Whatever happened while the stream was down shows in the snapshot.
    refreshStatus();
  };
  source.onmessage = (m) => {
    const record = JSON.parse(m.data);
    addEvent(record, !replaying);
  };
  source.addEventListener("caught_up", () => { replaying = false; });
  // The server could not give every event since the last one seen: holdfast restarted
  // (its events are numbered anew) or some were no longer kept.
  source.addEventListener("gap", (m) => {
    const reason = JSON.parse(m.data || "{}").reason;
    if (reason === "restarted") {
      $("#events").replaceChildren();
      ui.health.clear();
    }
    refreshStatus();
    refreshCrashes();
  });
  source.onerror = () => {
    live.className = "live off";
    live.querySelector(".label").textContent = "reconnecting";
    // EventSource reconnects by itself, sending the last id it saw.
  };
}

// --- crashes -----------------------------------------------------------------

async function refreshCrashes() {
  const list = $("#crashes");
  if (!ui.token) {
    list.replaceChildren(el("li", { class: "empty locked-text", text: LOCKED_TEXT }));
    $("#crash").hidden = true;
    return;
  }
  try {
    const answer = await fetch("/api/crashes", { cache: "no-store", headers: authHeaders() });
    const body = await answer.json();
    if (answer.status === 401) {
      list.replaceChildren(el("li", { class: "empty locked-text", text: `${LOCKED_TEXT}: ${body.error.message}` }));
      return;
    }
    const crashes = body.crashes || [];
    if (crashes.length === 0) {
      list.replaceChildren(el("li", { class: "empty", text: "none" }));
      return;
    }
    list.replaceChildren(...crashes.slice(0, 50).map((c) => el("li", {
      "data-id": c.id, onclick: () => showCrash(c.id),
    }, el("span", { class: "when", text: c.time.slice(5, 19).replace("T", " ") }),
    el("span", { class: "svc", text: c.service }),
    el("span", { text: c.summary }))));
  } catch (e) {
    /* the next event tries again */
  }
}

async function showCrash(id) {
  const box = $("#crash");
  for (const li of document.querySelectorAll("#crashes li")) li.classList.toggle("selected", li.dataset.id === id);
  const answer = await fetch("/api/crashes/" + encodeURIComponent(id), { cache: "no-store", headers: authHeaders() });
  const r = await answer.json();
  if (!answer.ok) { box.replaceChildren(el("p", { text: r.error ? r.error.message : "not found" })); box.hidden = false; return; }
  const sections = [
    el("h3", { text: `${r.service} · pid ${r.pid} · ${r.status}` }),
    el("div", { class: "sub", text: `${r.time} · ${r.kind} · ${r.cause} · ${r.restarts} restarts before` }),
    el("div", { class: "sub", text: r.summary }),
  ];
  if (r.stack && r.stack.length) sections.push(el("pre", { class: "stack", text: r.stack.join("\n") }));
  if (r.core && r.core.backtrace && r.core.backtrace.length) sections.push(el("pre", { text: r.core.backtrace.join("\n") }));
  if (r.log && r.log.length) sections.push(el("pre", { text: r.log.join("\n") }));
  box.replaceChildren(...sections);
  box.hidden = false;
}

// --- logs --------------------------------------------------------------------

function selectService(name) {
  ui.selected = name;
  for (const tr of document.querySelectorAll("#services tbody tr")) tr.classList.toggle("selected", tr.dataset.service === name);
  $("#log-service").value = name;
  refreshLog();
}

let logTimer = null;
function scheduleLog() {
  clearTimeout(logTimer);
  logTimer = setTimeout(refreshLog, 300);
}

function logLine(text) {
  // `<stamp 24> <tag 8> text`
  const stamp = text.slice(0, 24);
  const tag = text.slice(25, 33).trim();
  return el("div", { class: tag },
    el("span", { class: "stamp", text: stamp.slice(11, 23) + " " }),
    text.slice(34));
}

async function refreshLog() {
  const name = ui.selected;
  if (!name) return;
  const pre = $("#log");
  if (!ui.token) {
    pre.replaceChildren(el("div", { class: "locked-text", text: LOCKED_TEXT }));
    pre.dataset.service = "";
    return;
  }
  try {
    const answer = await fetch(`/api/logs/${encodeURIComponent(name)}?n=200`, { cache: "no-store", headers: authHeaders() });
    const body = await answer.json();
    if (name !== ui.selected) return;
    if (!answer.ok) {
      pre.replaceChildren(el("div", { class: "locked-text", text: body.error ? body.error.message : String(answer.status) }));
      pre.dataset.service = "";
      return;
    }
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.replaceChildren(...(body.lines || []).map((l) => logLine(l.line)));
    if (atBottom || pre.dataset.service !== name) pre.scrollTop = pre.scrollHeight;
    pre.dataset.service = name;
  } catch (e) {
    pre.textContent = `log unavailable (${e})`;
  }
}

// --- start -------------------------------------------------------------------

function init() {
  takeTokenFromFragment();
  renderLock();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("#token").value);
    $("#token").value = "";
  });
  $("#token-forget").addEventListener("click", () => setToken(""));
  $("#log-service").addEventListener("change", (e) => selectService(e.target.value));
  $("#log-refresh").addEventListener("click", refreshLog);
  refreshStatus();
  refreshCrashes();
  connect();
  setInterval(tickUptimes, 1000);
}

init();
