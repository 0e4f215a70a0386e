// smolchat moderation on the page: a host's controls (a menu on each message and each person,
// the lock switch, the announcement box, the list of bans and mutes), "delete" on your own recent
// messages, notices shown apart from chat, the standing announcement as a banner, a locked room's
// composer held shut, refusals shown by the composer, and a kicked or banned page saying why.
// chat.js hands it every frame first (`frame`) and asks it about messages, people and whether the
// composer may open; all moderation lives here so chat.js keeps only those few hooks.
"use strict";

window.smolchat = window.smolchat || {};

(() => {
  const t = window.smolchat.t; // the page's words, in its language (text.js)

  /** Moderation codes of `error` frames, shown by the composer (others stay chat.js's). */
  const OWN_ERRORS = new Set(["muted", "locked", "forbidden", "too_late", "not_found", "bad_action", "not_saved"]);
  /** The page's own words for the server's refusals (the server's text is English). */
  const ERROR_WORDS = {
    locked: "errLocked", forbidden: "errForbidden", too_late: "errTooLate",
    not_found: "errNotFound", bad_action: "errBadAction", not_saved: "errNotSaved",
  };
  /** Words for the events of host-action notices. */
  const NOTICE_WORDS = {
    removed: "noticeRemoved", kicked: "noticeKicked", muted: "noticeMuted", unmuted: "noticeUnmuted",
    banned: "noticeBanned", unbanned: "noticeUnbanned", locked: "noticeLocked", unlocked: "noticeUnlocked",
    taken_down: "noticeTakenDown", cleared: "noticeCleared",
  };
  const MUTES = [["minutes5", 5], ["hour1", 60], ["day1", 24 * 60], ["week1", 7 * 24 * 60]];

  let api = null;              // from chat.js: send(frame) and refresh() of the composer
  let host = false;            // this client signed in as a host (welcome.host)
  let me = null;               // this client's name as the server knows it (welcome.name)
  let locked = false;          // only hosts may write (welcome.locked, room frames)
  let deleteWindow = 0;        // seconds an author may delete their own message (0: never)
  let shut = false;            // kicked or banned: this page is done
  let replayUntil = 0;         // history ids up to this follow the welcome
  let expectStanding = false;  // right after the history: the standing announcement, no chat row
  let muteTimer = null;

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key.startsWith("aria-") || key === "role" || key === "for") node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children);
    return node;
  };
  const localTime = (when) => {
    const date = new Date(when);
    if (isNaN(date)) return "";
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : date.toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  };
  const timeNode = (iso) => el("time", { dateTime: iso, textContent: localTime(iso) });

  // The page's new parts: the banner under the header, the notes above the composer, the dialog.
  const banner = el("section", { id: "mod-banner", className: "banner", hidden: true, "aria-labelledby": "mod-banner-label" });
  const bannerText = el("span", { id: "mod-banner-text", dir: "auto", "aria-live": "polite" });
  const bannerTime = el("time");
  const takeDown = el("button", { type: "button", className: "quiet", textContent: t("takeDown"), hidden: true });
  banner.append(el("p", {},
    el("strong", { id: "mod-banner-label", textContent: t("bannerLabel") + " " }), bannerText, " ", bannerTime), takeDown);
  const notes = el("div", { id: "mod-notes" });
  const lockNote = el("p", { id: "mod-lock-note", className: "note", role: "status", hidden: true });
  const errorNote = el("p", { id: "mod-error", className: "note bad", role: "alert", hidden: true });
  const shutNote = el("div", { id: "mod-shut", className: "note bad", role: "alert", hidden: true });
  notes.append(shutNote, lockNote, errorNote);
  const dialog = el("dialog", { id: "mod-dialog", "aria-labelledby": "mod-dialog-title" });

  document.querySelector("header").after(banner);
  const composer = $("chat-form");
  composer.before(notes);
  document.body.append(dialog);
  $("text").setAttribute("aria-describedby", "mod-lock-note mod-error");

  function send(frame) {
    return api ? api.send(frame) : false;
  }

  // --- The host's panel in the side bar.
  const lockSwitch = el("input", { type: "checkbox", id: "mod-lock", role: "switch" });
  const announceText = el("textarea", { id: "mod-announce-text", rows: 2, maxLength: 1000 });
  const bansList = el("ul", { id: "mod-bans", className: "bans" });
  const panel = el("section", { id: "mod-host", hidden: true, "aria-labelledby": "mod-host-heading" },
    el("h2", { id: "mod-host-heading", textContent: t("hostHeading") }),
    el("p", { className: "toggle" }, lockSwitch, el("label", { for: "mod-lock", textContent: t("lockRoom") })),
    el("form", { id: "mod-announce", className: "stack" },
      el("label", { for: "mod-announce-text", textContent: t("announceLabel") }), announceText,
      el("span", { className: "row" },
        el("button", { type: "submit", textContent: t("announce") }),
        el("button", { type: "button", id: "mod-take-down", className: "quiet", textContent: t("takeDown") }))),
    el("p", { className: "row" },
      el("button", { type: "button", id: "mod-show-bans", className: "quiet", textContent: t("showBans"), "aria-controls": "mod-bans" }),
      el("button", { type: "button", id: "mod-clear", className: "quiet", textContent: t("clearRoom") })),
    bansList);
  const side = $("side");
  side.insertBefore(panel, side.children[2] || null); // after "You" and "Here now"

  // The switch moves at once; the room frame (or a refusal) then sets it to the room's state.
  lockSwitch.addEventListener("change", () => {
    if (!send({ action: lockSwitch.checked ? "lock" : "unlock" })) lockSwitch.checked = locked;
  });
  $("mod-announce").addEventListener("submit", (event) => {
    event.preventDefault();
    const words = announceText.value.trim();
    if (!words) return;
    if (send({ action: "announce", text: words })) announceText.value = "";
  });
  const takeItDown = () => send({ action: "announce", text: "" });
  $("mod-take-down").addEventListener("click", takeItDown);
  takeDown.addEventListener("click", takeItDown);
  $("mod-show-bans").addEventListener("click", () => send({ action: "bans" }));
  $("mod-clear").addEventListener("click", () => openDialog(t("clearTitle"), [el("p", { textContent: t("clearWhat") })],
    [[t("clear"), "danger", () => send({ action: "clear" })]]));

  function showBans(bans) {
    if (!bans.length) {
      bansList.replaceChildren(el("li", { className: "hint", textContent: t("noBans") }));
      return;
    }
    bansList.replaceChildren(...bans.map((b) => {
      const what = [b.kind === "ban" ? t("banned") : t("muted")];
      if (b.reason) what.push(t("quotedReason", { reason: b.reason }));
      if (b.by) what.push(t("by", { name: b.by }));
      const line = el("span", { className: "ban-what" }, el("strong", { textContent: b.name }), " · " + what.join(" · "));
      if (b.until) {
        const [before, after] = t("until").split("{when}");
        line.append(" · " + before, timeNode(b.until), after || "");
      }
      const lift = el("button", { type: "button", className: "quiet",
        textContent: b.kind === "ban" ? t("unban") : t("unmute"), "aria-label": t(b.kind === "ban" ? "unbanName" : "unmuteName", { name: b.name }) });
      lift.addEventListener("click", () => {
        send({ action: b.kind === "ban" ? "unban" : "unmute", name: b.name });
        send({ action: "bans" }); // answered after the lift: the list comes back without it
      });
      return el("li", {}, line, lift);
    }));
  }

  // --- One dialog serves every menu: a title, some content, and a row of actions.
  function openDialog(title, content, actions) {
    const buttons = actions.map(([label, kind, act]) => {
      const button = el("button", { type: "button", className: kind || "", textContent: label });
      button.addEventListener("click", () => { act(); dialog.close(); });
      return button;
    });
    const cancel = el("button", { type: "button", className: "quiet", textContent: t("cancel") });
    cancel.addEventListener("click", () => dialog.close());
    dialog.replaceChildren(el("h2", { id: "mod-dialog-title", textContent: title }), ...content,
      el("p", { className: "row" }, ...buttons, cancel));
    if (!dialog.open) dialog.showModal();
  }

  function messageMenu(m) {
    const preview = m.type === "file" ? (m.file && m.file.name) || "" : m.text || "";
    openDialog(t("messageFrom", { name: m.name }),
      [el("blockquote", { className: "preview", dir: "auto", textContent: preview.length > 200 ? preview.slice(0, 200) + "…" : preview })],
      [[t("deleteMessage"), "danger", () => send({ action: "delete", id: m.id })]]);
  }

  function personMenu(name) {
    const reason = el("input", { id: "mod-reason", maxLength: 200, autocomplete: "off" });
    const minutes = el("select", { id: "mod-minutes" },
      ...MUTES.map(([key, n]) => el("option", { value: String(n), textContent: t(key) })));
    const act = (label, kind, frame) => {
      const button = el("button", { type: "button", className: kind, textContent: label });
      button.addEventListener("click", () => { send(frame()); dialog.close(); });
      return button;
    };
    openDialog(t("personActions", { name }), [
      el("p", { className: "stack" }, el("label", { for: "mod-reason", textContent: t("reason") }), reason),
      el("p", { className: "row" },
        act(t("kick"), "", () => ({ action: "kick", name, reason: reason.value.trim() })),
        act(t("ban"), "danger", () => ({ action: "ban", name, reason: reason.value.trim() }))),
      el("p", { className: "row" }, el("label", { for: "mod-minutes", textContent: t("muteFor") }), minutes,
        act(t("mute"), "", () => ({ action: "mute", name, minutes: Number(minutes.value) })),
        act(t("unmute"), "quiet", () => ({ action: "unmute", name }))),
    ], []);
  }

  // --- Hooks chat.js calls.

  /** A message's row is built: hosts get a menu on each, authors on their own recent ones. */
  function message(li, m) {
    const own = m.name === (me ?? (api && api.myName));
    const age = (Date.now() - Date.parse(m.when)) / 1000;
    const ownLeft = own && deleteWindow > 0 ? deleteWindow - Math.max(0, age) : 0;
    if (!host && !(ownLeft > 0)) return;
    const button = el("button", { type: "button", className: "menu", textContent: "⋯",
      "aria-label": t("messageActions", { name: m.name }), "aria-haspopup": "dialog" });
    button.addEventListener("click", () => messageMenu(m));
    li.append(button);
    // An author's own button goes when the server would no longer allow it.
    if (!host && ownLeft < 86400 * 20) setTimeout(() => { if (!host) button.remove(); }, ownLeft * 1000);
  }

  /** A person's row in "Here now": a host gets a menu on everyone else. */
  function person(li, name) {
    if (!host || name === (me ?? (api && api.myName))) return;
    const button = el("button", { type: "button", className: "menu", textContent: "⋯",
      "aria-label": t("personActions", { name }), "aria-haspopup": "dialog" });
    button.addEventListener("click", () => personMenu(name));
    li.append(button);
  }

  /** Whether the composer may open (when online). */
  const writable = () => !shut && (host || !locked);

  function showLock() {
    lockSwitch.checked = locked;
    lockNote.hidden = !locked;
    lockNote.textContent = host ? t("lockedNoteHost") : t("lockedNote");
    if (api) api.refresh();
  }

  function showError(code, words) {
    clearTimeout(muteTimer);
    lockSwitch.checked = locked; // a refused lock leaves the room as it was
    errorNote.hidden = false;
    const until = code === "muted" && words.match(/\d{4}-\d\d-\d\dT[\d:.]+Z/);
    if (until) {
      const [before, after] = t("mutedUntil").split("{when}");
      errorNote.replaceChildren(before, timeNode(until[0]), after);
      // Past its end the note is stale; a host may lift it sooner (the next send says).
      muteTimer = setTimeout(hideError, Math.max(0, Date.parse(until[0]) - Date.now()));
    } else {
      errorNote.replaceChildren(ERROR_WORDS[code] ? t(ERROR_WORDS[code]) : words);
    }
  }
  function hideError() {
    errorNote.hidden = true;
    errorNote.replaceChildren();
  }
  $("text").addEventListener("input", () => { if (!errorNote.querySelector("time")) hideError(); });

  function showBanner(m) {
    banner.hidden = !m;
    bannerText.textContent = m ? m.text : "";
    bannerTime.dateTime = m ? m.when : "";
    bannerTime.textContent = m ? localTime(m.when) : "";
    takeDown.hidden = !host;
  }

  /** A host-action line in the page's language, by its event; the server's English otherwise. */
  function noticeWords(m) {
    const key = NOTICE_WORDS[m.event];
    if (!key) return m.text;
    const withWhy = m.detail && (m.event === "kicked" || m.event === "banned");
    return t(withWhy ? key + "Why" : key, { name: m.name || "", detail: m.detail || "" });
  }

  function showNotice(m) {
    const list = $("messages");
    const main = list.parentElement;
    const atBottom = main.scrollHeight - main.scrollTop - main.clientHeight < 40;
    list.append(el("li", { className: "notice" },
      el("span", { className: "sr-only", textContent: t("noticeLabel") + " " }),
      el("span", { className: "notice-text", dir: "auto", textContent: noticeWords(m) }), " ", timeNode(m.when)));
    if (atBottom) main.scrollTop = main.scrollHeight;
  }

  function removeMessages(keep) {
    for (const li of [...document.querySelectorAll("#messages li.msg")]) {
      if (!keep(Number(li.dataset.id))) li.remove();
    }
  }

  /** Every frame comes here first; true if it was moderation's alone. */
  function frame(m) {
    const wasExpecting = expectStanding;
    const replayed = (m.type === "message" || m.type === "file") && m.id <= replayUntil;
    if (m.type !== "welcome" && !replayed) expectStanding = false;
    switch (m.type) {
      case "welcome":
        host = Boolean(m.host);
        me = m.name;
        locked = Boolean(m.locked);
        deleteWindow = Number(m.delete_window) || 0;
        replayUntil = m.last_id;
        // The room sends the welcome, the history and then the standing announcement at once.
        expectStanding = true;
        showBanner(null);
        panel.hidden = !host;
        showLock();
        return false;
      case "message":
      case "file":
        if (m.name === me && !replayed && !errorNote.querySelector("time")) hideError();
        return false;
      case "delete":
        removeMessages((id) => id !== m.id);
        return true;
      case "clear":
        removeMessages((id) => id > m.id);
        return true;
      case "notice":
        if (m.standing === true) {
          // The standing announcement (empty text: taken down); when it is news, a row too.
          showBanner(m.text ? m : null);
          if (m.text && !wasExpecting) showNotice(m);
        } else {
          showNotice(m);
        }
        return true;
      case "room":
        locked = Boolean(m.locked);
        showLock();
        return true;
      case "bans":
        showBans(m.bans || []);
        return true;
      case "error":
        if (!OWN_ERRORS.has(m.code)) return false;
        showError(m.code, m.text || "");
        return true;
      default:
        return false;
    }
  }

  /** The server closed this page with 4403: say why, offer to come back if only kicked.
   * Returns the status words. */
  function shutOut(reason) {
    shut = true;
    if (dialog.open) dialog.close();
    // "kicked: <reason>" or "banned: <reason>" (the reason may be empty).
    const colon = (reason || "").indexOf(":");
    const kind = colon < 0 ? reason || "" : reason.slice(0, colon);
    const why = colon < 0 ? "" : reason.slice(colon + 1).trim();
    let words;
    if (kind.startsWith("kicked")) words = why ? t("kickedWhyReason", { reason: why }) : t("kickedWhy");
    else if (kind.startsWith("banned")) words = why ? t("bannedWhyReason", { reason: why }) : t("bannedWhy");
    else words = t("shutOutOther", { reason });
    shutNote.replaceChildren(el("p", { textContent: words }));
    shutNote.dataset.kind = kind.startsWith("banned") ? "banned" : "kicked";
    if (!kind.startsWith("banned")) {
      const back = el("button", { type: "button", textContent: t("comeBack") });
      back.addEventListener("click", () => location.reload());
      shutNote.append(back);
    }
    shutNote.hidden = false;
    panel.hidden = true;
    document.querySelectorAll("#messages .menu, #people .menu").forEach((b) => b.remove());
    if (api) api.refresh();
    return kind.startsWith("banned") ? t("statusBanned") : t("statusKicked");
  }

  window.smolchat.moderation = {
    /** chat.js's side: `{ myName, send(frame) → bool, refresh() }`. */
    attach: (given) => { api = given; },
    frame, message, person, writable, shutOut,
  };
})();
