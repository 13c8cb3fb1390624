// The MultiModule dashboard: reads the daemon's event stream
// (/api/v1/events) and shows its tasks, alerts, queues and bus. Plain
// JavaScript, no dependencies: it is embedded in the daemon's binary.
"use strict";

const TOKEN_KEY = "multimodule-token";
const LIVE = 160;     // stream samples kept per task (5 minutes at the 2 s tick)
const SPAN = 300;     // seconds a sparkline shows, when the daemon does not say
const MAX_ALERTS = 100;

const rows = new Map();     // task -> {tr, cells...}
const history = new Map();  // task -> [[seconds, handled], ...] from the stream
let pending = null;         // the action awaiting confirmation

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function notice(text, isError) {
  const n = $("notice");
  n.textContent = text;
  n.className = isError ? "error" : "";
}

function headers(extra) {
  const h = Object.assign({}, extra);
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

// --- the event stream (fetch, so that the token can go in a header) ---

async function stream() {
  let delay = 1000;
  for (;;) {
    try {
      const resp = await fetch("api/v1/events", { headers: headers(), cache: "no-store" });
      if (resp.status === 401) {
        setConn(false, "Needs the token");
        notice("This listener needs the token to be read: use “Set token”.", true);
        await waitToken();
        continue;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      setConn(true, "Live");
      delay = 1000;
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      // reconnect below
    }
    setConn(false, "Reconnecting…");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function dispatch(block) {
  let name = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const v = JSON.parse(data);
  if (name === "snapshot") render(v, true);
  else if (name === "alert") addAlert(v, true);
  else if (name === "level") levelChanged(v);
  else if (name === "error") setBus(null, v.error);
}

let tokenWaiters = [];
function waitToken() { return new Promise((r) => tokenWaiters.push(r)); }

function setConn(ok, text) {
  const c = $("conn");
  c.textContent = text;
  c.className = "pill " + (ok ? "good" : "bad");
}

// --- rendering ---

// render shows a snapshot; sample says whether its counters go into the
// sparklines (the stream's snapshots, whose times are the daemon's).
function render(snap, sample) {
  setBus(snap.bus);
  const t = Date.parse(snap.time) / 1000;
  const seen = new Set();
  const tbody = $("tasks").tBodies[0];
  for (const task of snap.tasks) {
    seen.add(task.task);
    const h = history.get(task.task) || [];
    if (sample) {
      h.push([t, task.counters.handled]);
      while (h.length > LIVE) h.shift();
      history.set(task.task, h);
    }
    let r = rows.get(task.task);
    if (!r) {
      r = newRow(task.task);
      rows.set(task.task, r);
    }
    updateRow(r, task, h);
    tbody.append(r.tr); // keeps the snapshot's order (by name)
  }
  for (const [name, r] of rows) {
    if (!seen.has(name)) { r.tr.remove(); rows.delete(name); history.delete(name); }
  }
  $("no-tasks").hidden = snap.tasks.length > 0;
  renderQueues(snap.queues);
}

function newRow(name) {
  const r = {};
  r.tr = el("tr", { "data-task": name });
  r.name = el("th", { scope: "row" }, name);
  r.where = el("td", { "data-label": "Where" });
  r.pid = el("td", { class: "opt num", "data-label": "PID" });
  r.state = el("td", { class: "state", "data-label": "State" });
  r.levels = el("td", { class: "levels" });
  r.queue = el("td", { class: "num", "data-label": "Queue" });
  r.rate = el("td", { "data-label": "Handled/s" });
  r.button = el("button", { type: "button" });
  r.button.addEventListener("click", () => ask(r.action, name));
  r.tr.append(r.name, r.where, r.pid, r.state, r.levels, r.queue, r.rate, el("td", {}, r.button));
  return r;
}

function updateRow(r, task, h) {
  r.where.textContent = task.place === "exec" ? "internal (exec)" : task.where;
  r.pid.textContent = task.pid ? String(task.pid) : "–";
  let state = task.failsafed ? "failsafed" : task.running ? "running" : "stopped";
  const detail = task.failsafed ? task.failsafe_reason : task.reason ? task.reason + (task.reason_detail ? ": " + task.reason_detail : "") : "";
  r.state.replaceChildren(state, detail ? el("span", { class: "state-detail" }, detail) : "");
  r.tr.classList.toggle("failsafed", !!task.failsafed);
  r.tr.dataset.state = state;
  const levels = Object.entries(task.alerts || {}).sort();
  if (task.failsafed) r.levels.replaceChildren(chip("failsafe", "failsafed"));
  else if (levels.length === 0) r.levels.replaceChildren(chip("ok", "ok"));
  else r.levels.replaceChildren(...levels.map(([k, lv]) => chip(lv, k.replace(/^local\./, "") + ": " + lv)));
  r.queue.textContent = String(task.queue_depth);
  r.rate.replaceChildren(...sparkline(task.rate_history, h));
  const action = task.failsafed ? "unfailsafe" : "failsafe";
  if (r.action !== action) {
    r.action = action;
    r.button.textContent = task.failsafed ? "Unfailsafe" : "Failsafe";
    r.button.className = task.failsafed ? "" : "danger";
    r.button.setAttribute("aria-label", (task.failsafed ? "Unfailsafe " : "Failsafe ") + task.task);
  }
}

function chip(level, text) {
  const known = ["ok", "warn", "severe", "failsafe"].includes(level) ? level : "warn";
  return el("span", { class: "chip lvl-" + known }, text);
}

// rates lists [seconds, rate] points: the daemon's history (rh: a rate
// per step, the newest ending at rh.end), then the rates between the
// stream's own samples (h) taken after it, for the live updates.
function rates(rh, h) {
  const pts = [];
  let end = 0;
  if (rh && Array.isArray(rh.per_sec) && rh.per_sec.length && rh.step_s > 0) {
    end = rh.end;
    const n = rh.per_sec.length;
    rh.per_sec.forEach((v, i) => pts.push([end - (n - 1 - i) * rh.step_s, v]));
  }
  for (let i = 1; i < h.length; i++) {
    if (h[i - 1][0] < end) continue; // the daemon's history covers it
    const dt = h[i][0] - h[i - 1][0];
    const dn = h[i][1] - h[i - 1][1];
    pts.push([h[i][0], dt > 0 && dn >= 0 ? dn / dt : 0]);
  }
  return pts;
}

// sparkline draws the handled-message rate over the last minutes: the
// daemon's rate history, continued by the stream's live samples.
function sparkline(rh, h) {
  const span = rh && rh.step_s > 0 ? rh.step_s * 30 : SPAN;
  let pts = rates(rh, h);
  const now = pts.length ? pts[pts.length - 1][0] : 0;
  pts = pts.filter(([t]) => t >= now - span);
  const last = pts.length ? pts[pts.length - 1][1] : 0;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 20");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  if (pts.length > 1) {
    const top = Math.max(...pts.map(([, v]) => v), 1e-9);
    const xy = pts.map(([t, v]) => (100 - 100 * (now - t) / span).toFixed(1) + "," + (19 - 18 * v / top).toFixed(1));
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("points", xy.join(" "));
    svg.append(pl);
  }
  return [svg, el("span", { class: "rate" }, fmtRate(last) + "/s")];
}

function fmtRate(v) { return v >= 100 ? Math.round(v).toString() : v.toFixed(v >= 10 ? 1 : 2); }

function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}

function renderQueues(queues) {
  const tbody = $("queues").tBodies[0];
  tbody.replaceChildren(...queues.map((q) => {
    const bar = el("span", { class: "bar", role: "presentation" }, el("span"));
    bar.firstChild.style.width = Math.min(100, q.percent_full).toFixed(1) + "%";
    return el("tr", {},
      el("th", { scope: "row" }, q.name),
      el("td", { class: "num" }, String(q.waiting)),
      el("td", { class: "num opt" }, fmtBytes(q.bytes)),
      el("td", { class: "num opt" }, String(q.capacity_msgs)),
      el("td", {}, bar, q.percent_full.toFixed(1) + " %"));
  }));
}

function setBus(bus, err) {
  const b = $("bus");
  if (!bus) { b.textContent = "Bus: " + err; b.className = "pill bad"; return; }
  let text = "Bus: " + (bus.connected ? "connected" : "disconnected");
  if (bus.reconnects) text += ", " + bus.reconnects + " reconnects";
  text += ", " + bus.dead_letters + " dead letters";
  if (bus.error) text += " (" + bus.error + ")";
  b.textContent = text;
  b.className = "pill " + (bus.connected && !bus.error && !bus.dead_letters ? "good" : "bad");
}

function addAlert(a, live) {
  const list = $("alerts");
  const when = new Date(a.time * 1000);
  const level = a.unfailsafe ? "ok" : a.level || "warn";
  const li = el("li", { "data-task": a.task, "data-level": level },
    el("time", { datetime: when.toISOString() }, when.toLocaleTimeString()),
    chip(level, a.unfailsafe ? "unfailsafe" : level), " ", a.text);
  list.prepend(li);
  while (list.children.length > MAX_ALERTS) list.lastChild.remove();
  $("no-alerts").hidden = true;
  if (live) refreshSoon();
}

function levelChanged(v) {
  // The next snapshot shows the levels; ask for it now.
  refreshSoon();
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try {
      const [t, q, b] = await Promise.all(["tasks", "queues", "bus"].map((p) =>
        fetch("api/v1/" + p, { headers: headers(), cache: "no-store" }).then((r) => r.ok ? r.json() : Promise.reject(r.status))));
      render({ time: new Date().toISOString(), tasks: t, queues: q, bus: b }, false);
    } catch (e) { /* the stream's next snapshot will do */ }
  }, 200);
}

// --- actions ---

function ask(action, name) {
  if (!token()) {
    pending = { action, name };
    openToken();
    return;
  }
  pending = { action, name };
  $("confirm-text").textContent = action === "failsafe"
    ? "Failsafe " + name + "? Its process is stopped and its messages wait in its queue until it is unfailsafed."
    : "Unfailsafe " + name + "? It starts again and handles the messages that waited.";
  $("reason-row").hidden = action !== "failsafe";
  $("confirm-ok").textContent = action === "failsafe" ? "Failsafe " + name : "Unfailsafe " + name;
  $("confirm-ok").className = action === "failsafe" ? "danger" : "";
  $("confirm-dialog").returnValue = "";
  $("confirm-dialog").showModal();
}

async function act(action, name, reason) {
  try {
    const resp = await fetch("api/v1/tasks/" + encodeURIComponent(name) + "/" + action, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(action === "failsafe" ? { reason } : {}),
    });
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) {
      notice(name + ": " + body.result + ".", false);
      refreshSoon();
    } else if (resp.status === 401) {
      notice(name + ": " + (body.error || "refused") + ". Set the token and try again.", true);
      sessionStorage.removeItem(TOKEN_KEY);
    } else {
      notice(name + ": " + (body.error || "HTTP " + resp.status), true);
    }
  } catch (e) {
    notice(name + ": " + e, true);
  }
}

function openToken() {
  $("token-input").value = "";
  $("token-dialog").returnValue = "";
  $("token-dialog").showModal();
}

// loadAlerts shows the alerts the daemon kept (those raised before the
// page was opened).
function loadAlerts() {
  fetch("api/v1/alerts", { headers: headers(), cache: "no-store" })
    .then((r) => r.ok ? r.json() : [])
    .then((list) => list.forEach((a) => addAlert(a, false)))
    .catch(() => {});
}

function init() {
  $("token-button").addEventListener("click", openToken);
  $("token-dialog").addEventListener("close", () => {
    const d = $("token-dialog");
    if (d.returnValue === "save" && $("token-input").value.trim()) {
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      notice("Token kept for this tab.", false);
      tokenWaiters.splice(0).forEach((r) => r());
      if (!$("alerts").children.length) loadAlerts();
      if (pending) { const p = pending; pending = null; ask(p.action, p.name); }
    } else {
      pending = null;
    }
  });
  $("confirm-dialog").addEventListener("close", () => {
    const d = $("confirm-dialog");
    const p = pending;
    pending = null;
    if (d.returnValue === "ok" && p) act(p.action, p.name, $("reason-input").value);
  });
  loadAlerts();
  stream();
}

init();
