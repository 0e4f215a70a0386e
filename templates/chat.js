// smolchat page: connects to this room's WebSocket, renders what arrives as text (never HTML),
// sends what you type, and reconnects with backoff when the connection drops.
"use strict";

(() => {
  const body = document.body;
  const room = body.dataset.room;
  const host = body.dataset.host; // injected by the server from the request's Host header
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const $ = (id) => document.getElementById(id);
  const list = $("messages"), text = $("text"), send = $("send"), status = $("status");
  const NAME_KEY = "smolchat.name";

  let socket = null;
  let retryDelay = 500;          // doubles per failed attempt, up to MAX_RETRY_DELAY
  const MAX_RETRY_DELAY = 15000;
  let unread = 0;
  const baseTitle = document.title;

  // Avatar: initials on a colour derived from the name, drawn locally (no external service).
  function avatar(name) {
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    const el = document.createElement("span");
    el.className = "avatar";
    el.style.background = `hsl(${hash % 360} 45% 40%)`;
    const words = name.trim().split(/\s+/);
    const initials = words.length > 1 ? [...words[0]][0] + [...words[1]][0] : [...name].slice(0, 2).join("");
    el.textContent = initials.toUpperCase();
    el.setAttribute("aria-hidden", "true");
    return el;
  }

  function localTime(when) {
    const date = new Date(when);
    return isNaN(date) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function stickToBottom(render) {
    const main = list.parentElement;
    const atBottom = main.scrollHeight - main.scrollTop - main.clientHeight < 40;
    render();
    if (atBottom) main.scrollTop = main.scrollHeight;
  }

  function showMessage(m) {
    stickToBottom(() => {
      const li = document.createElement("li");
      li.className = "msg" + (m.name === myName() ? " mine" : "");
      li.dataset.id = m.id;
      const meta = document.createElement("div");
      meta.className = "meta";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = m.name;
      const time = document.createElement("time");
      time.dateTime = m.when;
      time.textContent = localTime(m.when);
      meta.append(name, time);
      const content = document.createElement("div");
      content.className = "text";
      content.textContent = m.text;
      li.append(avatar(m.name), meta, content);
      list.append(li);
    });
    if (document.hidden) {
      unread += 1;
      document.title = `(${unread}) ${baseTitle}`;
    }
  }

  function showEvent(words) {
    stickToBottom(() => {
      const li = document.createElement("li");
      li.className = "event";
      li.textContent = words;
      list.append(li);
    });
  }

  function setStatus(state, words) {
    status.className = "status " + state;
    status.textContent = words;
    const online = state === "online";
    text.disabled = !online;
    send.disabled = !online;
  }

  function myName() {
    return localStorage.getItem(NAME_KEY) || "";
  }

  function connect() {
    const url = `${scheme}${host}/ws/${encodeURIComponent(room)}?name=${encodeURIComponent(myName())}`;
    setStatus("connecting", "connecting…");
    socket = new WebSocket(url);
    socket.onopen = () => {
      retryDelay = 500;
      setStatus("online", "online");
      text.focus();
    };
    socket.onmessage = (event) => {
      let m;
      try { m = JSON.parse(event.data); } catch { return; }
      if (m.type === "message") showMessage(m);
      else if (m.type === "join") showEvent(`${m.name} joined · ${localTime(m.when)}`);
      else if (m.type === "leave") showEvent(`${m.name} left · ${localTime(m.when)}`);
    };
    socket.onclose = (event) => {
      socket = null;
      const why = event.reason ? ` (${event.reason})` : "";
      setStatus("offline", `offline${why}, retrying…`);
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, MAX_RETRY_DELAY);
    };
  }

  function sendMessage() {
    const value = text.value;
    if (!value.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ text: value }));
    text.value = "";
    text.style.height = "";
  }

  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  text.addEventListener("input", () => {
    text.style.height = "";
    text.style.height = Math.min(text.scrollHeight, 128) + "px";
  });
  $("room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const next = $("room-input").value.trim().toLowerCase();
    if (/^[a-z0-9_-]{1,32}$/.test(next)) location.href = `/r/${next}`;
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      document.title = baseTitle;
    }
  });

  const dialog = $("name-dialog");
  const who = $("who");
  function askName() {
    $("name-input").value = myName();
    dialog.showModal();
  }
  $("name-form").addEventListener("submit", () => {
    const name = $("name-input").value.trim();
    if (!name) return;
    const changed = name !== myName();
    localStorage.setItem(NAME_KEY, name);
    who.textContent = name;
    if (!socket && !changed) return;
    if (socket) socket.close(1000, "changing name"); // onclose reconnects with the new name
    else connect();
  });
  who.addEventListener("click", askName);

  if (myName()) {
    who.textContent = myName();
    connect();
  } else {
    askName();
  }
})();
