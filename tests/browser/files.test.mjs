// Sharing in real headless Chromium: one browser shares a large photo through the share button,
// another sees its preview and opens it; the photo arrives shrunk to 1600 px. The photo is made
// in the test by a canvas in the page (no image files are shipped). Files also arrive by paste
// and by drag and drop (events dispatched with a DataTransfer holding a File, as the browser
// makes them); an upload cancelled half way shares nothing and leaves nothing on the server;
// files past --file-days show as gone after the restart that removes them.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP, drawPng, launch, startServer, stopServer } from "./harness.mjs";

const browser = await launch();

async function signedIn(server, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  await page.goto(server.origin + "/");
  await page.fill("#name", name);
  await page.click("button[type=submit]");
  await page.waitForSelector("#status.online");
  return { context, page };
}

test("a shared photo arrives shrunk, and another browser sees and opens it", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "smolchat-files-"));
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", dataDir]);
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "Bob");

  // A 3000 x 2000 PNG, drawn in Ann's page.
  await ann.page.setInputFiles("#share-input", {
    name: "big.png", mimeType: "image/png", buffer: await drawPng(ann.page, 3000, 2000),
  });

  const preview = "#messages .msg .file-preview img";
  await bob.page.waitForSelector(preview);
  await bob.page.waitForFunction((sel) => {
    const img = document.querySelector(sel);
    return img && img.complete && img.naturalWidth > 0;
  }, preview);
  const seen = await bob.page.$eval(preview, (img) => ({
    natural: [img.naturalWidth, img.naturalHeight], shown: [img.width, img.height],
    caption: img.closest(".file").querySelector(".file-caption").textContent,
    name: img.closest(".msg").querySelector(".name").textContent,
  }));
  assert.deepEqual(seen.natural, [1600, 1067], "the photo was shrunk to 1600 px");
  assert.ok(seen.shown[0] <= 240 && seen.shown[1] <= 240, `preview ${seen.shown}`);
  assert.match(seen.caption, /^big\.png · /);
  assert.equal(seen.name, "Ann");
  // Ann's own page shows it too, and her upload row is gone.
  await ann.page.waitForSelector(preview);
  assert.equal(await ann.page.$$eval("#uploads li", (els) => els.length), 0);

  // Bob opens it: a new tab with the image itself, served inline from the chat's origin.
  const [tab] = await Promise.all([bob.context.waitForEvent("page"), bob.page.click(".file-preview")]);
  await tab.waitForLoadState();
  const url = await bob.page.$eval(preview, (img) => img.src);
  assert.equal(tab.url(), url);
  const headers = await bob.page.evaluate(async (u) => {
    const res = await fetch(u, { cache: "no-store" });
    return { status: res.status, type: res.headers.get("content-type"),
      policy: res.headers.get("content-security-policy"), nosniff: res.headers.get("x-content-type-options") };
  }, url);
  assert.equal(headers.status, 200);
  assert.equal(headers.type, "image/png");
  assert.match(headers.policy, /^sandbox/);
  assert.equal(headers.nosniff, "nosniff");

  await ann.context.close();
  await bob.context.close();
  server.child.kill("SIGTERM");
});

/** Names in the server's files directory (none before the first upload). */
function onDisk(dataDir) {
  try {
    return readdirSync(join(dataDir, "files"));
  } catch {
    return [];
  }
}

/** Waits, bounded, until `check()` holds (the server's disk is not an event the page sees). */
async function until(what, check) {
  const deadline = Date.now() + STEP;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((done) => setTimeout(done, 20));
  }
}

/** Waits until `page` shows a shared file linked as `name`; returns its URL. */
async function linkFor(page, name) {
  const handle = await page.waitForFunction((n) => {
    const link = [...document.querySelectorAll("#messages .msg .file-link")].find((a) => a.textContent === n);
    return link && link.getAttribute("href");
  }, name);
  return handle.jsonValue();
}

test("a file pasted or dropped into the page is shared with the room", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "smolchat-files-"));
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", dataDir]);
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "Bob");

  // A paste into the message box carrying a file, as when a copied file is pasted.
  const pasted = await ann.page.evaluate(() => {
    const data = new DataTransfer();
    data.items.add(new File(["from the clipboard\n"], "pasted.txt", { type: "text/plain" }));
    const event = new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
    document.getElementById("text").dispatchEvent(event);
    return { taken: event.defaultPrevented, text: document.getElementById("text").value };
  });
  assert.deepEqual(pasted, { taken: true, text: "" }, "the page took the paste as a file");
  const pastedUrl = await linkFor(bob.page, "pasted.txt");
  assert.equal(await bob.page.evaluate(async (u) => (await fetch(u)).text(), pastedUrl), "from the clipboard\n");

  // Dragged over the page, then dropped on the messages.
  const dragged = await ann.page.evaluate(() => {
    const data = new DataTransfer();
    data.items.add(new File(["dropped bytes"], "dropped.txt", { type: "text/plain" }));
    const target = document.getElementById("messages");
    const over = new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true });
    target.dispatchEvent(over);
    const highlighted = document.body.classList.contains("dropping");
    const drop = new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true });
    target.dispatchEvent(drop);
    return { over: over.defaultPrevented, highlighted, drop: drop.defaultPrevented,
      after: document.body.classList.contains("dropping") };
  });
  assert.deepEqual(dragged, { over: true, highlighted: true, drop: true, after: false });
  const droppedUrl = await linkFor(bob.page, "dropped.txt");
  assert.equal(await bob.page.evaluate(async (u) => (await fetch(u)).text(), droppedUrl), "dropped bytes");
  // Ann sees both as well, and no upload row is left.
  await linkFor(ann.page, "dropped.txt");
  await ann.page.waitForFunction(() => document.querySelectorAll("#uploads li").length === 0);

  // A drag that carries no files (text from another page) is left alone.
  const plain = await ann.page.evaluate(() => {
    const data = new DataTransfer();
    data.setData("text/plain", "just words");
    const over = new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true });
    document.getElementById("messages").dispatchEvent(over);
    return over.defaultPrevented;
  });
  assert.equal(plain, false);

  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("an upload cancelled half way shares nothing and leaves nothing on the server", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "smolchat-files-"));
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", dataDir]);
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "Bob");
  // Ann's uplink is slowed to 256 KiB/s, so 8 MB take half a minute: long enough to be
  // cancelled for certain while under way.
  const cdp = await ann.context.newCDPSession(ann.page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 256 * 1024,
  });
  await ann.page.setInputFiles("#share-input", {
    name: "big.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(8_000_000, 7),
  });
  // Under way on both ends: the page shows progress, the server holds a partial file.
  await ann.page.waitForFunction(() => {
    const bar = document.querySelector("#uploads li progress");
    return bar && bar.value > 0 && bar.value < 1;
  });
  await until("the partial file on the server", () => onDisk(dataDir).some((n) => n.endsWith(".part")));
  await ann.page.click("#uploads li button");

  const row = await ann.page.waitForSelector("#uploads li.cancelled");
  assert.match(await row.textContent(), /big\.bin.*cancelled/);
  // The server lets go of the partial file once the connection closes: nothing but the index
  // (if any) is left.
  await until("the partial file removed", () => onDisk(dataDir).every((n) => n === "index.json"));
  // Nothing reached the room: a message sent after the cancel arrives with no file before it.
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
  });
  await ann.page.fill("#text", "after the cancel");
  await ann.page.press("#text", "Enter");
  await bob.page.waitForFunction(() =>
    [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === "after the cancel"));
  for (const page of [ann.page, bob.page]) {
    assert.equal(await page.$$eval("#messages .msg .file", (els) => els.length), 0);
  }
  // Dismissed, the row goes.
  await ann.page.click("#uploads li.cancelled button");
  await ann.page.waitForFunction(() => document.querySelectorAll("#uploads li").length === 0);

  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("files past --file-days are removed at the next start and show as gone", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "smolchat-files-"));
  const args = ["--addr", "127.0.0.1:0", "--data-dir", dataDir, "--file-days", "2"];
  let server = await startServer(args);
  const ann = await signedIn(server, "Ann");
  // A small photo (shown as a preview) and a text file (shown as a link).
  await ann.page.setInputFiles("#share-input", [
    { name: "old.png", mimeType: "image/png", buffer: await drawPng(ann.page, 40, 30) },
    { name: "old.txt", mimeType: "text/plain", buffer: Buffer.from("old words") },
  ]);
  await ann.page.waitForSelector("#messages .msg .file-preview img");
  await linkFor(ann.page, "old.txt");
  await ann.context.close();
  await stopServer(server);

  // Both were shared three days ago, as far as the index says.
  const path = join(dataDir, "files", "index.json");
  const index = JSON.parse(readFileSync(path, "utf8"));
  assert.equal(index.length, 2);
  for (const entry of index) entry.created -= 3 * 86400;
  writeFileSync(path, JSON.stringify(index));

  server = await startServer(args);
  assert.deepEqual(onDisk(dataDir), ["index.json"], "removed at start");
  const cat = await signedIn(server, "Cat");
  // The room replays both shares; the page finds each gone and says so.
  await cat.page.waitForFunction(() => document.querySelectorAll("#messages .msg .file-gone").length === 2);
  const notes = await cat.page.$$eval("#messages .msg .file-gone", (els) => els.map((e) => e.textContent));
  assert.deepEqual(notes.sort(), ["old.png is no longer here", "old.txt is no longer here"]);
  assert.equal(await cat.page.$$eval("#messages .msg .file img", (els) => els.length), 0,
    "no broken image is left");

  await cat.context.close();
  await stopServer(server);
});
