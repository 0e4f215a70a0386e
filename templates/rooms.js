// smolchat rooms list: the rooms with people in them and this person's direct rooms, each with
// its unread count (messages newer than the last one this device showed there) and its count
// of mentions of you. The newest id of each room comes from GET /rooms (asked now and then)
// and, at once, from `activity` frames the server sends this connection about a direct room or
// a mention elsewhere. What this device has seen is kept in localStorage, per room.
"use strict";

window.smolchat = window.smolchat || {};

(() => {
  const body = document.body;
  const room = body.dataset.room;
  const myName = body.dataset.name;
  const t = window.smolchat.t;
  const $ = (id) => document.getElementById(id);
  const REFRESH = 15000;  // how often the list is asked for again
  const KEPT = 200;       // rooms whose seen ids this device remembers

  const load = (key) => {
    try { return JSON.parse(localStorage.getItem("smolchat." + key) || "{}") || {}; } catch { return {}; }
  };
  const save = (key, map) => {
    const entries = Object.entries(map);
    if (entries.length > KEPT) map = Object.fromEntries(entries.slice(-KEPT));
    try { localStorage.setItem("smolchat." + key, JSON.stringify(map)); } catch { /* private mode */ }
  };
  let list = [];          // the last /rooms answer, with what activity frames added since
  const newest = {};      // room → newest id heard of on this page

  const isDirect = (name) => name.startsWith("dm.");
  const href = (name) => (name === "lobby" ? "/" : `/r/${name}`);

  /** Messages in `name` newer than what this device showed there. */
  function unread(name, seen) {
    const last = newest[name] || 0;
    if (!(name in seen)) return isDirect(name) ? last : 0;
    return Math.max(0, last - seen[name]);
  }

  function entry(r, seen, mentions) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = href(r.room);
    a.textContent = r.with ? `@${r.with}` : `#${r.room}`;
    if (r.room === room) a.className = "current";
    li.append(a);
    const count = unread(r.room, seen);
    if (r.room !== room && count) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(count);
      badge.setAttribute("aria-label", t("unreadCount", { count }));
      li.append(badge);
    }
    const mentioned = mentions[r.room] || 0;
    if (r.room !== room && mentioned) {
      const badge = document.createElement("span");
      badge.className = "badge mentions";
      badge.textContent = `@${mentioned}`;
      badge.setAttribute("aria-label", t("mentionCount", { count: mentioned }));
      li.append(badge);
    }
    if (!r.with && r.people) {
      const people = document.createElement("span");
      people.className = "hint";
      people.textContent = String(r.people);
      people.setAttribute("aria-label", t("peopleCount", { count: r.people }));
      li.append(people);
    }
    li.dataset.room = r.room;
    return li;
  }

  function render() {
    const seen = load("seen"), mentions = load("mentions");
    let baselined = false;
    // A public room first seen in the list starts with nothing unread.
    for (const r of list) {
      if (!isDirect(r.room) && !(r.room in seen)) { seen[r.room] = newest[r.room] || 0; baselined = true; }
    }
    if (baselined) save("seen", seen);
    const rooms = list.filter((r) => !isDirect(r.room));
    if (!isDirect(room) && !rooms.some((r) => r.room === room)) rooms.push({ room, people: 0 });
    rooms.sort((a, b) => a.room.localeCompare(b.room));
    $("rooms").replaceChildren(...rooms.map((r) => entry(r, seen, mentions)));
    const directs = list.filter((r) => isDirect(r.room));
    directs.sort((a, b) => (a.with || "").localeCompare(b.with || ""));
    $("directs").replaceChildren(...directs.map((r) => entry(r, seen, mentions)));
    $("directs-none").hidden = directs.length > 0;
  }

  function heard(name, id) {
    if (id > (newest[name] || 0)) newest[name] = id;
  }

  async function refresh() {
    try {
      const res = await fetch("/rooms", { cache: "no-store" });
      if (!res.ok) return;
      const rooms = await res.json();
      // Direct rooms an activity frame told of stay until the list has them.
      const told = list.filter((r) => r.told && !rooms.some((x) => x.room === r.room));
      list = rooms.concat(told);
      for (const r of rooms) heard(r.room, r.last_id || 0);
      render();
    } catch { /* offline: keep the last list */ }
  }

  /** Called by chat.js for each message shown in this room: it is seen. */
  function seenHere(id) {
    heard(room, id);
    const seen = load("seen");
    if ((seen[room] || 0) < id) { seen[room] = id; save("seen", seen); }
  }

  /** Called by chat.js for an `activity` frame: news from another room. */
  function activity(m) {
    if (m.room === room) return;
    heard(m.room, m.id);
    if (m.direct && !list.some((r) => r.room === m.room)) {
      list.push({ room: m.room, people: 0, with: m.name === myName ? "…" : m.name, told: true });
      refresh(); // the list says with whom when it was not this person
    }
    if (m.mention) {
      const mentions = load("mentions");
      mentions[m.room] = (mentions[m.room] || 0) + 1;
      save("mentions", mentions);
    }
    render();
    if (m.id > 0 && m.name !== myName && (m.direct || m.mention)) {
      window.smolchat.alert && window.smolchat.alert(`${m.name}: ${m.direct ? t("directMessage") : t("mentionedYou", { room: `#${m.room}` })}`);
    }
  }

  /** Opens (or finds) the direct room with `name`, who is in this room, and goes there. */
  async function openDirect(name) {
    try {
      const res = await fetch(`/dm?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`, { method: "POST" });
      if (!res.ok) return false;
      const { room: direct } = await res.json();
      location.href = href(direct);
      return true;
    } catch { return false; }
  }

  // Opening a room clears its mentions; the other tabs' lists follow this device's storage.
  const mentions = load("mentions");
  if (mentions[room]) { delete mentions[room]; save("mentions", mentions); }
  window.addEventListener("storage", (event) => { if (event.key && event.key.startsWith("smolchat.")) render(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

  window.smolchat.rooms = { refresh, seenHere, activity, openDirect };
  refresh();
  setInterval(refresh, REFRESH);
})();
