// smolchat attention: counts mentions of you in the title and the icon, and on a mention plays
// a short tone (made here with WebAudio, no sound file) and vibrates, each switchable and
// remembered on this device. System notifications are offered only in a secure context
// (localhost, or HTTPS in front of the box): plain http:// on a LAN cannot have them.
"use strict";

window.smolchat = window.smolchat || {};

(() => {
  const $ = (id) => document.getElementById(id);
  const t = window.smolchat.t;
  const setting = (key, fallback) => {
    try { const v = localStorage.getItem("smolchat." + key); return v === null ? fallback : v === "1"; } catch { return fallback; }
  };
  const remember = (key, on) => { try { localStorage.setItem("smolchat." + key, on ? "1" : "0"); } catch { /* private mode */ } };
  let mentions = 0;
  let audio = null;

  function tone() {
    try {
      audio = audio || new AudioContext();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "sine";
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.2, audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.3);
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.3);
    } catch { /* no audio on this device */ }
  }

  function showCount() {
    const badge = $("mention-count");
    if (badge) badge.textContent = mentions ? String(mentions) : "";
    const icon = document.querySelector("link[rel=icon]");
    if (icon) icon.href = mentions ? "/assets/icon-badge.svg" : "/assets/icon.svg";
    document.title = document.title.replace(/^@\d+ /, "");
    if (mentions) document.title = `@${mentions} ${document.title}`;
  }

  /** Called by chat.js for each message shown; `live` is false for replayed history. */
  window.smolchat.noticeMessage = (m, live, myName) => {
    if (!live || m.name === myName) return;
    // Screen readers hear each new message once, politely; history is not read out.
    const announce = $("announce");
    if (announce) announce.textContent = `${m.name}: ${m.text}`;
    // In a direct room every message is meant for you.
    const direct = Boolean(document.body.dataset.directWith);
    if (!direct && !(m.mentions || []).includes(myName)) { if (mentions) showCount(); return; }
    mentions += 1;
    showCount();
    callAttention(`${m.name}: ${(m.text || (m.file && m.file.name) || "").slice(0, 120)}`);
  };

  /** Sound, vibration and (where allowed) a notification, as this device has them set. */
  function callAttention(words) {
    if (setting("sound", true)) tone();
    if (setting("vibrate", true) && navigator.vibrate) navigator.vibrate(200);
    if (setting("notify", false) && window.isSecureContext && window.Notification && Notification.permission === "granted") {
      new Notification(words); // eslint-disable-line no-new
    }
  }
  /** For news from other rooms (rooms.js): a direct message or a mention there. */
  window.smolchat.alert = callAttention;

  // Seen: the count goes when the person comes back to the tab.
  function reset() { if (mentions) { mentions = 0; showCount(); } }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) reset(); });

  for (const key of ["sound", "vibrate"]) {
    const box = $(`attention-${key}`);
    if (!box) continue;
    box.checked = setting(key, true);
    box.addEventListener("change", () => {
      remember(key, box.checked);
      if (key === "sound" && box.checked) tone(); // a gesture also unlocks audio on phones
    });
  }
  const notify = $("attention-notify"), why = $("attention-notify-why");
  if (notify && why) {
    if (window.isSecureContext && window.Notification) {
      notify.checked = setting("notify", false) && Notification.permission === "granted";
      notify.addEventListener("change", async () => {
        if (notify.checked && Notification.permission !== "granted") {
          notify.checked = (await Notification.requestPermission()) === "granted";
        }
        remember("notify", notify.checked);
      });
    } else {
      notify.disabled = true;
      why.textContent = t("notifyInsecure");
    }
  }
})();
