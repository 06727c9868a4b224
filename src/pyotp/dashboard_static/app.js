"use strict";
// pyotp dashboard: plain JS, no build step. Live data from /events (server-sent events).
const token = new URLSearchParams(location.search).get("token");
let viewNode = null;      // another connected node shown instead of the dashboard's own (?node=)
const q = (extra) => {
  const p = new URLSearchParams(extra || {});
  if (token) p.set("token", token);
  if (viewNode) p.set("node", viewNode);
  return "?" + p;
};
const $ = (id) => document.getElementById(id);
let sort = "reductions", history = [], lastDispatched = null, lastTime = null, source = null;
const expanded = new Set();

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "onclick") e.onclick = v; else e.setAttribute(k, v); }
  for (const k of kids) e.append(k);
  return e;
}

function pidLink(pid) { return pid ? el("a", {class: "pid", onclick: () => showProcess(pid)}, pid) : "-"; }

function treeNode(n, path) {
  const li = el("li", {class: "tree-node", "data-pid": n.pid || ""});
  const key = path + "/" + (n.id === undefined ? n.pid : n.id);
  if (n.children) {
    const open = !expanded.has("closed:" + key);
    const t = el("span", {class: "toggle"}, open ? "\u25be" : "\u25b8");
    t.onclick = () => { if (open) expanded.add("closed:" + key); else expanded.delete("closed:" + key); render(); };
    const label = n.id !== undefined ? String(n.id) : (n.application || n.name || "supervisor");
    li.append(t, el("b", {}, label), n.name && n.name !== label ? " (" + n.name + ")" : "", " ", pidLink(n.pid),
              n.restarts !== null && n.restarts !== undefined ? el("span", {class: "restarts"}, " restarts: " + n.restarts) : "");
    if (n.error) li.append(" (" + n.error + ")");
    if (open) { const ul = el("ul", {class: "tree"}); for (const c of n.children) ul.append(treeNode(c, key)); li.append(ul); }
  } else {
    li.append(el("span", {class: "toggle"}, "\u2022"), el("span", {class: "child-id"}, String(n.id)), " ", pidLink(n.pid), " " + n.type);
  }
  return li;
}

function chart(svg, values) {
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => (i * 300 / Math.max(1, values.length - 1)).toFixed(1) + "," + (58 - v * 56 / max).toFixed(1)).join(" ");
  svg.innerHTML = '<polyline fill="none" stroke="#1a5fb4" stroke-width="1.5" points="' + pts + '"/>' +
    '<text x="2" y="10" font-size="9">' + max + '</text>';
}

let last = null;
function render() {
  if (!last) return;
  const {snapshot, trees} = last, node = snapshot.node;
  $("node-name").textContent = node.name; $("proc-count").textContent = node.processes;
  $("run-queue").textContent = node.run_queue;
  $("timers").textContent = node.timers === null || node.timers === undefined ? "-" : node.timers;
  const box = $("trees"); box.replaceChildren();
  const ul = el("ul", {class: "tree"}); for (const t of trees) ul.append(treeNode(t, "")); box.append(ul);
  const body = document.querySelector("#top tbody"); body.replaceChildren();
  for (const r of snapshot.top) {
    body.append(el("tr", {}, el("td", {}, pidLink(r.pid)), el("td", {}, r.name || ""), el("td", {}, r.status),
      el("td", {}, String(r.message_queue_len)), el("td", {}, String(r.reductions)), el("td", {}, String(r.memory)),
      el("td", {}, r.messages_received === null || r.messages_received === undefined ? "-" : String(r.messages_received)),
      el("td", {}, r.behaviour || r.initial_call || "")));
  }
  // the node list: this node with its load, then every connection with its traffic
  const nodes = document.querySelector("#nodes tbody"); nodes.replaceChildren();
  nodes.append(el("tr", {class: "self"}, el("td", {}, el("b", {}, node.name)),
    el("td", {}, viewNode ? el("a", {class: "view-home", onclick: () => view(null)}, "back to the dashboard's node") : "shown"),
    el("td", {}, "processes " + node.processes + ", run queue " + node.run_queue + ", " + $("msg-rate").textContent + " " + rateUnit(node) + "/s"),
    el("td", {}, "-"), el("td", {}, "-"), el("td", {}, "-"), el("td", {}, "-")));
  for (const c of node.connections || []) {
    nodes.append(el("tr", {class: "conn"}, el("td", {}, el("a", {class: "view-node", onclick: () => view(c.node)}, c.node)), el("td", {}, [c.pyotp === true ? "pyotp" : c.pyotp === false ? "BEAM" : null, c.hidden ? "hidden" : "visible"].filter(x => x).join(", ")),
      el("td", {}, "connected"), el("td", {}, String(c.msgs_in)), el("td", {}, String(c.msgs_out)),
      el("td", {}, c.bytes_in === null ? "-" : String(c.bytes_in)), el("td", {}, c.bytes_out === null ? "-" : String(c.bytes_out))));
  }
  chart($("chart-rate"), history.map(h => h.rate)); chart($("chart-rq"), history.map(h => h.rq));
  chart($("chart-mem"), history.map(h => h.mem));
}

function rateUnit(node) { return node.rate_unit || "messages"; }

function connect() {
  if (source) source.close();
  source = new EventSource("/events" + q({sort, n: 30}));
  source.onopen = () => { $("status").textContent = "live"; };
  source.onerror = () => { $("status").textContent = "disconnected, retrying"; };
  source.onmessage = (ev) => {
    last = JSON.parse(ev.data);
    const node = last.snapshot.node, now = Date.now() / 1000;
    let rate = 0;
    if (lastDispatched !== null && now > lastTime) rate = Math.round((node.dispatched - lastDispatched) / (now - lastTime));
    lastDispatched = node.dispatched; lastTime = now;
    $("msg-rate").textContent = rate; $("rate-unit").textContent = rateUnit(node) + "/s";
    $("chart-rate-label").textContent = rateUnit(node) + "/s";
    history.push({rate, rq: node.run_queue, mem: node.memory});
    if (history.length > 300) history.shift();
    render();
  };
}

async function view(name) {
  // check first: a node the dashboard's node is not connected to answers 404
  const prev = viewNode; viewNode = name;
  const r = await fetch("/api/snapshot" + q({n: 1}));
  if (!r.ok) { viewNode = prev; $("status").textContent = (await r.json()).error; return; }
  history = []; lastDispatched = null; expanded.clear(); $("process").hidden = true;
  connect();
}

let shown = null;
async function showProcess(pid) {
  shown = pid;
  const r = await fetch("/api/process/" + encodeURIComponent(pid) + q());
  const sec = $("process"); sec.hidden = false; $("p-pid").textContent = pid;
  const info = $("p-info"); info.replaceChildren();
  if (!r.ok) { info.append(el("p", {class: "error"}, (await r.json()).error)); return; }
  const p = await r.json();
  const t = el("table", {});
  for (const k of ["registered_name", "status", "behaviour", "initial_call", "current_function", "parent", "message_queue_len",
                   "messages_received", "reductions", "memory", "trap_exit"])
    if (p[k] !== undefined) t.append(el("tr", {}, el("th", {}, k), el("td", {}, k === "parent" ? pidLink(p[k]) : p[k] === null ? "-" : String(p[k]))));
  const links = el("td", {}); for (const l of p.links) links.append(pidLink(l), " ");
  t.append(el("tr", {}, el("th", {}, "links"), links));
  t.append(el("tr", {}, el("th", {}, "monitors"), el("td", {}, JSON.stringify(p.monitors))));
  t.append(el("tr", {}, el("th", {}, "monitored_by"), el("td", {}, JSON.stringify(p.monitored_by))));
  info.append(t);
  if (p.state !== undefined) info.append(el("div", {}, "state (sys.get_state):"), el("pre", {id: "p-state"}, p.state));
  info.append(el("div", {}, "mailbox (first 20):"), el("pre", {}, p.messages.join("\n")));
}

async function act(action, body) {
  const r = await fetch("/api/process/" + encodeURIComponent(shown) + "/" + action + q(),
    {method: "POST", headers: {"X-Pyotp-Confirm": "yes", "Content-Type": "application/json"}, body: JSON.stringify(body || {})});
  $("p-info").prepend(el("p", {class: "result"}, r.ok ? action + ": done" : action + ": " + (await r.json()).error));
}

$("p-kill").onclick = () => { if (shown && confirm("Kill " + shown + "?")) act("kill"); };
$("p-send").onclick = () => { if (shown) act("send", {message: $("p-msg").value}); };
for (const th of document.querySelectorAll("th.sortable"))
  th.onclick = () => { sort = th.dataset.sort; connect(); };
connect();
