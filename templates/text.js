// smolchat message text: turns http(s) URLs into links that open in a new tab and marks the
// @mentions the server found; everything else stays text (DOM nodes, never HTML strings).
"use strict";

window.smolchat = window.smolchat || {};
try {
  // The page's words in its language, from the server's table (see i18n.rs).
  window.smolchat.strings = JSON.parse(document.body.dataset.strings || "{}");
} catch { window.smolchat.strings = {}; }
/** The page's words for `key`, with `{name}` holes filled from `vars` (the key if missing). */
window.smolchat.t = (key, vars = {}) => {
  const words = window.smolchat.strings[key];
  if (typeof words !== "string") return key;
  return words.replace(/\{(\w+)\}/g, (hole, name) => (name in vars ? String(vars[name]) : hole));
};

(() => {
  const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  const TRAILING = /[.,;:!?)\]}'"]+$/; // sentence punctuation after a URL is not part of it

  /** Text nodes for `text`, with each `@name` of `mentions` wrapped in a <mark>. */
  function withMentions(text, mentions, myName) {
    const nodes = [];
    if (!mentions.length) return [document.createTextNode(text)];
    const lower = text.toLowerCase();
    let at = 0;
    while (at < text.length) {
      let best = null;
      for (const name of mentions) {
        const i = lower.indexOf("@" + name.toLowerCase(), at);
        if (i >= 0 && (!best || i < best.i || (i === best.i && name.length > best.name.length))) best = { i, name };
      }
      if (!best) break;
      if (best.i > at) nodes.push(document.createTextNode(text.slice(at, best.i)));
      const mark = document.createElement("mark");
      mark.className = "mention" + (best.name === myName ? " me" : "");
      mark.textContent = text.slice(best.i, best.i + best.name.length + 1);
      nodes.push(mark);
      at = best.i + best.name.length + 1;
    }
    if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
    return nodes;
  }

  /** A fragment showing `text`: links for http(s) URLs, marks for mentions, text otherwise. */
  window.smolchat.renderText = (text, mentions, myName) => {
    const fragment = document.createDocumentFragment();
    let at = 0;
    for (const match of text.matchAll(URL_PATTERN)) {
      const url = match[0].replace(TRAILING, "");
      let parsed = null;
      try { parsed = new URL(url); } catch { /* not a URL after all: it stays text */ }
      if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) continue;
      fragment.append(...withMentions(text.slice(at, match.index), mentions, myName));
      const a = document.createElement("a");
      a.href = parsed.href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = url;
      fragment.append(a);
      at = match.index + url.length;
    }
    fragment.append(...withMentions(text.slice(at), mentions, myName));
    return fragment;
  };
})();
