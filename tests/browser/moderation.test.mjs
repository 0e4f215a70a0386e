// Browser tests of moderation from the page: a host (signed in with the admin passcode) and
// guests, each in a browser session of their own, against the real server. Every wait is on
// something the page or the server shows, bounded by a timeout.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { devices } from "playwright-core";
import { STEP, launch, startServer, stopServer, send } from "./harness.mjs";

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const phone = { ...devices["Pixel 5"] };
delete phone.defaultBrowserType;

const browser = await launch();
const ADMIN = "let-me-host";

function start() {
  return startServer(["--addr", "127.0.0.1:0", "--data-dir", "none", "--admin-passcode", ADMIN]);
}

/** A new browser session signed in as `name` (a host with `host: true`); counts its WebSockets. */
async function signedIn(server, name, { host = false, clock = false, options = {} } = {}) {
  const context = await browser.newContext(options);
  if (clock) await context.clock.install();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws));
  await page.goto(server.origin + "/");
  await page.fill("#name", name);
  if (host) {
    await page.click("summary");
    await page.fill("#passcode", ADMIN);
  }
  await page.click("button[type=submit]");
  await page.waitForSelector("#status.online");
  return { context, page, sockets };
}

/** axe-core's serious and critical findings on the page as it is now. */
async function axe(page) {
  // Injected as the test's own script: the page's policy would (rightly) refuse it.
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(() => window.axe.run(document));
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(" ")}`);
}

const texts = (page) => page.$$eval("#messages .msg .text", (els) => els.map((e) => e.textContent));
const shown = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === t), text);
const gone = (page, text) => page.waitForFunction(
  (t) => ![...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === t), text);
const noticed = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll("#messages .notice .notice-text")].some((e) => e.textContent === t), text);

/** The row of the message whose text is `text`. */
const row = (page, text) => page.locator("#messages li.msg").filter({
  has: page.locator(".text", { hasText: new RegExp(`^${text}$`) }),
});
/** Opens the "⋯" menu of person `name` in "Here now". */
async function personMenu(page, name) {
  await page.locator("#people li")
    .filter({ has: page.locator("span:not(.avatar)", { hasText: new RegExp(`^${name}$`) }) })
    .locator("button.menu").click();
  await page.waitForSelector("#mod-dialog[open]");
}
const dialogButton = (page, label) => page.locator("#mod-dialog").getByRole("button", { name: label, exact: true });

/** Polls `check` until it is true, failing after STEP. */
async function until(check, what) {
  const deadline = Date.now() + STEP;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 50));
  }
}
const connections = async (server) => (await (await fetch(server.origin + "/healthz")).json()).connections;

test("a host deletes a message and it vanishes for others; an author deletes their own", async () => {
  const server = await start();
  const ann = await signedIn(server, "Ann", { host: true });
  const bob = await signedIn(server, "Bob");
  assert.equal(await ann.page.isVisible("#mod-host"), true);
  assert.equal(await bob.page.isVisible("#mod-host"), false);

  await send(bob.page, "something rude");
  await send(ann.page, "from the host");
  await shown(ann.page, "something rude");
  await shown(bob.page, "from the host");
  // A guest has no menu on someone else's message; the host has one on every message.
  assert.equal(await row(bob.page, "from the host").locator("button.menu").count(), 0);
  await row(ann.page, "something rude").locator("button.menu").click();
  assert.equal(await ann.page.textContent("#mod-dialog blockquote"), "something rude");
  await dialogButton(ann.page, "Delete message").click();
  await gone(bob.page, "something rude");
  await gone(ann.page, "something rude");
  await noticed(bob.page, "A host removed a message.");

  // Bob deletes his own recent message, by keyboard.
  await send(bob.page, "typo here");
  await shown(ann.page, "typo here");
  await row(bob.page, "typo here").locator("button.menu").focus();
  await bob.page.keyboard.press("Enter");
  await dialogButton(bob.page, "Delete message").focus();
  await bob.page.keyboard.press("Enter");
  await gone(ann.page, "typo here");
  await gone(bob.page, "typo here");
  assert.deepEqual(await texts(bob.page), ["from the host"]);

  // Clearing the room empties everyone's page.
  await ann.page.click("#mod-clear");
  await dialogButton(ann.page, "Clear").click();
  await bob.page.waitForFunction(() => document.querySelectorAll("#messages .msg").length === 0);
  await noticed(bob.page, "A host cleared the room's history.");
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("a kicked page says why and does not reconnect; a banned one neither, until unbanned", async () => {
  const server = await start();
  const ann = await signedIn(server, "Ann", { host: true });
  const bob = await signedIn(server, "Bob", { clock: true });
  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 2);
  assert.equal(bob.sockets.length, 1);

  await personMenu(ann.page, "Bob");
  await ann.page.fill("#mod-reason", "spamming links");
  await dialogButton(ann.page, "Kick").click();
  await bob.page.waitForSelector("#mod-shut:not([hidden])");
  assert.equal(await bob.page.textContent("#mod-shut p"), "A host removed you from this room: spamming links");
  assert.equal(await bob.page.textContent("#status"), "removed");
  assert.equal(await bob.page.isDisabled("#text"), true);
  await until(async () => (await connections(server)) === 1, "Bob's connection to close");
  // Run every timer the page set for the next minute (the reconnect backoff tops out at 15 s):
  // none of them opens a WebSocket.
  await bob.page.clock.fastForward("01:00");
  await assert.rejects(bob.page.waitForEvent("websocket", { timeout: 2000 }));
  assert.equal(bob.sockets.length, 1);
  assert.equal(await connections(server), 1);
  await noticed(ann.page, "A host removed Bob from the room: spamming links");

  // A kick is not a ban: he may come back.
  await bob.page.getByRole("button", { name: "Come back" }).click();
  await bob.page.waitForSelector("#status.online");
  assert.equal(bob.sockets.length, 2);
  await bob.context.close();

  // Every guest here shares the loopback address, so only one stays for the ban.
  const cy = await signedIn(server, "Cy");
  await ann.page.waitForFunction(() => [...document.querySelectorAll("#people li span:not(.avatar)")].some((s) => s.textContent === "Cy"));
  await personMenu(ann.page, "Cy");
  await ann.page.fill("#mod-reason", "rude");
  await dialogButton(ann.page, "Ban").click();
  await cy.page.waitForSelector("#mod-shut:not([hidden])");
  assert.equal(await cy.page.textContent("#mod-shut p"), "A host banned you from this chat: rude");
  assert.equal(await cy.page.textContent("#status"), "banned");
  assert.equal(await cy.page.locator("#mod-shut button").count(), 0);
  await assert.rejects(cy.page.waitForEvent("websocket", { timeout: 2000 }));
  assert.equal(cy.sockets.length, 1);
  assert.equal((await cy.page.reload()).status(), 403);

  // The host lists the bans and lifts it; Cy is let in again.
  await ann.page.click("#mod-show-bans");
  const entry = ann.page.locator("#mod-bans li").filter({ hasText: "Cy" });
  assert.match(await entry.textContent(), /Cy · banned · “rude” · by Ann/);
  await entry.getByRole("button", { name: "Unban Cy" }).click();
  await ann.page.waitForFunction(() => document.querySelector("#mod-bans").textContent === "No bans or mutes.");
  assert.equal((await cy.page.reload()).status(), 200);
  await cy.page.waitForSelector("#status.online");
  await ann.context.close();
  await cy.context.close();
  await stopServer(server);
});

test("a muted person's composer says until when, and what they send reaches nobody", async () => {
  const server = await start();
  const ann = await signedIn(server, "Ann", { host: true });
  const bob = await signedIn(server, "Bob");
  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 2);
  await personMenu(ann.page, "Bob");
  const options = await ann.page.$$eval("#mod-minutes option", (os) => os.map((o) => o.textContent));
  assert.deepEqual(options, ["5 minutes", "1 hour", "1 day", "1 week"]);
  await ann.page.selectOption("#mod-minutes", { label: "5 minutes" });
  const before = Date.now();
  await ann.page.locator("#mod-dialog").getByRole("button", { name: "Mute", exact: true }).click();
  await noticed(bob.page, "Bob was muted for 5 min.");

  await send(bob.page, "can anyone hear me");
  await bob.page.waitForSelector("#mod-error:not([hidden]) time");
  const until = await bob.page.getAttribute("#mod-error time", "datetime");
  const ends = Date.parse(until);
  assert.ok(ends >= before + 5 * 60000 - 1000 && ends <= Date.now() + 5 * 60000 + 1000, until);
  const local = await bob.page.evaluate((iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), until);
  assert.equal(await bob.page.textContent("#mod-error"), `A host muted you until ${local}.`);
  // Ann's next message follows Bob's refused one in the room's order: once it is on her page,
  // Bob's would have been too.
  await send(ann.page, "after the mute");
  await shown(ann.page, "after the mute");
  assert.deepEqual(await texts(ann.page), ["after the mute"]);

  // Lifted from the list of bans and mutes, he writes again.
  await ann.page.click("#mod-show-bans");
  await ann.page.locator("#mod-bans").getByRole("button", { name: "Unmute Bob" }).click();
  await noticed(bob.page, "Bob may write again.");
  await send(bob.page, "thanks");
  await shown(ann.page, "thanks");
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("a lock holds a guest's composer shut with the reason; unlocking opens it", async () => {
  const server = await start();
  const ann = await signedIn(server, "Ann", { host: true });
  const bob = await signedIn(server, "Bob");
  assert.equal(await ann.page.getAttribute("#mod-lock", "role"), "switch");
  await ann.page.check("#mod-lock");
  await bob.page.waitForSelector("#text:disabled");
  assert.equal(await bob.page.isDisabled("#send"), true);
  assert.equal(await bob.page.textContent("#mod-lock-note"), "This room is locked: only hosts can write in it.");
  assert.equal(await bob.page.isVisible("#mod-lock-note"), true);
  // The host still writes.
  assert.equal(await ann.page.isChecked("#mod-lock"), true);
  await send(ann.page, "quiet please");
  await shown(bob.page, "quiet please");
  // Someone who comes while it is locked finds it so.
  const cy = await signedIn(server, "Cy");
  assert.equal(await cy.page.isDisabled("#text"), true);
  assert.equal(await cy.page.isVisible("#mod-lock-note"), true);

  await ann.page.uncheck("#mod-lock");
  await bob.page.waitForSelector("#text:enabled");
  assert.equal(await bob.page.isVisible("#mod-lock-note"), false);
  await cy.page.waitForSelector("#text:enabled");
  await send(bob.page, "thank you");
  await shown(ann.page, "thank you");
  await ann.context.close();
  await bob.context.close();
  await cy.context.close();
  await stopServer(server);
});

test("an announcement is a banner for whoever comes after it, until taken down", async () => {
  const server = await start();
  const ann = await signedIn(server, "Ann", { host: true });
  const bob = await signedIn(server, "Bob");
  await ann.page.fill("#mod-announce-text", "Pizza at six in the hall");
  await ann.page.click("#mod-announce button[type=submit]");
  await noticed(bob.page, "Pizza at six in the hall");
  await ann.page.waitForSelector("#mod-banner:not([hidden])");
  assert.equal(await ann.page.textContent("#mod-banner-text"), "Pizza at six in the hall");
  await send(bob.page, "yum");
  await shown(ann.page, "yum");

  const cy = await signedIn(server, "Cy");
  await cy.page.waitForSelector("#mod-banner:not([hidden])");
  assert.equal(await cy.page.textContent("#mod-banner-text"), "Pizza at six in the hall");
  await shown(cy.page, "yum");
  // The banner is not also a line in the chat, and a guest cannot take it down.
  assert.equal(await cy.page.locator("#messages .notice").count(), 0);
  assert.equal(await cy.page.isVisible("#mod-banner button"), false);

  await ann.page.click("#mod-banner button");
  await ann.page.waitForSelector("#mod-banner", { state: "hidden" });
  await noticed(bob.page, "A host took the announcement down.");
  const dee = await signedIn(server, "Dee");
  // Her own message comes back after whatever the room sent her on joining.
  await send(dee.page, "what did I miss");
  await shown(dee.page, "what did I miss");
  assert.equal(await dee.page.isVisible("#mod-banner"), false);
  for (const who of [ann, bob, cy, dee]) await who.context.close();
  await stopServer(server);
});

test("on a phone the host's controls work by touch and pass axe-core", async () => {
  const server = await start();
  const options = { ...phone, bypassCSP: true };
  const ann = await signedIn(server, "Ann", { host: true, options });
  const bob = await signedIn(server, "Bob", { options });
  await send(bob.page, "hello from a phone");
  await shown(ann.page, "hello from a phone");
  await ann.page.tap("#people-toggle");
  await ann.page.tap("#mod-lock");
  await bob.page.waitForSelector("#text:disabled");
  await ann.page.fill("#mod-announce-text", "Doors close at ten");
  await ann.page.tap("#mod-announce button[type=submit]");
  await ann.page.waitForSelector("#mod-banner:not([hidden])");
  await ann.page.tap("#mod-show-bans");
  await ann.page.waitForSelector("#mod-bans li");
  assert.deepEqual(await axe(ann.page), [], "host page");
  // The menus are big enough to hit with a thumb.
  const menu = await row(ann.page, "hello from a phone").locator("button.menu").boundingBox();
  assert.ok(menu.width >= 40 && menu.height >= 32, JSON.stringify(menu));
  await personMenu(ann.page, "Bob");
  assert.deepEqual(await axe(ann.page), [], "person menu");
  await dialogButton(ann.page, "Cancel").tap();
  await ann.page.tap("#people-toggle"); // the panel covers the messages on a phone
  await row(ann.page, "hello from a phone").locator("button.menu").tap();
  assert.deepEqual(await axe(ann.page), [], "message menu");
  await dialogButton(ann.page, "Delete message").tap();
  await gone(bob.page, "hello from a phone");
  await bob.page.reload();
  await bob.page.waitForSelector("#mod-banner:not([hidden])");
  await bob.page.waitForSelector("#text:disabled");
  assert.deepEqual(await axe(bob.page), [], "guest page, locked, with the banner");
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});

test("an author's delete goes when --delete-window ends, and never shows with a window of 0", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none", "--delete-window", "2s"]);
  const bob = await signedIn(server, "Bob");
  await send(bob.page, "quick");
  await shown(bob.page, "quick");
  const menu = row(bob.page, "quick").locator("button.menu");
  assert.equal(await menu.count(), 1);
  await menu.waitFor({ state: "detached" });
  // Shown again from the history, it is too old for one.
  await bob.page.reload();
  await shown(bob.page, "quick");
  assert.equal(await row(bob.page, "quick").locator("button.menu").count(), 0);
  await bob.context.close();
  await stopServer(server);

  const never = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none", "--delete-window", "0"]);
  const cy = await signedIn(never, "Cy");
  await send(cy.page, "for good");
  await shown(cy.page, "for good");
  assert.equal(await cy.page.locator("#messages button.menu").count(), 0);
  await cy.context.close();
  await stopServer(never);
});

test("in French the host's panel, the lock and a kick speak French", async () => {
  const server = await start();
  const options = { locale: "fr-FR" };
  const ann = await signedIn(server, "Ann", { host: true, options });
  const bob = await signedIn(server, "Bob", { options });
  assert.equal(await ann.page.textContent("#mod-host-heading"), "Hôte");
  assert.equal(await ann.page.textContent("label[for=mod-lock]"), "Verrouiller le salon (seuls les hôtes écrivent)");
  await ann.page.click("#mod-show-bans");
  await ann.page.waitForFunction(() => document.querySelector("#mod-bans").textContent === "Personne n’est banni ni muet.");

  await ann.page.check("#mod-lock");
  await bob.page.waitForSelector("#text:disabled");
  assert.equal(await bob.page.textContent("#mod-lock-note"), "Ce salon est verrouillé : seuls les hôtes peuvent y écrire.");
  await ann.page.waitForSelector("#mod-lock-note:not([hidden])");
  assert.equal(await ann.page.textContent("#mod-lock-note"),
    "Ce salon est verrouillé : seuls les hôtes peuvent y écrire. Vous êtes hôte.");

  await ann.page.waitForFunction(() => document.querySelectorAll("#people li").length === 2);
  await personMenu(ann.page, "Bob");
  assert.equal(await ann.page.textContent("#mod-dialog-title"), "Modérer Bob");
  await ann.page.fill("#mod-reason", "spam");
  await dialogButton(ann.page, "Expulser").click();
  await bob.page.waitForSelector("#mod-shut:not([hidden])");
  assert.equal(await bob.page.textContent("#mod-shut p"), "Un hôte vous a fait quitter ce salon : spam");
  assert.equal(await bob.page.textContent("#status"), "hors du salon");
  assert.equal(await bob.page.locator("#mod-shut button").textContent(), "Revenir");
  // The host's line about it is in French too (the server's words are English).
  await ann.page.waitForFunction(() => [...document.querySelectorAll("#messages li.notice .notice-text")]
    .some((e) => e.textContent === "Un hôte a fait quitter le salon à Bob : spam"));
  await ann.context.close();
  await bob.context.close();
  await stopServer(server);
});
