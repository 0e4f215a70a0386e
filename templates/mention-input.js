// smolchat composer: typing @ offers the people in the room; pick one by tap, click, or the
// arrow keys and Enter/Tab (Escape closes). Loaded before chat.js, so its Enter wins while the
// list is open.
"use strict";

window.smolchat = window.smolchat || {};

(() => {
  const text = document.getElementById("text");
  const list = document.createElement("ul");
  list.id = "mention-list";
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-label", window.smolchat.t("mentionList"));
  list.hidden = true;
  text.form.prepend(list);
  text.setAttribute("role", "combobox");
  text.setAttribute("aria-autocomplete", "list");
  text.setAttribute("aria-controls", list.id);
  text.setAttribute("aria-expanded", "false");
  let options = [], active = 0, token = null;

  /** The `@partial` just before the caret, if the caret is in one. */
  function currentToken() {
    const before = text.value.slice(0, text.selectionStart);
    const match = before.match(/(?:^|[^\p{L}\p{N}_])@([^@\n]{0,32})$/u);
    return match ? { start: before.length - match[1].length - 1, query: match[1] } : null;
  }

  function close() {
    list.hidden = true;
    options = [];
    text.setAttribute("aria-expanded", "false");
    text.removeAttribute("aria-activedescendant");
  }

  function highlight(index) {
    active = index;
    [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === active)));
    if (list.children[active]) text.setAttribute("aria-activedescendant", list.children[active].id);
  }

  function choose(name) {
    if (!token) return;
    const end = text.selectionStart;
    text.value = text.value.slice(0, token.start) + "@" + name + " " + text.value.slice(end);
    const caret = token.start + name.length + 2;
    text.setSelectionRange(caret, caret);
    close();
    text.focus();
  }

  function update() {
    token = currentToken();
    const members = window.smolchat.members ? window.smolchat.members() : [];
    const query = token ? token.query.toLowerCase() : "";
    options = token ? members.filter((n) => n.toLowerCase().startsWith(query)).sort().slice(0, 8) : [];
    if (!options.length) { close(); return; }
    list.replaceChildren(...options.map((name, i) => {
      const li = document.createElement("li");
      li.id = `mention-${i}`;
      li.setAttribute("role", "option");
      li.textContent = name;
      // pointerdown, not click: the text box keeps its focus and caret.
      li.addEventListener("pointerdown", (event) => { event.preventDefault(); choose(name); });
      li.addEventListener("click", () => choose(name));
      return li;
    }));
    list.hidden = false;
    text.setAttribute("aria-expanded", "true");
    highlight(0);
  }

  text.addEventListener("input", update);
  text.addEventListener("blur", () => setTimeout(close, 0));
  text.addEventListener("keydown", (event) => {
    if (list.hidden) return;
    const keys = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in keys) {
      highlight((active + keys[event.key] + options.length) % options.length);
    } else if (event.key === "Enter" || event.key === "Tab") {
      choose(options[active]);
    } else if (event.key === "Escape") {
      close();
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation(); // chat.js must not send this Enter
  });
})();
