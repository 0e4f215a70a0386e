// smolchat sharing: a button (and paste, and drag and drop) shares photos and files into the
// room; photos are shrunk in the browser first (longest side 1600 px, re-encoded, which also
// drops the camera's location data). Uploads show progress, can be cancelled and say why they
// failed. chat.js calls `smolchatShare.render(m)` for each `file` message: images become a
// small preview, other files a link, and a file the server no longer has shows as gone.
// Works on plain http:// (no secure-context APIs) under the page's strict CSP: no blob: or
// data: URLs are ever shown, only the server's own /files/ URLs.
"use strict";

(() => {
  const body = document.body;
  const room = body.dataset.room;
  const t = window.smolchat.t; // the page's words (text.js)
  const maxBytes = Number(body.dataset.maxFileBytes || 0); // 0: sharing is off
  const MAX_SIDE = 1600;          // longest side of a shared photo, in pixels
  const PREVIEW = 240;            // longest side of a preview in the page, in CSS pixels
  const QUALITY = 0.85;           // JPEG quality of a re-encoded photo
  const SHRINK = new Set(["image/jpeg", "image/png", "image/webp", "image/bmp"]); // GIFs may move
  const INLINE = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

  function humanSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function goneNote(file) {
    const note = document.createElement("span");
    note.className = "file-gone";
    note.textContent = t("fileGone", { name: file.name });
    return note;
  }

  /** The body of a `file` message: a preview or a link, with name and size. */
  function render(m) {
    const file = m.file || {};
    const box = document.createElement("div");
    box.className = "file";
    const url = typeof file.url === "string" && file.url.startsWith("/files/") ? file.url : null;
    if (!url) {
      box.append(goneNote(file));
      return box;
    }
    const link = document.createElement("a");
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    const caption = document.createElement("span");
    caption.className = "file-caption";
    caption.textContent = `${file.name} · ${humanSize(file.size)}`;
    if (INLINE.has(file.type) && file.width > 0 && file.height > 0) {
      const img = document.createElement("img");
      const scale = Math.min(1, PREVIEW / Math.max(file.width, file.height));
      img.width = Math.max(1, Math.round(file.width * scale));
      img.height = Math.max(1, Math.round(file.height * scale));
      img.alt = file.name;
      img.loading = "lazy";
      img.onerror = () => box.replaceChildren(goneNote(file));
      img.src = url;
      link.className = "file-preview";
      link.append(img);
      box.append(link, caption);
    } else {
      link.className = "file-link";
      link.textContent = file.name;
      const size = document.createElement("span");
      size.className = "file-caption";
      size.textContent = humanSize(file.size);
      box.append(link, size);
      // Links cannot fail visibly like images do: ask once whether the file is still there.
      fetch(url, { method: "HEAD", cache: "no-store" })
        .then((res) => { if (res.status === 404) box.replaceChildren(goneNote(file)); })
        .catch(() => { /* offline: leave the link */ });
    }
    return box;
  }

  window.smolchatShare = { render };
  if (!maxBytes) return; // sharing is off: no button, but shared files still show

  const form = document.getElementById("chat-form");
  const uploads = document.createElement("ul");
  uploads.id = "uploads";
  uploads.setAttribute("aria-live", "polite");
  form.before(uploads);
  const input = document.createElement("input");
  input.type = "file";
  input.multiple = true;
  input.id = "share-input";
  input.className = "sr-only";
  input.tabIndex = -1;
  input.setAttribute("aria-hidden", "true");
  const button = document.createElement("button");
  button.type = "button";
  button.id = "share";
  button.textContent = "+";
  button.title = t("shareFile");
  button.setAttribute("aria-label", t("shareFile"));
  form.prepend(button, input);
  button.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    for (const file of input.files) share(file);
    input.value = "";
  });

  /** A photo shrunk and re-encoded; anything else (or a photo the browser cannot read) as is. */
  async function prepare(file) {
    if (!SHRINK.has(file.type) || typeof createImageBitmap !== "function") return file;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      return file;
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    const type = file.type === "image/png" ? "image/png" : "image/jpeg";
    const blob = await new Promise((done) => canvas.toBlob(done, type, QUALITY));
    if (!blob) return file;
    const stem = (file.name || "photo").replace(/\.[^.]*$/, "") || "photo";
    return new File([blob], type === "image/jpeg" ? `${stem}.jpg` : `${stem}.png`, { type });
  }

  /** A row that shows one upload's progress, its cancel button, and why it failed. */
  function progressRow(name) {
    const li = document.createElement("li");
    li.className = "upload";
    const label = document.createElement("span");
    label.className = "upload-name";
    label.textContent = name;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const action = document.createElement("button");
    action.type = "button";
    action.className = "link";
    action.textContent = t("cancel");
    li.append(label, bar, action);
    uploads.append(li);
    return {
      li, bar, action,
      /** Ends the row with `why`; `state` is its class: "failed" or "cancelled". */
      end(why, state) {
        li.classList.add(state);
        bar.remove();
        const reason = document.createElement("span");
        reason.className = "upload-error";
        reason.textContent = why;
        label.after(reason);
        action.textContent = t("dismiss");
        action.onclick = () => li.remove();
      },
      fail(why) { this.end(why, "failed"); },
    };
  }

  async function share(original) {
    const row = progressRow(original.name || "file");
    // Cancel works while a photo is still being shrunk, before any byte is sent.
    let cancelled = false;
    row.action.onclick = () => { cancelled = true; row.end(t("cancelled"), "cancelled"); };
    let file;
    try {
      file = await prepare(original);
    } catch {
      file = original;
    }
    if (cancelled) return;
    if (file.size === 0) return row.fail(t("fileEmpty"));
    if (file.size > maxBytes) return row.fail(t("fileTooLarge", { size: humanSize(maxBytes) }));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/files/${encodeURIComponent(room)}?name=${encodeURIComponent(file.name || "file")}`);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) row.bar.value = event.loaded / event.total;
    };
    xhr.onload = () => {
      if (xhr.status === 201) row.li.remove(); // the room shows it to everyone, us included
      else row.fail(xhr.responseText.trim() || t("uploadRefused", { status: xhr.status }));
    };
    xhr.onerror = () => row.fail(t("uploadFailed"));
    // Cancelled: the server drops the partial file when the connection closes; nothing is shared.
    xhr.onabort = () => row.end(t("cancelled"), "cancelled");
    row.action.onclick = () => xhr.abort();
    xhr.send(file);
  }

  // Paste a screenshot or a copied file into the page.
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (!files.length) return;
    event.preventDefault();
    files.forEach(share);
  });
  // Drop files anywhere on the page (on a computer).
  const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    body.classList.add("dropping");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) body.classList.remove("dropping");
  });
  document.addEventListener("drop", (event) => {
    body.classList.remove("dropping");
    if (!carriesFiles(event)) return;
    event.preventDefault();
    [...event.dataTransfer.files].forEach(share);
  });
})();
