// smolchat page: connects to this room's WebSocket, renders what arrives as text (never HTML),
// sends what you type, and reconnects with backoff when the connection drops, asking for the
// messages it missed (by id) so that each message shows exactly once, in order.
"use strict";

(() => {
  const body = document.body;
  const room = body.dataset.room;
  const host = body.dataset.host; // injected by the server from the request's Host header
  const myName = body.dataset.name;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const $ = (id) => document.getElementById(id);
  const list = $("messages"), text = $("text"), send = $("send"), status = $("status");
  const NAME_TAKEN = 4409; // close code: somebody else has this name in the room
  const t = window.smolchat.t; // the page's words, in its language (text.js)
  const rooms = window.smolchat.rooms; // rooms.js
  const SHUT_OUT = 4403;   // close code: a host kicked or banned this person
  // Moderation (moderation.js) sees every frame first, adds menus to messages and people, and
  // may hold the composer shut; these few hooks are all chat.js knows of it.
  const moderation = window.smolchat.moderation || null;

  let socket = null;
  let lastId = 0;              // newest message shown; reconnects ask for what came after
  let retryDelay = 500;        // doubles per failed attempt, up to MAX_RETRY_DELAY
  let retryTimer = null;
  const MAX_RETRY_DELAY = 15000;
  let unread = 0;
  const baseTitle = document.title;
  let members = new Set();     // names in the room, kept from welcome, join, leave, presence
  let people = 0;              // the server's head count (a large room's list may be partial)
  let membersPartial = false;  // the list is known to miss some: pull it when it is shown
  let pulling = null;
  let replayedUntil = 0;       // messages up to this id are history, not news (from welcome)
  let online = false;
  let sharedUp = true;         // rooms shared across boxes: this box reaches the others
  // Messages sent and not yet seen back, by the key each was sent with. One the server says
  // was not sent (`unavailable`: a room shared across boxes cut off from them) is sent again
  // with the same key once the room can send, and the server keeps each key's message once,
  // so it shows once even if the first sending was kept after all. At most MAX_TRIES each.
  const pending = new Map();   // key -> { text, tries }
  const MAX_TRIES = 3;
  let resendTimer = null;
  let refused = false;         // closed for good (name taken, kicked, banned): no reconnecting
  window.smolchat.members = () => [...members].filter((n) => n !== myName);

  // Avatar: initials on a colour derived from the name, drawn locally (no external service).
  function avatar(name) {
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    const el = document.createElement("span");
    el.className = "avatar";
    el.style.background = `hsl(${hash % 360} 50% 30%)`;
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
      li.className = "msg" + (m.name === myName ? " mine" : "");
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
      if (m.type === "file") content.append(window.smolchatShare.render(m)); // share.js
      else {
        content.dir = "auto";
        content.append(window.smolchat.renderText(m.text, m.mentions || [], myName));
      }
      if ((m.mentions || []).includes(myName)) li.classList.add("mentions-me");
      li.append(avatar(m.name), meta, content);
      if (moderation) moderation.message(li, m);
      list.append(li);
    });
    rooms.seenHere(m.id);
    if (document.hidden) {
      unread += 1;
      document.title = `(${unread}) ${baseTitle}`;
    }
    window.smolchat.noticeMessage(m, m.id > replayedUntil, myName);
  }

  function showEvent(words, kind) {
    stickToBottom(() => {
      const li = document.createElement("li");
      li.className = "event" + (kind ? " " + kind : "");
      li.textContent = words;
      list.append(li);
    });
  }

  // The whole member list, page by page. A large room does not send it (it would cost every
  // member every name); the page asks when the list is on screen and known to be out of date.
  async function pullPeople() {
    if (pulling || !membersPartial) return;
    pulling = (async () => {
      const names = new Set();
      let after = null;
      try {
        for (let page = 0; page < 100; page++) {
          const q = after === null ? "" : `?after=${encodeURIComponent(after)}`;
          const res = await fetch(`/rooms/${encodeURIComponent(room)}/members${q}`, { cache: "no-store" });
          if (!res.ok) return;
          const body = await res.json();
          body.members.forEach((n) => names.add(n));
          people = body.people;
          if (!body.next) break;
          after = body.next;
        }
        members = names;
        membersPartial = false;
        showPeople();
      } catch { /* offline: the next frame says what is known */ }
    })();
    await pulling;
    pulling = null;
  }

  function peopleShown() {
    const side = $("side");
    return side.offsetParent !== null && getComputedStyle(side).display !== "none";
  }

  function showPeople() {
    if (membersPartial && peopleShown()) {
      // Spread a crowd's requests over a few seconds.
      setTimeout(pullPeople, Math.random() * 3000);
    }
    const names = [...members].sort();
    const shownPeople = $("people");
    shownPeople.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.textContent = name === myName ? t("nameYou", { name }) : name;
      li.append(avatar(name), label);
      if (name !== myName && !body.dataset.directWith) {
        // A conversation of two, by tap or click.
        const talk = document.createElement("button");
        talk.type = "button";
        talk.className = "link direct";
        talk.textContent = t("messageThem");
        talk.setAttribute("aria-label", t("messageName", { name }));
        talk.addEventListener("click", async () => {
          talk.disabled = true;
          if (!(await rooms.openDirect(name))) { talk.disabled = false; showEvent(t("directFailed", { name }), "warn"); }
        });
        li.append(talk);
      }
      if (moderation) moderation.person(li, name);
      return li;
    }));
    const count = Math.max(people, names.length);
    $("people-count").textContent = `(${count})`;
    $("people-toggle").textContent = t("peopleCount", { count });
  }

  function setStatus(state, words) {
    status.className = "status " + state;
    status.textContent = words;
    online = state === "online";
    updateComposer();
  }

  function updateComposer() {
    const open = online && sharedUp && (!moderation || moderation.writable());
    text.disabled = !open;
    send.disabled = !open;
  }

  // Rooms shared across boxes: while this box cannot reach the others, say so above the chat and
  // hold the composer shut (the server would refuse what is sent).
  const sharedNote = document.createElement("p");
  sharedNote.id = "shared-down";
  sharedNote.className = "banner";
  sharedNote.setAttribute("role", "alert");
  sharedNote.hidden = true;
  sharedNote.textContent = t("sharedDown");
  document.querySelector("header").after(sharedNote);
  function showShared(up) {
    sharedUp = up;
    sharedNote.hidden = up;
    updateComposer();
  }

  function newKey() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Sends again what the server said it did not send, once it can; false if it cannot yet. */
  function resendPending() {
    clearTimeout(resendTimer);
    resendTimer = null;
    if (!sharedUp || !socket || socket.readyState !== WebSocket.OPEN) return false;
    for (const [key, sending] of pending) {
      if (!sending.refused) continue;
      sending.refused = false;
      sending.tries += 1;
      socket.send(JSON.stringify({ text: sending.text, key }));
    }
    return true;
  }

  /** A refusal naming one of our messages: kept for sending again, or given up. */
  function refusedMessage(m) {
    const sending = pending.get(m.key);
    if (!sending) return;
    if (m.code !== "unavailable" || sending.tries >= MAX_TRIES) {
      pending.delete(m.key);
      return;
    }
    sending.refused = true;
    // Cut off (a `shared` frame came or comes): sent when it is back. Otherwise the answer was
    // slow or lost: try again in a moment.
    if (sharedUp && !resendTimer) resendTimer = setTimeout(resendPending, 3000);
  }

  function scheduleReconnect() {
    clearTimeout(retryTimer);
    // Jitter spreads a room's reconnects after a server restart.
    const delay = retryDelay * (0.75 + Math.random() / 2);
    retryTimer = setTimeout(connect, delay);
    retryDelay = Math.min(retryDelay * 2, MAX_RETRY_DELAY);
  }

  function connect() {
    clearTimeout(retryTimer);
    const since = lastId > 0 ? `?since=${lastId}` : "";
    setStatus("connecting", lastId > 0 ? t("reconnecting") : t("connecting"));
    const ws = new WebSocket(`${scheme}${host}/ws/${encodeURIComponent(room)}${since}`);
    socket = ws;
    let caughtUp = lastId;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      retryDelay = 500;
      setStatus("online", t("online"));
      if (document.activeElement === body) text.focus();
    };
    ws.onmessage = (event) => {
      let m;
      try { m = JSON.parse(event.data); } catch { return; }
      if (m.type === "message" && m.key) pending.delete(m.key);
      if (m.type === "error" && m.key) refusedMessage(m);
      if (moderation && moderation.frame(m)) return;
      if (m.type === "welcome") replayedUntil = m.last_id;
      if (m.type === "message" || (m.type === "file" && window.smolchatShare)) {
        if (m.id > lastId) { // replayed history may overlap what is on screen
          lastId = m.id;
          showMessage(m);
        }
      } else if (m.type === "welcome") {
        showShared(true); // a `shared` frame follows if this box is cut off
        members = new Set(m.members);
        members.add(m.name);
        people = m.people ?? members.size;
        membersPartial = members.size < people;
        showPeople();
        if (caughtUp > 0 && !m.complete) {
          showEvent(t("missedSome"), "warn");
        }
      } else if (m.type === "presence") {
        if (m.members) {
          members = new Set(m.members);
          membersPartial = false;
        } else {
          (m.joined || []).forEach((n) => members.add(n));
          (m.left || []).forEach((n) => members.delete(n));
          if (m.partial) membersPartial = true;
        }
        people = m.people ?? members.size;
        if (members.size !== people) membersPartial = true;
        showPeople();
      } else if (m.type === "shared") {
        showShared(Boolean(m.up));
        if (m.up) resendPending();
      } else if (m.type === "activity") {
        rooms.activity(m);
      } else if (m.type === "error" && m.code === "unavailable" && pending.has(m.key)) {
        showEvent(t("notSentYet"), "warn");
      } else if (m.type === "error") {
        showEvent(m.text, "warn");
      } else if (m.type === "join" || m.type === "leave") {
        if (m.type === "join") members.add(m.name); else members.delete(m.name);
        people = m.people ?? members.size;
        showPeople();
        if (m.name !== myName) showEvent(t(m.type === "join" ? "joined" : "left", { name: m.name, time: localTime(m.when) }));
        rooms.refresh();
      }
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      refused = event.code === NAME_TAKEN || event.code === SHUT_OUT;
      if (event.code === NAME_TAKEN) {
        setStatus("offline", t("nameTakenStatus"));
        showEvent(t("nameTaken", { name: myName }), "warn");
        return; // retrying would only be refused again
      }
      if (event.code === SHUT_OUT) {
        setStatus("offline", moderation ? moderation.shutOut(event.reason) : event.reason);
        return; // kicked or banned: coming back is the person's choice, not a loop's
      }
      setStatus("offline", event.reason ? t("offlineWhy", { why: event.reason }) : t("offline"));
      if (!opened) checkSession();
      scheduleReconnect();
    };
  }

  // A refused WebSocket may mean the session ended (new passcode, new key): sign in again.
  async function checkSession() {
    try {
      const res = await fetch("/session", { cache: "no-store" });
      if (res.status === 401) location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
    } catch { /* the server is down: keep retrying */ }
  }

  if (moderation) {
    moderation.attach({
      myName,
      send: (frame) => {
        if (!socket || socket.readyState !== WebSocket.OPEN) return false;
        socket.send(JSON.stringify(frame));
        return true;
      },
      refresh: updateComposer,
    });
  }

  function sendMessage() {
    const value = text.value;
    if (!value.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    const key = newKey();
    pending.set(key, { text: value, tries: 1, refused: false });
    socket.send(JSON.stringify({ text: value, key }));
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
    if (/^[a-z0-9_-]{1,32}$/.test(next)) location.href = next === "lobby" ? "/" : `/r/${next}`;
  });
  $("people-toggle").addEventListener("click", () => {
    const open = $("side").classList.toggle("open");
    $("people-toggle").setAttribute("aria-expanded", String(open));
    if (open) pullPeople();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      document.title = baseTitle;
    }
  });
  // Back on the network: try at once instead of waiting out the backoff.
  window.addEventListener("online", () => { if (!socket && !refused) { retryDelay = 500; connect(); } });

  connect();
})();
