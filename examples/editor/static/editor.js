// The page of the pyotp editor: the same operational transformation as
// examples/editor/ot.py (keep the two in step), and the client state machine of
// ot.Client: one operation in flight, local edits buffered meanwhile, every operation
// from the server transformed over both. Positions count code points, as Python does.
"use strict";

const OT = (() => {
  const cps = (s) => Array.from(s);
  const len = (s) => cps(s).length;

  function apply(text, ops) {
    let a = cps(text);
    for (const [k, pos, x] of ops) {
      if (k === "i") {
        if (pos > a.length) throw new Error("insert past the end");
        a.splice(pos, 0, ...cps(x));
      } else {
        if (pos + x > a.length) throw new Error("delete past the end");
        a.splice(pos, x);
      }
    }
    return a.join("");
  }

  function t1(a, b, aFirst) {
    const [ka, pa, xa] = a, [kb, pb, xb] = b;
    if (ka === "i") {
      if (kb === "i") {
        if (pa < pb || (pa === pb && aFirst)) return [a];
        return [["i", pa + len(xb), xa]];
      }
      if (pa <= pb) return [a];
      if (pa >= pb + xb) return [["i", pa - xb, xa]];
      return [["i", pb, xa]];
    }
    if (kb === "i") {
      if (pb <= pa) return [["d", pa + len(xb), xa]];
      if (pb >= pa + xa) return [a];
      const left = pb - pa;
      return [["d", pa, left], ["d", pa + len(xb), xa - left]];
    }
    const ea = pa + xa, eb = pb + xb;
    if (ea <= pb) return [a];
    if (pa >= eb) return [["d", pa - xb, xa]];
    const n = xa - (Math.min(ea, eb) - Math.max(pa, pb));
    return n > 0 ? [["d", Math.min(pa, pb), n]] : [];
  }

  // [a2, b2]: a rewritten to follow b, b rewritten to follow a
  function transform(a, b, aFirst) {
    if (!a.length || !b.length) return [a, b];
    if (a.length === 1 && b.length === 1) return [t1(a[0], b[0], aFirst), t1(b[0], a[0], !aFirst)];
    if (a.length > 1) {
      const [a0, b1] = transform(a.slice(0, 1), b, aFirst);
      const [ar, b2] = transform(a.slice(1), b1, aFirst);
      return [a0.concat(ar), b2];
    }
    const [a1, b0] = transform(a, b.slice(0, 1), aFirst);
    const [a2, br] = transform(a1, b.slice(1), aFirst);
    return [a2, b0.concat(br)];
  }

  // the operation turning `before` into `after` (one changed range)
  function diff(before, after) {
    const a = cps(before), b = cps(after);
    let p = 0;
    while (p < a.length && p < b.length && a[p] === b[p]) p++;
    let s = 0;
    while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
    const ops = [];
    if (a.length - p - s > 0) ops.push(["d", p, a.length - p - s]);
    if (b.length - p - s > 0) ops.push(["i", p, b.slice(p, b.length - s).join("")]);
    return ops;
  }

  // where a caret at `pos` goes when `ops` are applied (inserts at the caret push it on
  // only when `push`)
  function movePos(pos, ops, push) {
    for (const [k, p, x] of ops) {
      if (k === "i") { if (p < pos || (push && p === pos)) pos += len(x); }
      else if (p < pos) pos -= Math.min(x, pos - p);
    }
    return pos;
  }
  return { apply, transform, diff, movePos, cps, len };
})();

const Editor = (() => {
  const cfg = window.EDITOR_CONFIG || {};
  if (!cfg.doc) return null;        // loaded by a test page that only wants OT
  const $ = (id) => document.getElementById(id);
  const area = $("text"), mirror = $("mirror");
  const params = new URLSearchParams(location.search);
  const rnd = () => Math.random().toString(36).slice(2, 10);
  const me = { client: "c" + rnd(), name: (params.get("name") || "user-" + rnd().slice(0, 4)).slice(0, 40) };
  const urls = [location.origin].concat((cfg.peers || []).filter((u) => u !== location.origin));
  const st = { text: "", rev: null, inflight: null, inflightSeq: 0, buffer: null, seq: 0,
               joined: false, ws: null, fatal: null, attempt: 0, node: null, peers: [],
               sentPos: -1, connects: 0 };
  $("docname").textContent = cfg.doc;

  const status = (s, ok) => { $("status").textContent = s; $("status").className = ok ? "ok" : "bad"; };
  const send = (obj) => { if (st.ws && st.ws.readyState === 1) st.ws.send(JSON.stringify(obj)); };
  const cpIndex = (s, i) => OT.len(s.slice(0, i));
  const unitIndex = (s, cp) => OT.cps(s).slice(0, cp).join("").length;

  function sendInflight() {
    send({ type: "op", doc: cfg.doc, seq: st.inflightSeq, rev: st.rev, ops: st.inflight });
  }

  function localEdit(ops) {
    if (!ops.length) return;
    st.text = OT.apply(st.text, ops);
    st.peers.forEach((p) => { p.pos = OT.movePos(p.pos, ops, false); });
    if (st.inflight === null) {
      st.inflight = ops; st.inflightSeq = ++st.seq;
      if (st.joined) sendInflight();
    } else {
      st.buffer = (st.buffer || []).concat(ops);
    }
    render();
  }

  function ack() {
    st.rev += 1;
    st.inflight = st.buffer; st.buffer = null;
    if (st.inflight !== null) { st.inflightSeq = ++st.seq; sendInflight(); }
  }

  function remote(ops) {
    st.rev += 1;
    if (st.inflight !== null) [st.inflight, ops] = OT.transform(st.inflight, ops, false);
    if (st.buffer !== null) [st.buffer, ops] = OT.transform(st.buffer, ops, false);
    const selS = cpIndex(area.value, area.selectionStart), selE = cpIndex(area.value, area.selectionEnd);
    st.text = OT.apply(st.text, ops);
    st.peers.forEach((p) => { p.pos = OT.movePos(p.pos, ops, false); });
    const focused = document.activeElement === area;
    area.value = st.text;
    if (focused) {
      area.setSelectionRange(unitIndex(st.text, OT.movePos(selS, ops, false)),
                             unitIndex(st.text, OT.movePos(selE, ops, false)));
    }
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "snapshot") {
      if (st.rev !== null && (st.inflight || st.buffer)) console.warn("history lost: local edits dropped");
      st.text = m.text; st.rev = m.rev; st.inflight = null; st.buffer = null;
      area.value = st.text;
      joined(m.node);
    } else if (m.type === "catchup") {
      for (const o of m.ops) {
        if (o.client === me.client && st.inflight !== null && o.seq === st.inflightSeq) ack();
        else remote(o.ops);
      }
      area.value = st.text;
      joined(m.node);
      if (st.inflight !== null) sendInflight();   // not applied before the break: again
    } else if (m.type === "op") {
      remote(m.ops);
    } else if (m.type === "ack") {
      ack();
    } else if (m.type === "presence") {
      st.peers = m.peers;
    } else if (m.type === "error") {
      st.fatal = m.message;
      $("error").textContent = "Closed by the server: " + m.message;
    }
    render();
  }

  function joined(node) {
    st.joined = true; st.attempt = 0; st.node = node;
    area.disabled = false;
    status("connected", true);
    st.sentPos = -1; sendCursor();
  }

  function connect() {
    const base = urls[(st.connects++) % urls.length];
    const ws = new WebSocket(base.replace(/^http/, "ws") + "/ws");
    st.ws = ws; st.joined = false;
    ws.onopen = () => send({ type: "join", doc: cfg.doc, client: me.client, name: me.name, rev: st.rev });
    ws.onmessage = onMessage;
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.joined = false; st.ws = null;
      if (ev.code === 4400 || ev.code === 4413 || st.fatal) {
        status("closed: " + (st.fatal || ev.reason), false);
        area.disabled = true;
        return;
      }
      status("reconnecting", false);
      st.attempt += 1;
      setTimeout(connect, Math.min(2000, 100 * st.attempt));
    };
  }

  function sendCursor() {
    if (!st.joined) return;
    const pos = cpIndex(area.value, area.selectionStart);
    if (pos !== st.sentPos) { st.sentPos = pos; send({ type: "cursor", doc: cfg.doc, pos: pos }); }
  }

  const colour = (id) => { let h = 0; for (const c of id) h = (h * 31 + c.charCodeAt(0)) % 360; return "hsl(" + h + ",65%,45%)"; };
  const esc = (s) => s.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c]));

  function render() {
    $("rev").textContent = st.rev === null ? "-" : st.rev + (st.inflight ? " (+" + (st.buffer ? 2 : 1) + ")" : "");
    $("node").textContent = st.node || "-";
    const list = $("peers");
    list.innerHTML = "";
    const all = [{ client: me.client, name: me.name + " (you)", node: st.node, pos: null }].concat(st.peers);
    for (const p of all) {
      const li = document.createElement("li");
      const where = p.pos === null ? "" : " \u2014 " + lineCol(p.pos);
      li.innerHTML = '<span class="dot" style="background:' + colour(p.client) + '"></span>' +
        esc(p.name) + '<small>' + esc(where) + (p.node ? " @ " + esc(p.node) : "") + "</small>";
      list.appendChild(li);
    }
    const chars = OT.cps(st.text);
    const carets = st.peers.map((p) => [Math.min(p.pos, chars.length), p]).sort((a, b) => a[0] - b[0]);
    let html = "", at = 0;
    for (const [pos, p] of carets) {
      html += esc(chars.slice(at, pos).join(""));
      html += '<span class="caret" style="border-color:' + colour(p.client) + '"><span style="background:' +
        colour(p.client) + '">' + esc(p.name) + "</span></span>";
      at = pos;
    }
    mirror.innerHTML = html + esc(chars.slice(at).join("")) + "\n";
    mirror.scrollTop = area.scrollTop;
  }

  function lineCol(pos) {
    const before = OT.cps(st.text).slice(0, pos).join("").split("\n");
    return "line " + before.length + ", col " + (before[before.length - 1].length + 1);
  }

  area.addEventListener("input", () => {
    if (st.rev === null) { area.value = st.text; return; }
    localEdit(OT.diff(st.text, area.value));
    sendCursor();
  });
  for (const ev of ["keyup", "click", "select", "focus"]) area.addEventListener(ev, sendCursor);
  area.addEventListener("scroll", () => { mirror.scrollTop = area.scrollTop; });
  connect();
  render();

  // for tests and the console
  return {
    state: () => ({ text: st.text, rev: st.rev, pending: st.inflight !== null || st.buffer !== null,
                    joined: st.joined, node: st.node, error: st.fatal, peers: st.peers.map((p) => p.name),
                    client: me.client }),
    socket: () => st.ws,
  };
})();
window.OT = OT;
window.editor = Editor;
