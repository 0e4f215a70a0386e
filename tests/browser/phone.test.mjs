// Browser tests for phones: links and mentions, attention on a mention, the web app manifest,
// and an automated accessibility check (axe-core), in a phone viewport with touch.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { STEP, launch, startServer, send, waitForText, signedIn } from "./harness.mjs";
import { devices } from "playwright-core";

const phone = { ...devices["Pixel 5"] };
delete phone.defaultBrowserType;
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const browser = await launch([
  // A name for the loopback server that is not "potentially trustworthy", like a LAN address.
  "--host-resolver-rules=MAP chat.test 127.0.0.1",
]);

/** A phone session signed in as `name` on `path`. */
const phoneSignedIn = (server, name, path = "/", options = {}) =>
  signedIn(server, name, path, { ...phone, ...options });

test("URLs become links to a new tab; javascript: and markup stay text", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await phoneSignedIn(server, "Ann");
  const bob = await phoneSignedIn(server, "Bob");
  const target = `${server.origin}/healthz`;
  await send(ann.page, `see ${target}. and javascript:alert(1) <a href="x">no</a>`);
  await waitForText(bob.page, `see ${target}. and javascript:alert(1) <a href="x">no</a>`);
  const links = await bob.page.$$eval("#messages .text a", (as) => as.map((a) => [a.href, a.target, a.rel, a.textContent]));
  assert.deepEqual(links, [[target, "_blank", "noopener noreferrer", target]]);
  assert.equal(await bob.page.getAttribute("#messages .text", "dir"), "auto");
  const [tab] = await Promise.all([bob.context.waitForEvent("page"), bob.page.tap("#messages .text a")]);
  await tab.waitForLoadState();
  assert.equal(tab.url(), target);
  assert.equal(await tab.evaluate(() => window.opener), null);
  await ann.context.close();
  await bob.context.close();
});

test("@ suggests people by tap; a mention of you highlights, counts and plays a tone", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await phoneSignedIn(server, "Ann", "/r/kitchen");
  const bob = await phoneSignedIn(server, "Bob Lee", "/r/kitchen");
  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 2);
  await ann.page.tap("#text");
  await ann.page.keyboard.type("lunch @bo");
  const option = await ann.page.waitForSelector("#mention-list [role=option]");
  assert.equal(await option.textContent(), "Bob Lee");
  assert.equal(await ann.page.getAttribute("#text", "aria-expanded"), "true");
  await option.tap();
  assert.equal(await ann.page.inputValue("#text"), "lunch @Bob Lee ");
  assert.equal(await ann.page.isHidden("#mention-list"), true);

  // Bob is looking at another tab: the mention counts in his title and icon.
  await bob.page.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  });
  await ann.page.keyboard.type("now?");
  await ann.page.keyboard.press("Enter");
  await waitForText(bob.page, "lunch @Bob Lee now?");
  assert.equal(await bob.page.textContent("#messages .msg.mentions-me mark.mention.me"), "@Bob Lee");
  assert.match(await bob.page.title(), /^@1 /);
  assert.equal(await bob.page.getAttribute("link[rel=icon]", "href"), "/assets/icon-badge.svg");
  assert.equal(await bob.page.evaluate(() => window.__tones), 1);
  // Ann's own copy is marked as a mention of Bob, not of her, and made no sound.
  assert.equal(await ann.page.$$eval("mark.mention.me", (m) => m.length), 0);
  assert.equal(await ann.page.evaluate(() => window.__tones), 0);
  // The sound switch is remembered on the device: off, then no tone.
  await bob.page.tap("#people-toggle");
  await bob.page.uncheck("#attention-sound");
  await send(ann.page, "@bob lee again");
  await waitForText(bob.page, "@bob lee again");
  assert.equal(await bob.page.evaluate(() => window.__tones), 1);
  assert.equal(await bob.page.evaluate(() => localStorage.getItem("smolchat.sound")), "0");
  assert.match(await bob.page.title(), /^@2 /);
  // On localhost notifications are offered; on a LAN name over plain http:// (not a secure
  // context) they are not, and the page says why.
  assert.equal(await bob.page.isDisabled("#attention-notify"), false);
  const lan = await phoneSignedIn(server, "Cy", "/r/kitchen", { origin: server.origin.replace("127.0.0.1", "chat.test") });
  assert.equal(await lan.page.evaluate(() => window.isSecureContext), false);
  await lan.page.tap("#people-toggle");
  assert.equal(await lan.page.isDisabled("#attention-notify"), true);
  assert.match(await lan.page.textContent("#attention-notify-why"), /HTTPS/);
  await lan.context.close();
  await ann.context.close();
  await bob.context.close();
});

test("the manifest is valid and its icons load", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await phoneSignedIn(server, "Ann");
  const href = await ann.page.getAttribute("link[rel=manifest]", "href");
  const res = await ann.page.request.get(server.origin + href);
  assert.equal(res.headers()["content-type"], "application/manifest+json");
  const manifest = await res.json();
  assert.equal(manifest.name, "smolchat");
  assert.equal(manifest.display, "standalone");
  assert.equal(manifest.start_url, "/");
  assert.ok(manifest.icons.some((i) => i.purpose.includes("maskable") && i.type === "image/png"));
  assert.ok(manifest.icons.some((i) => i.type === "image/svg+xml"));
  for (const icon of manifest.icons) {
    const size = await ann.page.evaluate(async (src) => {
      const img = new Image();
      img.src = src;
      await img.decode();
      return `${img.naturalWidth}x${img.naturalHeight}`;
    }, icon.src);
    if (icon.sizes !== "any") assert.equal(size, icon.sizes, icon.src);
  }
  await ann.context.close();
});

test("the chat page and the invite card pass axe-core with no serious violations", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none", "--wifi-ssid", "Open"]);
  // axe is injected as a script of the test's own: the page's policy would (rightly) refuse it.
  const ann = await phoneSignedIn(server, "Ann", "/", { bypassCSP: true });
  await send(ann.page, "hello https://example.org @Ann");
  await waitForText(ann.page, "hello https://example.org @Ann");
  await ann.page.tap("#people-toggle");
  for (const path of ["/", "/invite", "/login"]) {
    if (path !== "/") await ann.page.goto(server.origin + path);
    await ann.page.addScriptTag({ content: AXE });
    const result = await ann.page.evaluate(() => window.axe.run(document));
    const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(serious.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(" ")}`), [], path);
  }
  await ann.context.close();
});

test("a second language is served for its Accept-Language", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const fr = await phoneSignedIn(server, "Ann", "/", { extraHTTPHeaders: { "Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5" } });
  assert.equal(await fr.page.getAttribute("html", "lang"), "fr");
  assert.equal(await fr.page.textContent("#send"), "Envoyer");
  assert.equal(await fr.page.evaluate(() => window.smolchat.strings.send), "Envoyer");
  await fr.context.close();
  const es = await phoneSignedIn(server, "Bob", "/", { extraHTTPHeaders: { "Accept-Language": "es" } });
  assert.equal(await es.page.textContent("#send"), "Enviar");
  await es.context.close();
});
