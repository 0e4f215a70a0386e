// Browser tests: the real smolchat binary on 127.0.0.1, driven through Debian's headless
// Chromium by playwright-core. Run with `npm test` here, after `cargo build` (or set
// SMOLCHAT_BIN). Every wait is on something the page shows, bounded by a timeout.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP, launch, startServer, stopServer, send, waitForText } from "./harness.mjs";

const browser = await launch();

/** A new browser session (own cookies), signed in as `name`, on `path`. */
async function signedIn(server, name, path = "/") {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  await page.goto(server.origin + path);
  await page.fill("#name", name);
  await page.click("button[type=submit]");
  await page.waitForSelector("#status.online");
  return { context, page, dialogs };
}

/** The texts of the messages on the page, in order. */
const texts = (page) => page.$$eval("#messages .msg .text", (els) => els.map((e) => e.textContent));
const names = (page) => page.$$eval("#messages .msg .name", (els) => els.map((e) => e.textContent));

test("two browser sessions chat with each other", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "Bob");

  await send(ann.page, "hello Bob");
  await waitForText(bob.page, "hello Bob");
  await send(bob.page, "hi Ann\nsecond line");
  await waitForText(ann.page, "hi Ann\nsecond line");

  assert.deepEqual(await texts(ann.page), ["hello Bob", "hi Ann\nsecond line"]);
  assert.deepEqual(await names(bob.page), ["Ann", "Bob"]);
  // Presence: both see both.
  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 2);
  const people = await ann.page.$$eval("#people li span:not(.avatar)", (els) => els.map((e) => e.textContent));
  assert.deepEqual(people.sort(), ["Ann (you)", "Bob"]);
  // The text box is cleared after sending, and Shift+Enter made a newline rather than sending.
  assert.equal(await bob.page.inputValue("#text"), "");
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("a message that looks like HTML is shown as text", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "<b>Bob</b>");
  const attack = "<img src=x onerror=alert(1)>";
  await send(ann.page, attack);
  await waitForText(bob.page, attack);
  assert.equal(await bob.page.$$eval("#messages img, #people img", (els) => els.length), 0);
  assert.deepEqual(bob.dialogs, []);
  assert.deepEqual(ann.dialogs, []);
  // A name that looks like HTML is text too.
  await send(bob.page, "me too");
  await waitForText(ann.page, "me too");
  assert.ok((await names(ann.page)).includes("<b>Bob</b>"));
  assert.equal(await ann.page.$$eval("#messages b", (els) => els.length), 0);
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("after a server restart the page reconnects and shows what it missed, once, in order", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "smolchat-browser-"));
  let server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", dataDir]);
  const addr = server.addr;
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "Bob");
  await send(ann.page, "before the restart");
  await waitForText(bob.page, "before the restart");

  // Freeze Ann's page (timers and events wait), so she stays away while the others go on.
  const debug = await ann.context.newCDPSession(ann.page);
  await debug.send("Debugger.enable");
  await debug.send("Debugger.pause");

  await stopServer(server);
  await bob.page.waitForSelector("#status.offline");
  server = await startServer(["--addr", addr, "--data-dir", dataDir]);
  await bob.page.waitForSelector("#status.online");
  for (const text of ["missed one", "missed two", "missed three"]) {
    await send(bob.page, text);
    await waitForText(bob.page, text);
  }

  await debug.send("Debugger.resume");
  await waitForText(ann.page, "missed three");
  await ann.page.waitForSelector("#status.online");
  assert.deepEqual(await texts(ann.page), ["before the restart", "missed one", "missed two", "missed three"]);
  // Bob, who reconnected with his last id, has no duplicates either.
  assert.deepEqual(await texts(bob.page), ["before the restart", "missed one", "missed two", "missed three"]);
  await send(ann.page, "back");
  await waitForText(bob.page, "back");
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("the title counts unread messages while the tab is hidden", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await signedIn(server, "Ann", "/r/kitchen");
  const bob = await signedIn(server, "Bob", "/r/kitchen");
  await ann.page.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  });
  await send(bob.page, "one");
  await send(bob.page, "two");
  await waitForText(ann.page, "two");
  assert.equal(await ann.page.title(), "(2) #kitchen · smolchat");
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("'Here now' matches the server's member list after a join storm and a mass leave", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none",
    "--max-sockets-per-address", "100000", "--new-rooms-per-minute", "100000"]);
  const ann = await signedIn(server, "Ann");
  // A crowd of 150 from another session: past 64 people the room sums up its joins and
  // leaves, and the page pulls the list it no longer gets in full.
  const crowd = await browser.newContext();
  const storm = await crowd.newPage();
  await storm.goto(server.origin + "/rooms");
  await storm.evaluate(async (addr) => {
    window.crowd = [];
    await Promise.all(Array.from({ length: 150 }, (_, n) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${addr}/ws/lobby?name=c${String(n).padStart(3, "0")}`);
      ws.onopen = resolve;
      ws.onerror = reject;
      window.crowd.push(ws);
    })));
  }, server.addr);
  const shown = () => ann.page.$$eval("#people li span:not(.avatar)",
    (els) => els.map((e) => e.textContent.replace(/ \(you\)$/, "")).sort());
  const listed = async () => {
    const names = [];
    let after = null;
    for (let page = 0; page < 20; page++) {
      const q = after === null ? "" : `?after=${encodeURIComponent(after)}`;
      const body = await (await fetch(`${server.origin}/rooms/lobby/members${q}`)).json();
      names.push(...body.members);
      if (!body.next) break;
      after = body.next;
    }
    return names.sort();
  };
  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 151);
  assert.deepEqual(await shown(), await listed());
  assert.equal(await ann.page.textContent("#people-count"), "(151)");
  // A mass leave: 100 of them go at once.
  await storm.evaluate(() => window.crowd.slice(0, 100).forEach((ws) => ws.close()));
  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 51);
  assert.deepEqual(await shown(), await listed());
  assert.equal(await ann.page.textContent("#people-count"), "(51)");
  await crowd.close();
  await ann.context.close();
  await stopServer(server);
});
