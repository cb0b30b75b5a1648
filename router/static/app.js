// Teacher inbox: words from the catalog (/catalog.json), action items pinned
// in a fixed order, times in the teacher's locale and time zone, the sign-in
// token kept for this tab only. Connects with a first `auth` frame and resumes
// after drops (docs/protocol.md, "What a client must do"). No build step.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "outbox.token";
  const TITLE = "Teacher inbox";

  // The token comes in the URL once (a link from the platform); it leaves the
  // address bar and the history at once and is kept for this tab only.
  const here = new URL(location.href);
  let token = here.searchParams.get("token");
  if (token !== null) {
    here.searchParams.delete("token");
    history.replaceState(history.state, "", here.pathname + here.search + here.hash);
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
  }
  token = token || sessionStorage.getItem(TOKEN_KEY);

  let catalog = null;
  let placeholder = null;
  const rank = {}; // priority id -> rank
  const priorityLabel = {};
  const items = new Map(); // event id -> {frame, acked, el}
  const pendingIds = new Set();
  let position = "0-0"; // first connection: the whole retained history
  let ws = null;
  let backoff = 500;
  let syncing = true;
  const acking = []; // ids acknowledged and not answered yet, in order (answers come in order)

  const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  const short = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

  // -- words (the same rules as contracts/words.py) ----------------------------

  function valueText(v) {
    if (typeof v === "number") return Number.isFinite(v) ? String(v) : null;
    if (typeof v === "string") {
      const t = v.trim();
      return t && [...v].length <= catalog.max_value_chars ? t : null;
    }
    return null;
  }

  function fill(template, payload) {
    let missing = false;
    const out = template.replace(placeholder, (m, key, one, many) => {
      const v = Object.prototype.hasOwnProperty.call(payload, key) ? payload[key] : undefined;
      if (one !== undefined) {
        if (typeof v !== "number" || !Number.isInteger(v) || v < 0) { missing = true; return ""; }
        return `${v} ${v === 1 ? one : many}`;
      }
      const t = valueText(v);
      if (t === null) { missing = true; return ""; }
      return t;
    });
    return missing ? null : out;
  }

  function describe(n) {
    const entry = catalog.types[n.notification_type];
    if (!entry) return { title: "Notification", text: "You have a new notification." };
    const payload = n.payload && typeof n.payload === "object" ? n.payload : {};
    let text = fill(entry.template, payload);
    if (text === null && typeof payload.message === "string" && payload.message.trim()) {
      text = payload.message.trim();
    }
    return { title: entry.title, text: text || entry.description };
  }

  // -- time --------------------------------------------------------------------

  function ago(date) {
    const s = Math.round((date.getTime() - Date.now()) / 1000);
    const a = Math.abs(s);
    if (a < 45) return "just now";
    if (a < 3600) return relative.format(Math.round(s / 60), "minute");
    if (a < 86400) return relative.format(Math.round(s / 3600), "hour");
    if (a < 7 * 86400) return relative.format(Math.round(s / 86400), "day");
    return short.format(date);
  }

  function left(ms) {
    if (ms <= 0) return "overdue";
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d} d ${h} h left`;
    if (h > 0) return `${h} h ${m} min left`;
    return m > 0 ? `${m} min ${s % 60} s left` : `${s} s left`;
  }

  function timeEl(date, cls) {
    const t = document.createElement("time");
    t.className = cls;
    t.dateTime = date.toISOString();
    t.title = exact.format(date);
    t.dataset.exact = exact.format(date);
    t.tabIndex = 0;
    return t;
  }

  // -- order -------------------------------------------------------------------

  function posKey(p) {
    const [ms, seq] = String(p).split("-");
    return [BigInt(ms || 0), BigInt(seq || 0)];
  }

  function newerFirst(a, b) {
    const [am, as] = posKey(a.frame.position), [bm, bs] = posKey(b.frame.position);
    if (am !== bm) return am > bm ? -1 : 1;
    if (as !== bs) return as > bs ? -1 : 1;
    return 0;
  }

  function deadlineOf(rec) {
    const d = rec.frame.notification.deadline_timestamp;
    return d ? new Date(d).getTime() : Infinity;
  }

  // Needs your action: highest priority first, then the nearest deadline, then oldest.
  function pinnedOrder(a, b) {
    const ra = rank[a.frame.notification.priority] || 0, rb = rank[b.frame.notification.priority] || 0;
    if (ra !== rb) return rb - ra;
    const da = deadlineOf(a), db = deadlineOf(b);
    if (da !== db) return da < db ? -1 : 1;
    return -newerFirst(a, b);
  }

  function isPinned(rec) {
    return rec.frame.notification.action_required && !rec.acked && pendingIds.has(rec.frame.id);
  }

  // -- rendering ---------------------------------------------------------------

  function render(rec) {
    const f = rec.frame, n = f.notification;
    const words = describe(n);
    const li = rec.el || document.createElement("li");
    li.className = "item p-" + n.priority;
    li.dataset.id = f.id;
    li.dataset.type = n.notification_type;
    li.textContent = "";
    const top = document.createElement("div");
    top.className = "top";
    const title = document.createElement("h3");
    title.className = "title";
    title.textContent = words.title;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = priorityLabel[n.priority] || "";
    top.append(title, badge);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = words.text;
    const created = f.created_at ? new Date(f.created_at) : null;
    const when = timeEl(created && !isNaN(created) ? created : new Date(), "when");
    when.dataset.relative = "1";
    when.textContent = ago(new Date(when.dateTime));
    li.append(top, text, when);
    if (n.action_required) {
      if (isPinned(rec)) {
        if (n.deadline_timestamp) {
          const due = new Date(n.deadline_timestamp);
          const dl = document.createElement("p");
          dl.className = "deadline";
          const at = timeEl(due, "due");
          at.textContent = short.format(due);
          const rest = document.createElement("span");
          rest.className = "left";
          rest.dataset.deadline = n.deadline_timestamp;
          dl.append("Due ", at, " · ", rest);
          li.append(dl);
        }
        const b = document.createElement("button");
        b.type = "button";
        b.className = "ack";
        b.textContent = "Acknowledge";
        b.setAttribute("aria-label", "Acknowledge: " + words.title);
        b.addEventListener("click", () => ack(f.id, b));
        li.append(b);
      } else {
        const s = document.createElement("p");
        s.className = "state-acked";
        const expired = n.deadline_timestamp && new Date(n.deadline_timestamp) <= new Date();
        s.textContent = rec.acked || !expired ? "✓ Acknowledged" : "Deadline passed";
        li.append(s);
      }
    }
    rec.el = li;
    return li;
  }

  function buildSections() {
    const groups = $("groups");
    groups.textContent = "";
    for (const c of catalog.categories) {
      const sec = document.createElement("section");
      sec.dataset.category = c.id;
      sec.hidden = true;
      const h = document.createElement("h2");
      h.id = "cat-" + c.id;
      h.textContent = c.title;
      sec.setAttribute("aria-labelledby", h.id);
      const ul = document.createElement("ul");
      ul.className = "list";
      sec.append(h, ul);
      groups.append(sec);
    }
  }

  function listOf(rec) {
    if (isPinned(rec)) return $("pinned");
    const sec = document.querySelector(`section[data-category="${rec.frame.notification.category}"]`);
    return sec ? sec.querySelector("ul") : $("other");
  }

  function insertSorted(list, rec, order) {
    const li = render(rec);
    for (const other of list.children) {
      const o = items.get(other.dataset.id);
      if (o && o !== rec && order(rec, o) < 0) { list.insertBefore(li, other); return; }
    }
    list.append(li);
  }

  function place(rec) {
    const list = listOf(rec);
    if (rec.el && rec.el.parentElement) rec.el.remove();
    insertSorted(list, rec, list === $("pinned") ? pinnedOrder : newerFirst);
    refreshCounts();
  }

  function refreshCounts() {
    const pinned = $("pinned").children.length;
    $("pinned-count").textContent = String(pinned);
    $("pinned-empty").hidden = pinned > 0;
    $("empty").hidden = items.size > 0;
    document.querySelectorAll("#groups section").forEach((sec) => {
      sec.hidden = sec.querySelector("ul").children.length === 0;
    });
    document.title = pinned > 0 ? `(${pinned}) ${TITLE}` : TITLE;
    tick();
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll(".left[data-deadline]").forEach((el) => {
      const ms = new Date(el.dataset.deadline).getTime() - now;
      el.textContent = left(ms);
      el.parentElement.classList.toggle("overdue", ms <= 0);
    });
  }

  function tickRelative() {
    document.querySelectorAll("time[data-relative]").forEach((el) => {
      el.textContent = ago(new Date(el.dateTime));
    });
  }

  function announce(text, urgent) {
    const el = urgent ? $("announcer-urgent") : $("announcer");
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 30);
  }

  // -- protocol ----------------------------------------------------------------

  function onNotification(f) {
    if (!f.pending) position = f.position; // pending frames carry older positions
    if (f.pending) pendingIds.add(f.id);
    else if (f.notification.action_required && !syncing) pendingIds.add(f.id);
    const known = items.get(f.id);
    if (known) {
      if (f.pending) place(known);
      return;
    }
    const rec = { frame: f, acked: false, el: null };
    items.set(f.id, rec);
    place(rec);
    if (!f.replayed && !f.pending && !syncing) {
      rec.el.classList.add("new");
      const n = f.notification;
      announce(`${priorityLabel[n.priority] || ""}: ${describe(n).title}`, n.priority === "critical");
    }
  }

  function onAcked(id) {
    const i = acking.indexOf(id);
    if (i >= 0) acking.splice(i, 1);
    pendingIds.delete(id);
    const rec = items.get(id);
    if (!rec) return;
    rec.acked = true;
    place(rec);
    announce("Acknowledged: " + describe(rec.frame.notification).title, false);
  }

  function ackRefused(id) {
    const i = acking.indexOf(id);
    if (i >= 0) acking.splice(i, 1);
    const rec = items.get(id);
    const b = rec && rec.el && rec.el.querySelector("button.ack");
    if (!b) return;
    b.disabled = false;
    b.textContent = "Not acknowledged yet: try again";
    announce("Not acknowledged yet: the inbox is busy. Please try again in a moment.", false);
  }

  function ack(id, button) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    button.disabled = true;
    button.textContent = "Acknowledging…";
    acking.push(id);
    ws.send(JSON.stringify({ type: "ack", id: id }));
  }

  function setConn(state, text) {
    $("conn").className = "conn conn-" + state;
    $("conn-text").textContent = text;
  }

  // What the teacher sees instead of the inbox when there is no usable sign-in.
  function signIn(kind) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    const screens = {
      missing: ["Open your inbox from the platform",
        "This page needs the sign-in that comes with the Inbox link on the platform. " +
        "Go back to the platform and choose Inbox."],
      expired: ["Your sign-in has expired",
        "For your security, inbox sign-ins last a limited time. Go back to the platform " +
        "and open the Inbox again; nothing you received is lost."],
      refused: ["We could not sign you in",
        "The sign-in link was not accepted. Go back to the platform and open the Inbox " +
        "again. If this keeps happening, contact your school's support."],
    };
    const [head, text] = screens[kind];
    $("signin-title").textContent = head;
    $("signin-text").textContent = text;
    $("signin").dataset.kind = kind;
    $("signin").hidden = false;
    $("content").hidden = true;
    setConn("offline", "Signed out");
    $("signin-title").focus();
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    setConn("connecting", "Connecting…");
    ws = new WebSocket(`${proto}//${location.host}/ws`);
    syncing = true;
    acking.length = 0;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token: token, resume: position }));
    });
    ws.addEventListener("message", (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "welcome") {
        pendingIds.clear(); // rebuilt from this connection's pending frames
      } else if (f.type === "notification") {
        onNotification(f);
      } else if (f.type === "replay_done") {
        syncing = false;
        if (f.position) position = f.position;
        items.forEach((rec) => {
          const inPinned = rec.el && rec.el.parentElement === $("pinned");
          if (inPinned !== isPinned(rec)) place(rec);
        });
        $("lost").hidden = f.recovered;
        backoff = 500;
        setConn("online", "Live");
        refreshCounts();
      } else if (f.type === "acked") {
        onAcked(f.id);
      } else if (f.type === "error" && f.code === "not_pending" && (f.id || acking.length)) {
        onAcked(f.id || acking[0]); // not pending any more: acknowledged elsewhere or expired
      } else if (f.type === "error" && f.id) {
        ackRefused(f.id); // not taken this time (too many at once): the teacher may try again
      }
    });
    ws.addEventListener("close", (ev) => {
      ws = null;
      if (ev.code === 4401) {
        signIn(ev.reason === "token expired" ? "expired" : "refused");
        return;
      }
      // 4400 and 1008 say this page sent something the server did not take:
      // the sign-in is fine. A bad position is given up for the whole
      // retained history (shown once: items are kept by id); after 1008, a
      // longer pause.
      if (ev.code === 4400) position = "0-0";
      let wait = ev.code === 1008 ? Math.max(backoff, 5000) : backoff;
      // 1013 may name how long to stay away (the teacher's replay budget):
      // coming back sooner would only be refused again.
      const named = ev.code === 1013 && /reconnect in (\d+) s/.exec(ev.reason || "");
      if (named) wait = Math.min(Math.max(wait, Number(named[1]) * 1000), 300000);
      const why = ev.code === 1008 ? "Paused by the inbox server" : "Offline";
      setConn("offline", `${why}, reconnecting in ${Math.round(wait / 1000)} s`);
      setTimeout(connect, wait + Math.random() * 250);
      backoff = Math.min(backoff * 2, 15000);
    });
  }

  async function start() {
    if (!token) { signIn("missing"); return; }
    try {
      const r = await fetch("/catalog.json", { cache: "no-cache" });
      catalog = await r.json();
    } catch (e) {
      setConn("offline", "Could not load the inbox; retrying");
      setTimeout(start, 2000);
      return;
    }
    placeholder = new RegExp(catalog.placeholder, "g");
    for (const p of catalog.priorities) { rank[p.id] = p.rank; priorityLabel[p.id] = p.label; }
    buildSections();
    refreshCounts();
    connect();
  }

  $("reload").addEventListener("click", () => location.reload());
  setInterval(tick, 1000);
  setInterval(tickRelative, 30000);
  start();
})();
