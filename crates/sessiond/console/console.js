// sessiond admin console: plain JavaScript, no build step. It talks to the API through
// the same-origin proxy /admin/api/..., so the page never holds the credential.
"use strict";

const state = { role: null, app: null, current: null, sessions: [], sort: { key: "created_at", dir: 1 }, source: null };

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { "X-Sessiond-Console": "1" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch("/admin/api" + path, opts);
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    if (resp.status === 401) { location.href = "/admin"; }
    const err = new Error((data && data.message) || resp.statusText);
    err.status = resp.status;
    err.code = data && data.error;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const fmtTime = (t) => (t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");
const shortTime = (t) => (t ? t.slice(11, 19) : "–");

function timeLeft(expires) {
  if (!expires) return "–";
  let s = Math.round((Date.parse(expires) - Date.now()) / 1000);
  if (s <= 0) return "due";
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

// What the operator's own action did (kept until the next action).
function say(text) {
  document.getElementById("status").textContent = text;
}

// What just happened in the app, from its event stream.
function feed(text) {
  document.getElementById("live").textContent = text;
}

// ---------- apps overview ----------

function chart(sessions) {
  // Opens and closes per 5 minutes over the last hour, as an inline SVG bar chart.
  const now = Date.now(), slot = 5 * 60 * 1000, n = 12;
  const opens = new Array(n).fill(0), closes = new Array(n).fill(0);
  for (const s of sessions) {
    const o = Math.floor((now - Date.parse(s.created_at)) / slot);
    if (o >= 0 && o < n) opens[n - 1 - o]++;
    if (s.closed_at) {
      const c = Math.floor((now - Date.parse(s.closed_at)) / slot);
      if (c >= 0 && c < n) closes[n - 1 - c]++;
    }
  }
  const max = Math.max(1, ...opens, ...closes);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 240 60");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Last hour: ${opens.reduce((a, b) => a + b, 0)} opened, ${closes.reduce((a, b) => a + b, 0)} closed`);
  for (let i = 0; i < n; i++) {
    for (const [k, v] of [[0, opens[i]], [1, closes[i]]]) {
      const r = document.createElementNS(ns, "rect");
      const h = (v / max) * 50;
      r.setAttribute("x", i * 20 + 2 + k * 8);
      r.setAttribute("y", 55 - h);
      r.setAttribute("width", 7);
      r.setAttribute("height", Math.max(h, 0.5));
      r.setAttribute("class", k ? "closes" : "opens");
      svg.append(r);
    }
  }
  return svg;
}

async function appCard(app) {
  const total = app.seats.total;
  const used = app.seats.used;
  const lic = app.license;
  let recent = [];
  try {
    recent = (await api("GET", `/v1/apps/${encodeURIComponent(app.name)}/sessions?status=any&order=desc&limit=1000`)).sessions;
  } catch (e) { /* the chart stays empty */ }
  return el("article", { class: "card", "aria-label": `App ${app.name}` },
    el("h3", {}, app.name),
    el("p", { class: "seats" },
      el("label", { for: `gauge-${app.name}` }, "Seats "),
      total === null
        ? el("span", { id: `gauge-${app.name}` }, `${used} used (unlimited)`)
        : [el("meter", { id: `gauge-${app.name}`, min: 0, max: total, value: used, high: Math.max(total - 1, 0.5) }, `${used}/${total}`),
           el("span", {}, ` ${used}/${total}`)]),
    el("p", {}, `Open sessions: ${app.open}`),
    lic ? el("p", { class: lic.status === "valid" ? "" : "error" },
      lic.status === "invalid" ? `License invalid: ${lic.message}` : `Licensed to ${lic.licensee}, ${lic.status === "expired" ? "expired" : "until"} ${lic.expires}`) : null,
    el("figure", {}, chart(recent), el("figcaption", {}, el("span", { class: "key opens" }, "opened"), " / ", el("span", { class: "key closes" }, "closed"), ", last hour")),
    el("button", { onclick: () => { location.hash = "app=" + encodeURIComponent(app.name); } }, `Manage ${app.name}`));
}

async function showApps() {
  document.getElementById("app").hidden = true;
  document.getElementById("apps").hidden = false;
  if (state.source) { state.source.close(); state.source = null; }
  const apps = state.role === "admin" ? (await api("GET", "/v1/apps")).apps : [await api("GET", `/v1/apps/${encodeURIComponent(state.app)}`)];
  const cards = document.getElementById("app-cards");
  cards.replaceChildren(...(await Promise.all(apps.map(appCard))));
}

// ---------- one app ----------

function sortKey(s, key) {
  if (key === "label") return s.client.label || "";
  if (key === "ip") return s.client.ip || "";
  return s[key] || "";
}

// Whether an open session with a seat lease has stopped beating: its seat is held,
// "away", until the lease ends (expires_at), for its own client to come back.
// (Times are the server's; the browser's clock is trusted to be near it.)
function awayAfter(s) {
  const h = s.heartbeat;
  if (s.status !== "open" || !h || !h.active || !h.lease_s) return "";
  return String(Date.parse(s.last_heartbeat_at) + (h.interval_s + h.grace_s) * 1000);
}
function away(s) {
  const t = awayAfter(s);
  return t !== "" && Date.now() > Number(t);
}

function renderSessions() {
  const { key, dir } = state.sort;
  const rows = [...state.sessions].sort((a, b) => (sortKey(a, key) < sortKey(b, key) ? -dir : sortKey(a, key) > sortKey(b, key) ? dir : 0));
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren(...rows.map((s) => el("tr", { "data-id": s.id },
    el("td", {}, s.user || "(guest)"),
    el("td", {}, s.client.label || "–"),
    el("td", {}, s.client.ip || "–"),
    el("td", {}, fmtTime(s.created_at)),
    el("td", {}, fmtTime(s.last_activity_at)),
    el("td", { class: "beat", "data-away-after": awayAfter(s) }, fmtTime(s.last_heartbeat_at), " ", el("span", { class: "badge away", title: "Its beats stopped: the seat is held for it until its lease ends", hidden: !away(s) }, "away")),
    el("td", { class: "left", "data-expires": s.expires_at || "" }, s.status === "open" ? timeLeft(s.expires_at) : s.reason),
    el("td", {}, s.privileges.join(", ") || "–"),
    el("td", {}, s.status === "open"
      ? el("button", { class: "danger", "aria-label": `Disconnect ${s.user || "guest"} ${s.client.label || ""}`.trim(), onclick: () => kill(s) }, "Disconnect")
      : ""))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No sessions.")));
  for (const b of document.querySelectorAll("#sessions th button")) {
    const active = b.dataset.sort === key;
    b.parentElement.setAttribute("aria-sort", active ? (dir > 0 ? "ascending" : "descending") : "none");
  }
}

async function loadSessions() {
  const app = state.current;
  const user = document.getElementById("filter-user").value.trim();
  const status = document.getElementById("filter-status").value;
  const q = new URLSearchParams({ status, limit: "1000" });
  if (user) q.set("user", user);
  state.sessions = (await api("GET", `/v1/apps/${encodeURIComponent(app)}/sessions?${q}`)).sessions;
  // "Log out everywhere" belongs to one user's sessions: shown once the filter names one.
  const button = document.getElementById("logout-user");
  button.hidden = !user;
  button.textContent = user ? `Log ${user} out everywhere` : "Log out everywhere";
  renderSessions();
}

async function logoutUser() {
  const user = document.getElementById("filter-user").value.trim();
  if (!user) return;
  const body = el("p", {}, `Every open session of ${user} in ${state.current} closes at once, as closed_all by you; their clients are told.`);
  if (!(await confirmDialog(`Log ${user} out everywhere?`, body, "Log out"))) return;
  try {
    const r = await api("POST", `/v1/apps/${encodeURIComponent(state.current)}/sessions/close-all`, { user });
    say(`Logged ${user} out of ${r.closed} session${r.closed === 1 ? "" : "s"}.`);
  } catch (e) { say(`Could not log ${user} out: ${e.message}`); }
  await loadSessions();
}

async function loadHistory() {
  const rows = (await api("GET", `/v1/apps/${encodeURIComponent(state.current)}/sessions?status=closed&order=desc&limit=200`)).sessions;
  const body = document.querySelector("#history tbody");
  body.replaceChildren(...rows.map((s) => el("tr", { "data-id": s.id },
    el("td", {}, s.user || "(guest)"), el("td", {}, s.client.label || "–"), el("td", {}, s.client.ip || "–"),
    el("td", {}, fmtTime(s.created_at)), el("td", {}, fmtTime(s.closed_at)),
    el("td", { class: "reason" }, s.reason), el("td", { class: "by" }, s.closed_by))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "Nothing closed yet.")));
}

// The app's webhooks: what the store still holds for them (docs/HOOKS.md), with the
// last error of each, and a button to send one again (a dead letter, say).
async function loadDeliveries() {
  const app = encodeURIComponent(state.current);
  const hooks = (await api("GET", `/v1/apps/${app}/hooks`)).hooks;
  const rows = (await api("GET", `/v1/apps/${app}/hooks/deliveries?state=any&limit=200`)).deliveries;
  const dead = rows.filter((d) => d.dead).length;
  document.getElementById("hooks-summary").textContent = hooks.length
    ? `${hooks.length} webhook${hooks.length === 1 ? "" : "s"} (${hooks.map((h) => `${h.name} → ${h.url}`).join(", ")}); ${rows.length - dead} waiting, ${dead} dead letter${dead === 1 ? "" : "s"}.`
    : "This app has no webhooks (they are set in the configuration file).";
  const body = document.querySelector("#deliveries tbody");
  body.replaceChildren(...rows.map((d) => el("tr", { "data-id": d.id, class: d.dead ? "dead" : "" },
    el("td", {}, d.hook), el("td", {}, d.event), el("td", {}, fmtTime(d.created_at)), el("td", {}, d.tries),
    el("td", { class: "state" }, d.dead ? "dead letter" : `next try ${shortTime(d.due)}`),
    el("td", { class: "error" }, d.error || "–"),
    el("td", {}, el("button", { class: "quiet", "aria-label": `Send ${d.event} to ${d.hook} again`, onclick: () => resend(d) }, "Send again")))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "Nothing waiting: every event was delivered.")));
}

async function resend(d) {
  const status = document.getElementById("hooks-status");
  try {
    await api("POST", `/v1/apps/${encodeURIComponent(state.current)}/hooks/deliveries/${d.id}/resend`);
    status.textContent = `The ${d.event} event is sent to ${d.hook} again.`;
  } catch (e) { status.textContent = `Could not send it again: ${e.message}`; }
  await loadDeliveries();
}

function confirmDialog(title, body, okText) {
  const d = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").replaceChildren(body);
  document.getElementById("confirm-ok").textContent = okText;
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

async function kill(s) {
  const who = `${s.user || "guest"}${s.client.label ? " on " + s.client.label : ""}`;
  if (!(await confirmDialog(`Disconnect ${who}?`, el("p", {}, "The client is told at once and its session is closed as killed."), "Disconnect"))) return;
  try {
    await api("DELETE", `/v1/sessions/${s.id}`);
    say(`Disconnected ${who}.`);
  } catch (e) { say(`Could not disconnect: ${e.message}`); }
  await loadSessions();
}

async function closeAll() {
  const open = (await api("GET", `/v1/apps/${encodeURIComponent(state.current)}/sessions?status=open&limit=1000`)).sessions;
  const me = document.getElementById("me").value.trim();
  const count = el("p", { class: "count", "aria-live": "polite" });
  const boxes = open.map((s) => el("input", { type: "checkbox", value: s.id, id: `keep-${s.id}`, checked: me && s.user === me }));
  const update = () => {
    const n = boxes.filter((b) => !b.checked).length;
    count.textContent = `${n} session${n === 1 ? "" : "s"} will be disconnected.`;
  };
  boxes.forEach((b) => b.addEventListener("change", update));
  update();
  const body = el("div", {}, el("p", {}, "Keep these sessions open:"),
    el("ul", { class: "keep" }, open.map((s, i) => el("li", {}, boxes[i], " ", el("label", { for: boxes[i].id }, `${s.user || "(guest)"} ${s.client.label || ""} ${s.client.ip || ""}`)))),
    count);
  if (!(await confirmDialog("Disconnect everyone except…", body, "Disconnect"))) return;
  const except = boxes.filter((b) => b.checked).map((b) => b.value);
  try {
    const r = await api("POST", `/v1/apps/${encodeURIComponent(state.current)}/sessions/close-all`, { except });
    say(`Disconnected ${r.closed} session${r.closed === 1 ? "" : "s"}.`);
  } catch (e) { say(`Could not disconnect: ${e.message}`); }
  await loadSessions();
}

let reloadTimer = null;
function scheduleReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => { loadSessions(); if (!document.getElementById("panel-history").hidden) loadHistory(); }, 150);
}

function listen(app) {
  if (state.source) state.source.close();
  const src = new EventSource(`/admin/api/v1/apps/${encodeURIComponent(app)}/events`);
  const note = (verb) => (ev) => {
    const d = JSON.parse(ev.data);
    feed(`${d.user || "a guest"} ${verb}${d.reason ? " (" + d.reason + ")" : ""} at ${shortTime(d.at ? new Date(d.at).toISOString() : "")}`);
    scheduleReload();
  };
  src.addEventListener("opened", note("opened a session"));
  src.addEventListener("closed", note("was disconnected"));
  src.addEventListener("privileges_changed", note("changed privileges"));
  // The browser reconnects with Last-Event-ID; when the server cannot replay what was
  // missed (another node, a restart) it says resync: read the lists again.
  src.addEventListener("resync", () => { feed("Reconnected: the lists were read again."); scheduleReload(); });
  // Open (first time, or again after a drop): what happened before it is in the lists.
  src.addEventListener("open", () => scheduleReload());
  state.source = src;
}

function selectTab(which) {
  for (const t of ["open", "history", "hooks"]) {
    document.getElementById(`tab-${t}`).setAttribute("aria-selected", String(t === which));
    document.getElementById(`panel-${t}`).hidden = t !== which;
  }
  if (which === "history") loadHistory();
  if (which === "hooks") loadDeliveries();
}

async function showApp(name) {
  state.current = name;
  document.getElementById("apps").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("app-title").textContent = `Sessions of ${name}`;
  selectTab("open");
  // Listen first, and read the list again once the stream is open: a session opened
  // between the first read and the subscription would otherwise never show.
  listen(name);
  await loadSessions();
}

async function route() {
  const m = location.hash.match(/app=([^&]+)/);
  if (m) await showApp(decodeURIComponent(m[1]));
  else await showApps();
}

document.addEventListener("DOMContentLoaded", async () => {
  const resp = await fetch("/admin/whoami", { credentials: "same-origin" });
  if (!resp.ok) { location.href = "/admin"; return; }
  const who = await resp.json();
  state.role = who.role;
  state.app = who.app;
  document.getElementById("who").textContent = who.role === "admin" ? "Signed in with the admin token" : `Signed in with the key of ${who.app}`;
  document.getElementById("me").value = localStorage.getItem("sessiond-me") || "";
  document.getElementById("me").addEventListener("change", (e) => localStorage.setItem("sessiond-me", e.target.value.trim()));
  document.getElementById("filter-user").addEventListener("input", () => scheduleReload());
  document.getElementById("filter-status").addEventListener("change", () => loadSessions());
  document.getElementById("close-all").addEventListener("click", closeAll);
  document.getElementById("logout-user").addEventListener("click", logoutUser);
  document.getElementById("tab-open").addEventListener("click", () => selectTab("open"));
  document.getElementById("tab-history").addEventListener("click", () => selectTab("history"));
  document.getElementById("tab-hooks").addEventListener("click", () => selectTab("hooks"));
  for (const b of document.querySelectorAll("#sessions th button")) {
    b.addEventListener("click", () => {
      state.sort = { key: b.dataset.sort, dir: state.sort.key === b.dataset.sort ? -state.sort.dir : 1 };
      renderSessions();
    });
  }
  setInterval(() => {
    for (const td of document.querySelectorAll("#sessions td.left[data-expires]")) {
      if (td.dataset.expires) td.textContent = timeLeft(td.dataset.expires);
    }
    // A session goes away with no event: the badge follows the clock.
    for (const td of document.querySelectorAll("#sessions td.beat[data-away-after]")) {
      const badge = td.querySelector(".badge.away");
      if (badge) badge.hidden = !(td.dataset.awayAfter && Date.now() > Number(td.dataset.awayAfter));
    }
  }, 1000);
  window.addEventListener("hashchange", route);
  await route();
});
