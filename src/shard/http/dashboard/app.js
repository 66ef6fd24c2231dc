// wshandler dashboard: plain JavaScript, no dependencies, works offline.
// The admin token lives in sessionStorage and goes out as
// `Authorization: Bearer`; the live routes are server-sent events read with
// fetch() + a body reader (EventSource cannot send that header).
"use strict";

const HISTORY = 300; // samples kept for the charts (one a second: 5 minutes)
const REFRESH_MS = 2000; // clients and topics tables
const TAIL_MAX = 200; // lines kept in the live tail

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("wshToken");
let liveAbort = null;
let tailAbort = null;
let refreshTimer = null;
let prev = null;
const series = { connections: [], ingest: [], delivery: [], store: [] };

function headers(extra) {
  return Object.assign({ Authorization: "Bearer " + token }, extra || {});
}

async function api(path, opts) {
  const o = Object.assign({}, opts || {});
  o.headers = headers(o.headers);
  const r = await fetch(path, o);
  if (r.status === 401 || r.status === 403) {
    logout("token refused (" + r.status + ")");
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

// Read a server-sent-events response: call onData with each event's data.
async function readSse(path, signal, onData) {
  const r = await fetch(path, { headers: headers(), signal });
  if (r.status === 401 || r.status === 403) {
    logout("token refused (" + r.status + ")");
    return;
  }
  if (!r.ok || !r.body) throw new Error(path + ": HTTP " + r.status);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = ev
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) onData(data);
    }
  }
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fillMap(tableId, entries, prefix) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const [k, v] of entries) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", prefix + "-" + k);
    const n = cell(String(v), "num");
    n.setAttribute("data-testid", prefix + "-count-" + k);
    tr.append(cell(k), n);
    body.append(tr);
  }
}

function chart(id, values) {
  const svg = $(id);
  const max = Math.max(1, ...values);
  const w = 300, h = 80;
  const step = w / Math.max(1, HISTORY - 1);
  const off = HISTORY - values.length;
  const pts = values
    .map((v, i) => ((off + i) * step).toFixed(1) + "," + (h - 4 - (v / max) * (h - 14)).toFixed(1))
    .join(" ");
  svg.innerHTML =
    '<polyline points="' + pts + '"></polyline>' +
    '<text x="2" y="9">max ' + fmt(max) + "</text>";
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > HISTORY) arr.shift();
}

function fmt(n) {
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function onOverview(o) {
  $("live-status").textContent = "live";
  $("live-status").className = "badge on";
  $("uptime").textContent = "up " + Math.round((o.uptimeMs || 0) / 1000) + " s";
  const set = (id, v) => ($(id).textContent = fmt(v || 0));
  set("stat-connections", o.connections);
  set("stat-ingested", o.ingested);
  set("stat-publishes", o.publishes);
  set("stat-deliveries", o.deliveries);
  set("stat-messages-in", o.messagesIn);
  set("stat-messages-out", o.messagesOut);
  set("stat-store-queue", o.storeQueueDepth);
  set("stat-records-written", o.recordsWritten);
  set("stat-commit-p50", o.commitP50Ms);
  set("stat-commit-p99", o.commitP99Ms);
  set("stat-slow-disconnects", o.slowConsumerDisconnects);
  let ingest = 0, pub = 0, delivery = 0;
  if (prev) {
    const dt = Math.max(0.001, (o.uptimeMs - prev.uptimeMs) / 1000);
    ingest = Math.max(0, (o.ingested - prev.ingested) / dt);
    pub = Math.max(0, (o.publishes - prev.publishes) / dt);
    delivery = Math.max(0, (o.deliveries - prev.deliveries) / dt);
  }
  prev = o;
  set("stat-ingest-rate", ingest);
  set("stat-publish-rate", pub);
  set("stat-delivery-rate", delivery);
  fillMap("conn-by-type", Object.entries(o.connectionsByType || {}), "type");
  fillMap("conn-by-shard", (o.connectionsByShard || []).map((v, i) => [String(i), v]), "shard");
  fillMap("errors-by-code", Object.entries(o.errorsByCode || {}), "error");
  push(series.connections, o.connections || 0);
  push(series.ingest, ingest);
  push(series.delivery, delivery);
  push(series.store, o.storeQueueDepth || 0);
  chart("chart-connections", series.connections);
  chart("chart-ingest", series.ingest);
  chart("chart-delivery", series.delivery);
  chart("chart-store", series.store);
}

async function live() {
  while (token) {
    liveAbort = new AbortController();
    try {
      await readSse("/dashboard/live", liveAbort.signal, (d) => onOverview(JSON.parse(d)));
    } catch (e) {
      if (liveAbort.signal.aborted) return;
    }
    $("live-status").textContent = "reconnecting";
    $("live-status").className = "badge off";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function clientList(j) {
  if (Array.isArray(j)) return j;
  return (j && (j.clients || j.items)) || [];
}

async function disconnect(id, btn) {
  btn.disabled = true;
  try {
    await api("/clients/" + encodeURIComponent(id) + "/disconnect", { method: "POST" });
    btn.textContent = "Disconnected";
  } catch (e) {
    btn.disabled = false;
    $("clients-error").textContent = String(e);
    $("clients-error").hidden = false;
  }
  setTimeout(refresh, 300);
}

function fillClients(list) {
  const body = $("clients").tBodies[0];
  body.replaceChildren();
  for (const c of list) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", "client-" + c.id);
    tr.dataset.clientId = c.id;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "danger";
    b.textContent = "Disconnect";
    b.setAttribute("data-testid", "disconnect-" + c.id);
    b.addEventListener("click", () => disconnect(c.id, b));
    const act = document.createElement("td");
    act.append(b);
    tr.append(
      cell(c.id),
      cell(c.clientType || "none"),
      cell(c.remoteAddress || ""),
      cell(c.connectedSince || ""),
      cell(String(c.messagesIn ?? 0), "num"),
      cell(String(c.messagesOut ?? 0), "num"),
      cell(String(c.queueBytes ?? 0), "num"),
      act
    );
    body.append(tr);
  }
  const slow = $("slow").tBodies[0];
  slow.replaceChildren();
  const sorted = list.slice().sort((a, b) => (b.queueBytes || 0) - (a.queueBytes || 0)).slice(0, 10);
  for (const c of sorted) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", "slow-" + c.id);
    tr.append(cell(c.id), cell(c.clientType || "none"), cell(String(c.queueBytes ?? 0), "num"));
    slow.append(tr);
  }
}

function fillTopics(j) {
  const list = Array.isArray(j) ? j : (j && j.topics) || [];
  const body = $("topics").tBodies[0];
  body.replaceChildren();
  for (const t of list) {
    const name = t.topic || t.name || String(t);
    const n = t.subscribers ?? t.subscriberCount ?? 0;
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", "topic-" + name);
    const td = cell(String(n), "num");
    td.setAttribute("data-testid", "topic-subscribers-" + name);
    tr.append(cell(name), td);
    body.append(tr);
  }
}

async function refresh() {
  if (!token) return;
  const type = $("clients-type").value.trim();
  const q = "?limit=500" + (type ? "&type=" + encodeURIComponent(type) : "");
  try {
    fillClients(clientList(await api("/clients" + q)));
    $("clients-error").hidden = true;
  } catch (e) {
    if (token) {
      $("clients-error").textContent = String(e);
      $("clients-error").hidden = false;
    }
  }
  try {
    const p = $("topics-prefix").value.trim();
    fillTopics(await api("/topics" + (p ? "?prefix=" + encodeURIComponent(p) : "")));
  } catch (e) {
    /* shown by the clients error already */
  }
}

function stopTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = null;
  $("tail-state").textContent = "stopped";
  $("tail-start").disabled = false;
  $("tail-stop").disabled = true;
}

async function startTail(pattern) {
  stopTail();
  const ctl = new AbortController();
  tailAbort = ctl;
  $("tail-state").textContent = "tailing " + pattern;
  $("tail-start").disabled = true;
  $("tail-stop").disabled = false;
  $("tail-log").replaceChildren();
  try {
    await readSse("/dashboard/tail?topic=" + encodeURIComponent(pattern), ctl.signal, (d) => {
      const m = JSON.parse(d);
      if (m.type === "dropped") {
        $("tail-dropped").textContent = String(m.dropped);
        return;
      }
      const li = document.createElement("li");
      li.className = "tail-entry";
      li.setAttribute("data-testid", "tail-entry");
      li.textContent = (m.timestamp || "") + " " + (m.topic || "") + " " + JSON.stringify(m.data) + (m.from ? " from " + m.from : "");
      const log = $("tail-log");
      log.append(li);
      while (log.children.length > TAIL_MAX) log.firstChild.remove();
    });
  } catch (e) {
    if (!ctl.signal.aborted) $("tail-state").textContent = "error: " + e.message;
    return;
  }
  if (tailAbort === ctl) {
    $("tail-state").textContent = "ended";
    $("tail-start").disabled = false;
    $("tail-stop").disabled = true;
  }
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  live();
  refresh();
  refreshTimer = setInterval(refresh, REFRESH_MS);
}

function logout(why) {
  token = null;
  sessionStorage.removeItem("wshToken");
  if (liveAbort) liveAbort.abort();
  stopTail();
  clearInterval(refreshTimer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("live-status").textContent = "offline";
  $("live-status").className = "badge off";
  if (why) {
    $("login-error").textContent = why;
    $("login-error").hidden = false;
  }
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token = $("token").value;
  $("login-error").hidden = true;
  const r = await fetch("/status", { headers: headers() }).catch(() => null);
  if (!r || r.status === 401 || r.status === 403) {
    logout(r ? "token refused" : "server unreachable");
    return;
  }
  sessionStorage.setItem("wshToken", token);
  showApp();
});
$("logout").addEventListener("click", () => logout());
$("clients-refresh").addEventListener("click", refresh);
$("topics-prefix").addEventListener("change", refresh);
$("clients-type").addEventListener("change", refresh);
$("tail-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  startTail($("tail-topic").value.trim());
});
$("tail-stop").addEventListener("click", stopTail);

if (token) showApp();
