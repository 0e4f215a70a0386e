// Browser tests for direct messages, per-room unread and mention counts, and the page's
// language: two (or three) browsers on one server, by touch.

import { test } from "node:test";
import assert from "node:assert/strict";
import { STEP, launch, startServer, send, waitForText, signedIn as signIn } from "./harness.mjs";

const browser = await launch();

/** A touch browser session signed in as `name` on `path`. */
const signedIn = (server, name, path = "/", options = {}) =>
  signIn(server, name, path, { hasTouch: true, viewport: { width: 1000, height: 800 }, ...options });

/** The badges beside `label` in the list `list`: { unread, mentions } as shown ("" if none). */
function badges(page, list, label) {
  return page.evaluate(([list, label]) => {
    const li = [...document.querySelectorAll(`#${list} li`)].find((l) => l.querySelector("a").textContent === label);
    if (!li) return null;
    const text = (sel) => (li.querySelector(sel) || { textContent: "" }).textContent;
    return { unread: text(".unread"), mentions: text(".mentions") };
  }, [list, label]);
}

async function waitForBadges(page, list, label, expected) {
  await page.waitForFunction(([list, label, expected]) => {
    const li = [...document.querySelectorAll(`#${list} li`)].find((l) => l.querySelector("a").textContent === label);
    if (!li) return false;
    const text = (sel) => (li.querySelector(sel) || { textContent: "" }).textContent;
    return text(".unread") === expected.unread && text(".mentions") === expected.mentions;
  }, [list, label, expected], { timeout: STEP });
}

test("a direct message: opened from the people list, listed with a count for the other, refused to a third", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const ann = await signedIn(server, "Ann");
  const bob = await signedIn(server, "Bob");
  const cy = await signedIn(server, "Cy");
  assert.equal(await bob.page.isVisible("#directs-none"), true);

  // Ann taps "Message" beside Bob in the people list and lands in their direct room.
  const talk = ann.page.locator("#people li", { hasText: "Bob" }).locator("button.direct");
  await talk.tap();
  await ann.page.waitForURL(/\/r\/dm\.[0-9a-f]{16}\.[0-9a-f]{16}$/);
  await ann.page.waitForSelector("#status.online");
  assert.equal(await ann.page.textContent("#room-name"), "Bob");
  const dmPath = new URL(ann.page.url()).pathname;

  // Bob, still in the lobby, sees it listed at once (before any message), then counted.
  await bob.page.waitForFunction(() => [...document.querySelectorAll("#directs li a")].some((a) => a.textContent === "@Ann"));
  await send(ann.page, "psst, Bob");
  await waitForText(ann.page, "psst, Bob");
  await waitForBadges(bob.page, "directs", "@Ann", { unread: "1", mentions: "" });
  assert.ok(await bob.page.evaluate(() => window.__tones) >= 1, "a direct message plays the tone");
  // Cy's list never has it.
  assert.equal(await badges(cy.page, "directs", "@Ann"), null);
  assert.equal(await badges(cy.page, "directs", "@Bob"), null);

  // Bob taps it and reads it; once back in the lobby its count is gone.
  await bob.page.tap("#directs li a");
  await bob.page.waitForURL((url) => url.pathname === dmPath);
  await waitForText(bob.page, "psst, Bob");
  await send(bob.page, "hi Ann");
  await waitForText(ann.page, "hi Ann");
  await bob.page.goto(server.origin + "/");
  await bob.page.waitForSelector("#status.online");
  await waitForBadges(bob.page, "directs", "@Ann", { unread: "", mentions: "" });

  // Cy is refused: the page, the member list, and the WebSocket.
  const res = await cy.page.goto(server.origin + dmPath);
  assert.equal(res.status(), 403);
  const members = await cy.context.request.get(`${server.origin}/rooms${dmPath.slice(2)}/members`);
  assert.equal(members.status(), 403);
  await cy.page.goto(server.origin + "/");
  const outcome = await cy.page.evaluate((room) => new Promise((done) => {
    const ws = new WebSocket(`ws://${location.host}/ws/${room}`);
    ws.onopen = () => done("opened");
    ws.onclose = () => done("refused");
  }), dmPath.slice(3));
  assert.equal(outcome, "refused");
  await Promise.all([ann.context.close(), bob.context.close(), cy.context.close()]);
});

test("rooms list: a message in another room counts there, a mention too; opening it clears both", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const bob = await signedIn(server, "Bob", "/r/kitchen");
  const ann = await signedIn(server, "Ann");
  await waitForBadges(ann.page, "rooms", "#kitchen", { unread: "", mentions: "" });

  await send(bob.page, "the kettle is on");
  await waitForText(bob.page, "the kettle is on");
  // The list is asked for again every few seconds: the count comes with it.
  await waitForBadges(ann.page, "rooms", "#kitchen", { unread: "1", mentions: "" });
  // Ann has the kitchen open in another tab too: a mention of her there comes to this tab at
  // once, as a notice (the other tab has shown the message, so nothing is unread).
  const tab = await ann.context.newPage();
  await tab.goto(server.origin + "/r/kitchen");
  await tab.waitForSelector("#status.online");
  const tones = await ann.page.evaluate(() => window.__tones);
  await send(bob.page, "tea, @Ann?");
  await waitForText(tab, "tea, @Ann?");
  await waitForBadges(ann.page, "rooms", "#kitchen", { unread: "", mentions: "@1" });
  assert.ok(await ann.page.evaluate(() => window.__tones) > tones, "a mention elsewhere plays the tone");
  await tab.close();
  await send(bob.page, "anyone?");
  await waitForBadges(ann.page, "rooms", "#kitchen", { unread: "1", mentions: "@1" });

  await ann.page.tap("#rooms li a[href='/r/kitchen']");
  await ann.page.waitForURL((url) => url.pathname === "/r/kitchen");
  await waitForText(ann.page, "anyone?");
  await ann.page.goto(server.origin + "/");
  await ann.page.waitForSelector("#status.online");
  await waitForBadges(ann.page, "rooms", "#kitchen", { unread: "", mentions: "" });
  await Promise.all([ann.context.close(), bob.context.close()]);
});

test("the sign-in page and the page's own scripts speak the browser's language", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none"]);
  const context = await browser.newContext({ locale: "fr-FR" });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  await page.goto(server.origin + "/");
  assert.equal(await page.getAttribute("html", "lang"), "fr");
  assert.equal(await page.textContent("label[for=name]"), "Votre nom");
  assert.equal(await page.textContent("button[type=submit]"), "Commencer à discuter");
  await page.fill("#name", "Zoé");
  await page.click("button[type=submit]");
  // Words the scripts write: the connection status and the people count.
  await page.waitForFunction(() => document.getElementById("status").textContent === "en ligne");
  await page.waitForFunction(() => document.getElementById("people-toggle").textContent === "Personnes (1)");
  assert.equal(await page.textContent("#people li span:not(.avatar)"), "Zoé (vous)");
  await context.close();
});
