// The llamanet dashboard: polls the node's local API and renders what it says.
//
// Peers' records and error messages are untrusted input.  They only ever reach
// the page as text nodes and attribute values (el() below); nothing here parses
// HTML, and the Content-Security-Policy would refuse inline script anyway.
"use strict";

const POLL_MS = 1500;
const RECENT_SHOWN = 50;
const TASKS = `/v1/tasks?recent=${RECENT_SHOWN}`;

// --- building elements ---------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "id") node.id = String(value);
    else if (key === "title") node.title = String(value);
    else node.dataset[key] = String(value); // data-* attributes
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === "") continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function chips(values, cls) {
  if (!values || values.length === 0) return el("span", { class: "muted" }, "–");
  return el("span", { class: "chips" }, values.map((v) => el("span", { class: cls || "chip" }, v)));
}

function shortPeer(peer) {
  const text = String(peer || "");
  return text.length > 20 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text;
}

function peerTag(peer) {
  if (!peer) return null;
  return el("span", { class: "peer", title: peer, peer }, shortPeer(peer));
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? "just now" : `${duration(seconds * 1000)} ago`;
}

function fixed(value, digits) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

// --- this node -----------------------------------------------------------------

function renderNode(status) {
  const models = (status.models || []).map((m) => m.name);
  const rows = [
    ["Peer ID", el("code", { id: "node-peer-id" }, status.peer_id)],
    ["Swarm", status.swarm],
    ["Version", status.version],
    ["Addresses", el("ul", { class: "plain" }, (status.addrs || []).map((a) => el("li", {}, el("code", {}, a))))],
    ["Uptime", duration((status.uptime_s || 0) * 1000)],
    ["Load", `${Math.round((status.load || 0) * 100)} % (${status.tasks_running} running)`],
    ["Backends", chips(status.backends)],
    ["Capabilities", chips(status.capabilities)],
    ["Models", chips(models, "chip model")],
    ["Record", `seq ${status.record_seq ?? "–"}, expires in ${duration((status.record_expires_in || 0) * 1000)}`],
    ["Network", `${status.connected_peers} connected, ${status.dht_peers} in the DHT table, ${status.known_records} records held`],
  ];
  document.getElementById("node-info").replaceChildren(
    ...rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]),
  );
}

// --- peers and the swarm ---------------------------------------------------------

function renderPeers(peers) {
  const body = document.querySelector("#peers tbody");
  body.replaceChildren(
    ...peers.map((p) =>
      el(
        "tr",
        { peer: p.peer_id, class: p.connected ? "connected" : "" },
        el("td", {}, peerTag(p.peer_id)),
        el("td", { class: `live-${p.liveness}` }, p.liveness),
        el("td", {}, ago(p.last_seen_s)),
        el("td", { class: "num reputation" }, fixed(p.reputation, 2)),
        el("td", { class: "num" }, p.load === null ? "–" : `${Math.round(p.load * 100)} %`),
        el("td", { class: "capabilities" }, chips(p.capabilities)),
        el("td", { class: "models" }, chips(p.models, "chip model")),
        el(
          "td",
          {},
          p.record_seq === null ? "–" : `seq ${p.record_seq}, expires in ${duration(p.record_expires_in * 1000)}`,
        ),
        el("td", {}, p.source || "–"),
      ),
    ),
  );
  document.getElementById("peer-count").textContent = `(${peers.length})`;
}

function renderSwarm(peers) {
  const capabilities = new Map();
  const models = new Map();
  for (const p of peers) {
    for (const c of p.capabilities || []) capabilities.set(c, (capabilities.get(c) || 0) + 1);
    for (const m of p.models || []) models.set(m, (models.get(m) || 0) + 1);
  }
  const list = (counts, cls) => {
    const names = [...counts.keys()].sort();
    if (names.length === 0) return [el("li", { class: "muted" }, "none known")];
    return names.map((name) =>
      el("li", { class: cls, name, title: `offered by ${counts.get(name)} peer(s)` }, name, el("span", { class: "count" }, `×${counts.get(name)}`)),
    );
  };
  document.getElementById("swarm-capabilities").replaceChildren(...list(capabilities, "chip"));
  document.getElementById("swarm-models").replaceChildren(...list(models, "chip model"));
}

// --- tasks -------------------------------------------------------------------------

// A chain of one ask and its one attempt on the same capability says no more than
// its top line with the peer that ran it: show it as that one line.
function folded(task) {
  let node = task;
  while (node.omitted === 0 && node.children.length === 1) {
    const only = node.children[0];
    if (!["ask", "attempt"].includes(only.kind) || only.capability !== node.capability) break;
    node = { ...node, peer: node.peer || only.peer, error: node.error || only.error, children: only.children };
  }
  return node;
}

function renderTask(raw) {
  const task = folded(raw);
  const line = el(
    "div",
    { class: "task-line" },
    el("span", { class: `state state-${task.state}` }, task.state),
    el("span", { class: "kind" }, task.kind),
    el("span", { class: "cap" }, task.capability),
    task.label ? el("span", { class: "label" }, task.label) : null,
    task.peer ? el("span", { class: "on" }, task.kind === "served" ? "for " : "on ", peerTag(task.peer)) : null,
    el("span", { class: "time", title: `started ${new Date(task.started_at * 1000).toLocaleString()}` }, duration(task.duration_ms)),
    task.error ? el("span", { class: "error" }, task.error) : null,
  );
  const children = task.children.map(renderTask);
  if (task.omitted) children.unshift(el("li", { class: "muted" }, `… ${task.omitted} earlier sub-tasks not kept`));
  return el(
    "li",
    { kind: task.kind, state: task.state, task: task.id, capability: task.capability, label: task.label },
    line,
    children.length ? el("ul", {}, children) : null,
  );
}

function renderTasks(tasks) {
  const running = tasks.in_flight || [];
  const recent = tasks.recent || [];
  const empty = (text) => [el("li", { class: "muted" }, text)];
  document.getElementById("tasks-in-flight").replaceChildren(...(running.length ? running.map(renderTask) : empty("nothing running")));
  document.getElementById("tasks-recent").replaceChildren(...(recent.length ? recent.map(renderTask) : empty("nothing yet")));
  document.getElementById("in-flight-count").textContent = `(${running.length})`;
  document.getElementById("recent-count").textContent = `(${recent.length})`;
}

// --- polling -----------------------------------------------------------------------

class SignedOut extends Error {}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    throw new SignedOut("not signed in: open the link printed by `llamanet dashboard` again");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setConnection(state, text) {
  const badge = document.getElementById("connection");
  badge.className = state;
  badge.textContent = text;
}

async function refresh() {
  try {
    const [status, peers, tasks] = await Promise.all(["/v1/status", "/v1/peers", TASKS].map(getJson));
    renderNode(status);
    renderPeers(peers);
    renderSwarm(peers);
    renderTasks(tasks);
    setConnection("live", `live · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setConnection(error instanceof SignedOut ? "signed-out" : "down", error.message);
    if (error instanceof SignedOut) return; // polling again would not help
  }
  setTimeout(refresh, POLL_MS);
}

refresh();
