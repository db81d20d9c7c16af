// fastflow's operator console (docs/console.md).  Plain JavaScript, no
// build step, nothing from elsewhere.  The page reads one feed (Server-Sent
// Events over fetch, so that credentials go in a header) and, once a tick,
// the page of the table on show.  Values reach the DOM as text only.
"use strict";

(function () {
  const MAX_ROWS = 500;               // rows a tail or the advisories list keeps
  const PAGE = 50;                    // rows of a table page
  const $ = (id) => document.getElementById(id);
  const state = {
    view: null, auth: null, feed: null, history: [], server: null, tail: null,
    ticks: 0, advisories: 0, tableBusy: false, pages: {}, kinds: new Set(),
  };
  window.ffConsole = state;           // (for whoever drives the page: the tests)

  // -- small helpers ---------------------------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : v);
      }
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function num(n) {
    if (n === null || n === undefined) return "–";
    if (typeof n !== "number") return String(n);
    if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + " G";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + " M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + " k";
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function when(t) { return t ? t.replace("T", " ").replace("Z", "") : "–"; }
  function table(id, columns, rows, onRow) {
    const t = $(id);
    const head = el("tr", null, ...columns.map((c) => el("th", {class: (c.num ? "num " : "") +
      (c.narrow ? "hide-narrow" : "")}, c.title)));
    const body = rows.map((r) => {
      const tr = el("tr", {class: onRow ? "link" : null}, ...columns.map((c) => {
        const v = c.cell(r);
        return el("td", {class: (c.num ? "num " : "") + (c.narrow ? "hide-narrow " : "") +
                                (c.cls || "")}, v);
      }));
      if (onRow) tr.addEventListener("click", () => onRow(r));
      return tr;
    });
    if (!rows.length) body.push(el("tr", {class: "note"}, el("td", {colspan: columns.length},
                                                             "nothing to show")));
    t.replaceChildren(el("thead", null, head), el("tbody", null, ...body));
  }
  function pager(id, page, view) {
    const p = $(id);
    const st = state.pages[view];
    const from = page.total ? page.offset + 1 : 0;
    const to = Math.min(page.offset + page.rows.length, page.total);
    p.replaceChildren(
      el("button", {type: "button", disabled: page.offset <= 0, onclick: () => {
        st.offset = Math.max(0, st.offset - st.limit); refresh(); }}, "‹ prev"),
      el("span", null, from + "–" + to + " of " + page.total),
      el("button", {type: "button", disabled: to >= page.total, onclick: () => {
        st.offset += st.limit; refresh(); }}, "next ›"));
  }
  function bar(frac) {
    if (frac === null || frac === undefined) return "no limit";
    const pct = Math.max(0, Math.min(1, frac));
    const b = el("span", {class: "bar" + (pct > 0.95 ? " full" : pct > 0.8 ? " warn" : "")});
    const i = el("i");
    i.style.width = (pct * 100).toFixed(1) + "%";
    b.append(i);
    return el("span", null, b, (pct * 100).toFixed(0) + "%");
  }
  function spark(points) {
    const s = svg("svg", {class: "spark", viewBox: "0 0 60 20", preserveAspectRatio: "none"});
    if (points && points.length > 1) {
      const max = Math.max(...points, 1);
      const n = points.length;
      s.append(svg("polyline", {points: points.map((v, i) =>
        (i * 60 / (n - 1)).toFixed(1) + "," + (19 - v / max * 18).toFixed(1)).join(" ")}));
    }
    return s;
  }
  function status(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = "status " + cls;
  }

  // -- talking to the server -------------------------------------------------------------

  function headers() {
    const h = {"x-fastflow-console": "1"};
    if (state.auth) h.authorization = state.auth;
    return h;
  }
  class Unauthorized extends Error {}
  async function api(path) {
    const r = await fetch(path, {headers: headers(), cache: "no-store"});
    if (r.status === 401) throw new Unauthorized("credentials needed");
    const body = await r.json();
    if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
    return body;
  }
  // an event stream read with fetch (EventSource cannot send credentials in a header)
  async function events(path, signal, onEvent) {
    const r = await fetch(path, {headers: headers(), signal: signal, cache: "no-store"});
    if (r.status === 401) throw new Unauthorized("credentials needed");
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { const b = await r.json(); msg = b.error.message; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buf += dec.decode(value, {stream: true});
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const msg = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let name = "message", data = "", id = null;
        for (const line of msg.split("\n")) {
          if (line.startsWith(":")) continue;
          const c = line.indexOf(":");
          const k = c < 0 ? line : line.slice(0, c);
          const v = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
          if (k === "event") name = v;
          else if (k === "data") data += (data ? "\n" : "") + v;
          else if (k === "id") id = v;
        }
        if (data) onEvent(name, JSON.parse(data), id);
      }
    }
  }

  // -- signing in ------------------------------------------------------------------------

  function showLogin(message) {
    $("login").hidden = false;
    for (const v of document.querySelectorAll(".view")) v.hidden = true;
    $("login-error").textContent = message || "";
    status("sign in", "bad");
  }
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("login-token").value;
    const user = $("login-user").value;
    if (token) state.auth = "Bearer " + token;
    else if (user) {
      const raw = new TextEncoder().encode(user + ":" + $("login-password").value);
      state.auth = "Basic " + btoa(String.fromCharCode(...raw));
    } else {
      $("login-error").textContent = "give a token, or a user and password";
      return;
    }
    sessionStorage.setItem("ff-auth", state.auth);
    $("login-password").value = $("login-token").value = "";
    $("login").hidden = true;
    startFeed();
    show();
  });

  // -- the feed ----------------------------------------------------------------------------

  async function startFeed() {
    if (state.feed) state.feed.abort();
    const ctl = new AbortController();
    state.feed = ctl;
    let wait = 1000;
    while (!ctl.signal.aborted) {
      try {
        status("connecting", "wait");
        await events("feed", ctl.signal, (name, data) => {
          wait = 1000;
          if (name === "hello") hello(data);
          else if (name === "tick") tick(data);
          else if (name === "close") status("closed: " + data.message, "bad");
        });
        status("disconnected", "bad");
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof Unauthorized) {
          sessionStorage.removeItem("ff-auth");
          state.auth = null;
          showLogin(state.ticks ? "the credentials were refused" : "");
          return;
        }
        status("disconnected: " + e.message, "bad");
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 10000);
    }
  }

  function hello(d) {
    state.server = d.server;
    state.history = d.history || [];
    state.tailOn = d.tail;
    $("server-name").textContent = d.server.name + " · " + d.server.version;
    const list = d.advisories || [];
    state.advRows = list.slice().reverse();
    for (const a of list) state.kinds.add(a.kind);
    status("live", "ok");
    drawChart();
    renderAdvisories();
  }

  function tick(d) {
    state.ticks += 1;
    state.overview = d;
    if (d.rates) {
      state.history.push(d.rates);
      if (state.history.length > 600) state.history.shift();
    }
    status("live", "ok");
    if (d.advisories && d.advisories.length) {
      state.advRows = d.advisories.slice().reverse().concat(state.advRows || [])
        .slice(0, MAX_ROWS);
      for (const a of d.advisories) state.kinds.add(a.kind);
      state.advisories += d.advisories.length;
      if (state.view !== "advisories") $("adv-count").textContent = String(state.advisories);
      if (state.view === "advisories") renderAdvisories();
    }
    if (state.view === "overview") renderOverview();
    else refresh();
  }

  // -- views --------------------------------------------------------------------------------

  const VIEWS = ["overview", "streams", "stream", "subjects", "consumers", "connections",
                 "catalog", "advisories"];
  // a token in the fragment (fastflow console --token): kept for the tab,
  // taken out of the address bar (a browser never sends the fragment)
  function takeToken() {
    if (!location.hash.startsWith("#token=")) return false;
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    history.replaceState(null, "", location.pathname + "#overview");
    if (!token) return false;
    state.auth = "Bearer " + token;
    sessionStorage.setItem("ff-auth", state.auth);
    $("login").hidden = true;
    return true;
  }

  function show() {
    if (takeToken()) startFeed();
    // #<view>, or #stream?name=<stream>&acc=<account> (each part encoded)
    const hash = location.hash.slice(1) || "overview";
    const cut = hash.indexOf("?");
    let view = cut < 0 ? hash : hash.slice(0, cut);
    if (!VIEWS.includes(view)) view = "overview";
    const args = new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1));
    if (view === "stream" && !args.get("name")) view = "streams";
    if (state.view === "stream" && view !== "stream") stopTail();
    state.view = view;
    state.stream = view === "stream" ? {name: args.get("name"), acc: args.get("acc")} : null;
    for (const v of VIEWS) $("view-" + v).hidden = v !== view;
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.dataset.view === view ||
                         (view === "stream" && a.dataset.view === "streams"));
    }
    if (view === "advisories") { state.advisories = 0; $("adv-count").textContent = ""; }
    if (view === "stream") openStream();
    if (view === "overview") renderOverview();
    else if (view === "advisories") renderAdvisories();
    else refresh();
  }
  window.addEventListener("hashchange", show);
  window.addEventListener("resize", () => { if (state.view === "overview") drawChart(); });

  function pageOf(view, sort) {
    if (!state.pages[view]) state.pages[view] = {offset: 0, limit: PAGE, sort: sort, q: ""};
    return state.pages[view];
  }
  function query(view) {
    const p = state.pages[view];
    const q = new URLSearchParams({offset: p.offset, limit: p.limit, sort: p.sort});
    if (p.q) q.set("q", p.q);
    return q.toString();
  }
  function bindToolbar(view, sortDefault, qId, sortId) {
    const p = pageOf(view, sortDefault);
    if (qId) $(qId).addEventListener("input", (e) => { p.q = e.target.value; p.offset = 0; refresh(); });
    if (sortId) $(sortId).addEventListener("change", (e) => { p.sort = e.target.value; p.offset = 0; refresh(); });
  }
  bindToolbar("streams", "name", "streams-q", "streams-sort");
  bindToolbar("consumers", "-lag", "consumers-q");
  bindToolbar("subscriptions", "-lag");
  bindToolbar("connections", "-out_rate", "connections-q", "connections-sort");
  bindToolbar("catalog", "name", "catalog-q");
  $("consumers-q").addEventListener("input", (e) => {
    const p = pageOf("subscriptions", "-lag"); p.q = e.target.value; p.offset = 0; });
  $("subjects-q").addEventListener("input", () => refresh());
  $("subjects-limit").addEventListener("change", () => refresh());
  $("advisories-kind").addEventListener("change", () => renderAdvisories());

  async function refresh() {
    if (state.tableBusy || !state.auth && state.needAuth) return;
    const view = state.view;
    state.tableBusy = true;
    try {
      if (view === "streams") renderStreams(await api("api/streams?" + query("streams")));
      else if (view === "stream") renderStreamInfo();
      else if (view === "subjects") {
        const q = new URLSearchParams({limit: $("subjects-limit").value});
        if ($("subjects-q").value) q.set("q", $("subjects-q").value);
        renderSubjects(await api("api/subjects?" + q));
      } else if (view === "consumers") {
        renderConsumers(await api("api/consumers?" + query("consumers")));
        renderSubscriptions(await api("api/subscriptions?" + query("subscriptions")));
      } else if (view === "connections") {
        renderConnections(await api("api/connections?" + query("connections")));
      } else if (view === "catalog") renderCatalog(await api("api/catalog?" + query("catalog")));
    } catch (e) {
      if (e instanceof Unauthorized) showLogin("");
      else status("error: " + e.message, "bad");
    } finally {
      state.tableBusy = false;
    }
  }

  // overview
  function card(label, value, title) {
    return el("div", {class: "card", title: title || null}, el("div", {class: "label"}, label),
              el("div", {class: "value"}, value));
  }
  function renderOverview() {
    const d = state.overview;
    if (!d) return;
    const s = d.server, t = d.totals, r = d.rates || [];
    $("cards").replaceChildren(
      card("events in /s", num(r[1] || 0)), card("events out /s", num(r[2] || 0)),
      card("stored /s", num(r[5] || 0)),
      card("connections", num(t.connections)), card("subscriptions", num(t.subscriptions)),
      card("streams", num(t.streams)), card("consumers", num(t.consumers)),
      card("API subscriptions", num(t.api_subscriptions)),
      card("pending output", bytes(t.pending_bytes)),
      card("slow consumers cut", num(t.slow_consumers)),
      card("memory", bytes(s.mem)), card("CPU", (s.cpu || 0).toFixed(0) + "%"),
      card("uptime", s.uptime), card("version", s.version, s.loop));
    const doors = Object.entries(d.doors).map(([k, v]) => ({door: k, ...v}));
    table("doors", [
      {title: "door", cell: (x) => x.door},
      {title: "port", num: true, cell: (x) => x.port || "–"},
      {title: "connections", num: true, cell: (x) => num(x.connections)},
    ], doors);
    drawChart();
  }
  function drawChart() {
    const c = $("chart");
    const h = state.history.slice(-600);
    // drawn at the element's own width: text and lines keep their proportions
    const W = Math.max(200, Math.round(c.getBoundingClientRect().width) || 800);
    const H = 220, L = 50, B = 18;
    c.setAttribute("viewBox", "0 0 " + W + " " + H);
    const max = Math.max(10, ...h.map((p) => Math.max(p[1], p[2], p[5])));
    const kids = [];
    for (let i = 0; i <= 4; i++) {
      const y = (H - B) - (H - B - 8) * i / 4;
      kids.push(svg("line", {class: "grid", x1: L, x2: W, y1: y, y2: y}));
      const label = svg("text", {class: "axis", x: 2, y: y + 4});
      label.textContent = num(Math.round(max * i / 4));
      kids.push(label);
    }
    const n = h.length;
    const x = (i) => (L + (W - L) * (n > 1 ? i / (n - 1) : 1)).toFixed(1);
    const y = (v) => ((H - B) - (H - B - 8) * v / max).toFixed(1);
    for (const [col, cls] of [[1, "in"], [2, "out"], [5, "stored"]]) {
      if (n > 1) kids.push(svg("polyline", {class: cls,
        points: h.map((p, i) => x(i) + "," + y(p[col])).join(" ")}));
    }
    c.replaceChildren(...kids);
    $("chart-span").textContent = n > 1 ? "(last " + Math.round(h[n - 1][0] - h[0][0]) + " s)" : "";
  }

  // streams
  function renderStreams(page) {
    table("streams", [
      {title: "stream", cell: (s) => (s.account ? s.account + " / " : "") + s.name},
      {title: "subjects", narrow: true, cell: (s) => s.subjects.join(" ")},
      {title: "events", num: true, cell: (s) => num(s.events)},
      {title: "bytes", num: true, cell: (s) => bytes(s.bytes)},
      {title: "seqs", num: true, narrow: true, cell: (s) => s.first_seq + "–" + s.last_seq},
      {title: "first / last", narrow: true, cell: (s) => when(s.first_time) + " / " + when(s.last_time)},
      {title: "rate /s", num: true, cell: (s) => el("span", null, spark(s.spark), " ", num(s.rate))},
      {title: "retention", narrow: true, cell: (s) => retention(s.retention)},
      {title: "full", cell: (s) => bar(s.fill)},
      {title: "consumers", num: true, narrow: true, cell: (s) => s.consumers},
    ], page.rows, (s) => {
      const args = new URLSearchParams({name: s.name});
      if (s.account) args.set("acc", s.account);
      location.hash = "stream?" + args;
    });
    pager("streams-pager", page, "streams");
  }
  function retention(r) {
    const parts = [];
    if (r.max_events) parts.push(num(r.max_events) + " events");
    if (r.max_bytes) parts.push(bytes(r.max_bytes));
    if (r.max_age) parts.push(r.max_age + " s");
    if (r.max_per_subject) parts.push(r.max_per_subject + " per subject");
    return parts.length ? parts.join(", ") + " (" + r.discard + ")" : "none";
  }

  // one stream: its figures and its events
  function streamRef() {
    return state.stream || {name: "", acc: null};
  }
  function openStream() {
    const ref = streamRef();
    $("stream-title").textContent = "Stream " + ref.name;
    $("tail").replaceChildren();
    $("tail-status").textContent = state.tailOn === false ? "tails are off on this server" : "";
    $("tail-start").disabled = state.tailOn === false;
    renderStreamInfo();
  }
  async function renderStreamInfo() {
    const ref = streamRef();
    const q = new URLSearchParams({q: ref.name, limit: 200});
    if (ref.acc) q.set("acc", ref.acc);
    const page = await api("api/streams?" + q);
    const s = page.rows.find((x) => x.name === ref.name);
    if (!s) { $("stream-info").replaceChildren(card("stream", "not found")); return; }
    $("stream-info").replaceChildren(
      card("events", num(s.events)), card("bytes", bytes(s.bytes)),
      card("first seq", s.first_seq), card("last seq", s.last_seq),
      card("first event", when(s.first_time)), card("last event", when(s.last_time)),
      card("rate /s", num(s.rate)), card("retention", retention(s.retention)),
      card("full", s.fill === null ? "no limit" : (s.fill * 100).toFixed(1) + "%"),
      card("storage", s.storage), card("subjects", s.subjects.join(" ")),
      card("consumers", s.consumers));
  }
  $("tail-from").addEventListener("change", (e) => {
    $("tail-at").hidden = !(e.target.value === "seq" || e.target.value === "time");
  });
  $("tail-form").addEventListener("submit", (e) => { e.preventDefault(); startTail(); });
  $("tail-stop").addEventListener("click", () => stopTail());
  function stopTail() {
    if (state.tail) state.tail.abort();
    state.tail = null;
    $("tail-start").disabled = state.tailOn === false;
    $("tail-stop").disabled = true;
  }
  function tailNote(text) {
    const body = $("tail").tBodies[0];
    if (!body) return;
    body.prepend(el("tr", {class: "note"}, el("td", {colspan: 6}, text)));
  }
  async function startTail() {
    stopTail();
    const ref = streamRef();
    const mode = $("tail-from").value;
    const from = mode === "seq" || mode === "time" ? $("tail-at").value.trim() : mode;
    const q = new URLSearchParams({from: from});
    if (ref.acc) q.set("acc", ref.acc);
    const ctl = new AbortController();
    state.tail = ctl;
    state.tailRows = 0;
    state.tailFirst = null;             // the first seq the tail showed
    $("tail-stop").disabled = false;
    $("tail").replaceChildren(
      el("thead", null, el("tr", null, ...["seq", "time", "subject", "type", "source", "data"]
        .map((h, i) => el("th", {class: (i === 0 ? "num" : "") + (i === 4 ? " hide-narrow" : "")}, h)))),
      el("tbody"));
    $("tail-status").textContent = "opening";
    try {
      await events("tail/" + encodeURIComponent(ref.name) + "?" + q, ctl.signal, (name, d) => {
        if (name === "start") {
          $("tail-status").textContent = (d.live ? "live from seq " : "replaying from seq ") + d.seq;
        } else if (name === "events") {
          const body = $("tail").tBodies[0];
          if (state.tailFirst === null && d.length) state.tailFirst = d[0].seq;
          for (const ev of d) {
            body.prepend(el("tr", {"data-seq": ev.seq},
              el("td", {class: "num"}, ev.seq), el("td", null, when(ev.time)),
              el("td", null, ev.subject), el("td", null, ev.type),
              el("td", {class: "hide-narrow"}, ev.source),
              el("td", {class: "data"}, ev.data + (ev.truncated ? " …" : ""))));
          }
          state.tailRows += d.length;
          while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
          $("tail-status").textContent = num(state.tailRows) + " events, last seq " +
            d[d.length - 1].seq;
        } else if (name === "skipped") {
          tailNote("skipped " + d.count + " events (seqs " + d.first + "–" + d.last +
                   "): a live tail stays near the newest");
        } else if (name === "lost") {
          tailNote(d.count + " events gone before they were read (seqs " + d.first + "–" +
                   d.last + ")");
        } else if (name === "close") {
          $("tail-status").textContent = "ended: " + d.message;
        }
      });
      if (state.tail === ctl) $("tail-status").textContent += " (ended)";
    } catch (e) {
      if (!ctl.signal.aborted) $("tail-status").textContent = "error: " + e.message;
    }
    if (state.tail === ctl) stopTail();
  }

  // subjects
  function renderSubjects(d) {
    $("subjects-note").textContent = d.sampling_on
      ? "rates over the last " + d.window_seconds + " s" + (d.sampling > 1 ? ", 1 publish in " +
        d.sampling + " sampled" : "") + "; " + num(d.distinct) + " subjects seen"
      : "sampling starts now";
    table("subjects", [
      {title: "subject", cell: (s) => (s.account ? s.account + " / " : "") + s.subject},
      {title: "rate /s", num: true, cell: (s) => num(s.rate)},
      {title: "share", cell: (s) => bar(s.share)},
      {title: "subscribers", num: true, cell: (s) => s.subscribers},
      {title: "who", narrow: true, cell: (s) => s.shown.map(who).join(", ") +
        (s.subscribers > s.shown.length ? ", …" : "")},
    ], d.rows);
  }
  function who(x) {
    if (x.kind === "connection") return "#" + x.cid + " " + x.door + (x.user ? " " + x.user : "") +
      (x.pattern ? " (" + x.pattern + ")" : "") + (x.remote ? " [other node]" : "");
    if (x.kind === "stream") return "stream " + x.stream;
    if (x.kind === "local") return "in-process " + (x.pattern || "");
    return x.kind;
  }

  // consumers and subscriptions
  function lag(v) { return el("span", {class: v > 0 ? "lag" : null}, num(v)); }
  function renderConsumers(page) {
    table("consumers", [
      {title: "consumer", cell: (c) => c.name},
      {title: "stream", cell: (c) => (c.account ? c.account + " / " : "") + c.stream},
      {title: "lag", num: true, cell: (c) => lag(c.lag)},
      {title: "pending", num: true, cell: (c) => num(c.pending)},
      {title: "delivered", num: true, narrow: true, cell: (c) => num(c.delivered)},
      {title: "redelivered", num: true, cell: (c) => num(c.redelivered)},
      {title: "dead letters", num: true, cell: (c) => num(c.dead_lettered)},
      {title: "ack floor", num: true, narrow: true, cell: (c) => c.ack_floor},
      {title: "mode", narrow: true, cell: (c) => c.push ? "push" : "pull"},
    ], page.rows);
    pager("consumers-pager", page, "consumers");
  }
  function renderSubscriptions(page) {
    table("subscriptions", [
      {title: "id", cell: (s) => s.id},
      {title: "stream", cell: (s) => s.stream || "–"},
      {title: "sink", narrow: true, cell: (s) => (s.protocol || "") + " " + (s.sink || "")},
      {title: "status", cell: (s) => s.status + (s.reason ? ": " + s.reason : "")},
      {title: "lag", num: true, cell: (s) => lag(s.lag)},
      {title: "pending", num: true, cell: (s) => num(s.pending)},
      {title: "failed", num: true, cell: (s) => num(s.failed)},
      {title: "dead", num: true, cell: (s) => num(s.dead)},
      {title: "sink state", narrow: true, cell: (s) => sinkState(s.sink_state)},
      {title: "last error", cell: (s) => s.last_error || "–"},
    ], page.rows);
    pager("subscriptions-pager", page, "subscriptions");
  }

  function sinkState(k) {
    if (!k) return "–";
    if (k.retired) return "retired" + (k.retired_reason ? ": " + k.retired_reason : "");
    const parts = [];
    if (k.handshake && k.handshake !== "granted" && k.handshake !== "none") parts.push("handshake " + k.handshake);
    parts.push("in flight " + (k.in_flight || 0));
    if (k.last_status) parts.push("last answer " + k.last_status);
    return parts.join(", ");
  }

  // connections
  function renderConnections(page) {
    $("connections-note").textContent = num(page.slow_consumers) +
      " slow consumers cut since start (see Advisories)";
    table("connections", [
      {title: "id", num: true, cell: (c) => c.cid},
      {title: "door", cell: (c) => c.door},
      {title: "peer", narrow: true, cell: (c) => c.peer},
      {title: "user / account", cell: (c) => (c.user || "–") + " / " + c.account},
      {title: "subs", num: true, cell: (c) => c.subscriptions},
      {title: "in /s", num: true, cell: (c) => num(c.in_rate)},
      {title: "out /s", num: true, cell: (c) => num(c.out_rate)},
      {title: "pending", num: true, cell: (c) => bytes(c.pending_bytes)},
      {title: "dropped", num: true, cell: (c) => num(c.dropped)},
      {title: "name", narrow: true, cell: (c) => c.name || ""},
    ], page.rows);
    pager("connections-pager", page, "connections");
  }

  // catalog
  function renderCatalog(d) {
    const box = $("catalog");
    if (!d.enabled) {
      box.replaceChildren(el("p", {class: "muted"},
        "The discovery catalog is off on this server (it comes with the HTTP door)."));
      $("catalog-pager").replaceChildren();
      return;
    }
    box.replaceChildren(...d.rows.map((s) => el("div", {class: "panel"},
      el("h2", null, "Stream " + s.stream, el("span", {class: "muted"}, "  " + s.subjects.join(" "))),
      s.types.length ? el("div", {class: "scroll"}, el("table", null,
        el("thead", null, el("tr", null, ...["type", "events", "rate /s", "source",
          "content type", "schema"].map((h) => el("th", null, h)))),
        el("tbody", null, ...s.types.map((t) => el("tr", null,
          el("td", null, t.type), el("td", {class: "num"}, num(t.count)),
          el("td", {class: "num"}, num(t.rate)),
          el("td", null, t.source + (t.sources === "many" ? " (and others)" : "")),
          el("td", null, t.datacontenttype || "–"),
          el("td", null, t.schema ? el("details", null, el("summary", null, t.schema.xid),
            el("pre", null, JSON.stringify(t.schema.document, null, 2)))
            : (t.dataschema || "–")))))))
        : el("p", {class: "muted"}, "no events read yet"))));
    pager("catalog-pager", d, "catalog");
  }

  // advisories
  function renderAdvisories() {
    const sel = $("advisories-kind");
    const have = new Set([...sel.options].map((o) => o.value));
    for (const k of state.kinds) {
      if (sel.options.length > 100) break;      // (kinds come from subjects: a bounded list)
      if (!have.has(k)) sel.append(el("option", {value: k}, k));
    }
    if (state.view !== "advisories") return;
    const kind = sel.value;
    const rows = (state.advRows || []).filter((a) => !kind || a.kind === kind);
    table("advisories", [
      {title: "time", cell: (a) => when(a.time)},
      {title: "kind", cell: (a) => a.kind},
      {title: "subject", narrow: true, cell: (a) => a.subject},
      {title: "what", cls: "data", cell: (a) => summary(a.body)},
    ], rows);
  }
  function summary(body) {
    const s = JSON.stringify(body);
    return s.length > 400 ? s.slice(0, 400) + " …" : s;
  }

  // -- start -------------------------------------------------------------------------------

  takeToken();
  state.auth = sessionStorage.getItem("ff-auth");
  show();
  startFeed();
})();
