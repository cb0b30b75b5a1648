// Teacher inbox: connects to the router with a token (first `auth` frame),
// resumes after drops, pins action items with a live countdown. No build step.
"use strict";

(function () {
  const CATEGORY_TITLES = {
    student_workflow: "Student workflow",
    file_operations: "Files",
    batch_progress: "Batch progress",
    processing_results: "Results",
    class_management: "Classes",
    system_alerts: "System",
  };
  const PRIORITY_LABEL = { critical: "CRITICAL", immediate: "IMMEDIATE", high: "HIGH", standard: "STANDARD", low: "LOW" };

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search || location.hash.slice(1));
  let token = params.get("token") || sessionStorage.getItem("outbox.token");

  const items = new Map(); // event id -> {frame, acked, el}
  const pendingIds = new Set();
  let position = "0-0"; // first connection: the whole retained history
  let ws = null;
  let backoff = 500;
  let syncing = true;

  function teacherOf(tok) {
    try {
      const part = tok.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)).sub || "";
    } catch (e) {
      return "";
    }
  }

  function setConn(state, text) {
    const el = $("conn");
    el.className = "conn conn-" + state;
    $("conn-text").textContent = text;
  }

  function announce(text, urgent) {
    const el = urgent ? $("announcer-urgent") : $("announcer");
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 30);
  }

  function titleOf(n) {
    const p = n.payload || {};
    if (typeof p.message === "string" && p.message) return p.message;
    return n.notification_type.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
  }

  function fmtLeft(ms) {
    if (ms <= 0) return "overdue";
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d > 0) return `${d}d ${h}h ${m}m left`;
    if (h > 0) return `${h}h ${m}m ${sec}s left`;
    return `${m}m ${sec}s left`;
  }

  function isPinned(rec) {
    return rec.frame.notification.action_required && !rec.acked && pendingIds.has(rec.frame.id);
  }

  function render(rec) {
    const f = rec.frame, n = f.notification;
    const li = rec.el || document.createElement("li");
    li.className = "item p-" + n.priority;
    li.dataset.id = f.id;
    li.dataset.type = n.notification_type;
    li.tabIndex = 0;
    li.textContent = "";
    const top = document.createElement("div");
    top.className = "top";
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = titleOf(n);
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = PRIORITY_LABEL[n.priority] || n.priority;
    top.append(title, badge);
    const meta = document.createElement("div");
    meta.className = "meta";
    const when = f.created_at ? new Date(f.created_at) : new Date();
    meta.textContent = `${n.notification_type} · ${when.toLocaleString()}` +
      (n.batch_id ? ` · batch ${n.batch_id}` : "") + (n.class_id ? ` · class ${n.class_id}` : "");
    li.append(top, meta);
    const detail = Object.entries(n.payload || {}).filter(([k]) => k !== "message");
    if (detail.length) {
      const d = document.createElement("div");
      d.className = "detail";
      d.textContent = detail.map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
      li.append(d);
    }
    if (n.action_required) {
      if (isPinned(rec)) {
        if (n.deadline_timestamp) {
          const dl = document.createElement("div");
          dl.className = "deadline";
          dl.dataset.deadline = n.deadline_timestamp;
          li.append(dl);
        }
        const b = document.createElement("button");
        b.type = "button";
        b.className = "ack";
        b.textContent = "Acknowledge";
        b.setAttribute("aria-label", "Acknowledge: " + titleOf(n));
        b.addEventListener("click", () => ack(f.id, b));
        li.append(b);
      } else {
        const s = document.createElement("div");
        s.className = "state-acked";
        const expired = n.deadline_timestamp && new Date(n.deadline_timestamp) <= new Date();
        s.textContent = rec.acked || !expired ? "✓ Acknowledged" : "Deadline passed";
        li.append(s);
      }
    }
    rec.el = li;
    return li;
  }

  function groupList(category) {
    let sec = document.querySelector(`section[data-category="${category}"]`);
    if (!sec) {
      sec = document.createElement("section");
      sec.dataset.category = category;
      const h = document.createElement("h2");
      h.id = "cat-" + category;
      h.textContent = CATEGORY_TITLES[category] || category;
      sec.setAttribute("aria-labelledby", h.id);
      const ul = document.createElement("ul");
      ul.className = "list";
      sec.append(h, ul);
      $("groups").append(sec);
    }
    return sec.querySelector("ul");
  }

  function place(rec) {
    const li = render(rec);
    const target = isPinned(rec) ? $("pinned") : groupList(rec.frame.notification.category);
    // newest first (positions grow); pinned: highest priority first, as the server sends them
    if (target === $("pinned")) {
      target.append(li);
    } else {
      target.prepend(li);
    }
    refreshCounts();
  }

  function refreshCounts() {
    const pinned = $("pinned").children.length;
    $("pinned-count").textContent = String(pinned);
    $("pinned-empty").hidden = pinned > 0;
    $("empty").hidden = items.size > 0;
    tick();
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll(".deadline[data-deadline]").forEach((el) => {
      const left = new Date(el.dataset.deadline).getTime() - now;
      el.textContent = "Deadline: " + fmtLeft(left);
      el.classList.toggle("overdue", left <= 0);
    });
  }

  function onNotification(f) {
    if (!f.pending && !f.replayed) position = f.position;
    if (f.replayed) position = f.position;
    if (f.pending) pendingIds.add(f.id);
    else if (f.notification.action_required && !syncing) pendingIds.add(f.id);
    const known = items.get(f.id);
    if (known) {
      if (f.pending && known.el) place(known);
      return;
    }
    const rec = { frame: f, acked: false, el: null };
    items.set(f.id, rec);
    place(rec);
    if (!f.replayed && !f.pending && !syncing) {
      rec.el.classList.add("new");
      const n = f.notification;
      announce(`${PRIORITY_LABEL[n.priority]} notification: ${titleOf(n)}`, n.priority === "critical");
    }
  }

  function onAcked(id) {
    pendingIds.delete(id);
    const rec = items.get(id);
    if (!rec) return;
    rec.acked = true;
    place(rec);
    announce("Acknowledged: " + titleOf(rec.frame.notification), false);
  }

  function ack(id, button) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    button.disabled = true;
    button.textContent = "Acknowledging…";
    ws.send(JSON.stringify({ type: "ack", id: id }));
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    setConn("connecting", "Connecting…");
    ws = new WebSocket(`${proto}//${location.host}/ws`);
    syncing = true;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token: token, resume: position }));
    });
    ws.addEventListener("message", (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "welcome") {
        $("teacher").textContent = "· " + f.teacher_id;
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
      } else if (f.type === "error") {
        console.warn("router error", f.code, f.message);
      }
    });
    ws.addEventListener("close", (ev) => {
      ws = null;
      if (ev.code === 4401 || ev.code === 4400) {
        setConn("offline", "Sign-in failed: " + (ev.reason || "invalid token"));
        sessionStorage.removeItem("outbox.token");
        $("login").hidden = false;
        return;
      }
      setConn("offline", `Offline, reconnecting in ${Math.round(backoff / 1000)} s`);
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    });
  }

  $("reload").addEventListener("click", () => location.reload());
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token-input").value.trim();
    sessionStorage.setItem("outbox.token", token);
    $("login").hidden = true;
    connect();
  });
  setInterval(tick, 1000);
  refreshCounts();
  if (token) {
    sessionStorage.setItem("outbox.token", token);
    $("teacher").textContent = "· " + teacherOf(token);
    connect();
  } else {
    $("login").hidden = false;
  }
})();
