// Browser tests for the invite: the QR codes on the page decode (with zbarimg, a real decoder)
// to the room's URL and the Wi-Fi fields, and the printable card fits one page.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP, launch, startServer } from "./harness.mjs";
import { devices } from "playwright-core";

const phone = { ...devices["Pixel 5"], defaultBrowserType: undefined };
delete phone.defaultBrowserType;
const browser = await launch();

async function phoneSignedIn(server, name, path) {
  const context = await browser.newContext({ ...phone });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  await page.goto(server.origin + path);
  await page.fill("#name", name);
  await page.tap("button[type=submit]");
  await page.waitForSelector("#status.online");
  return { context, page };
}

/** Decodes the QR code in a PNG with zbarimg; returns the text it carries. */
function decode(png) {
  const file = join(mkdtempSync(join(tmpdir(), "smolchat-qr-")), "code.png");
  writeFileSync(file, png);
  return execFileSync("zbarimg", ["--quiet", "--raw", file], { encoding: "utf8" }).replace(/\n$/, "");
}

const wifiDir = mkdtempSync(join(tmpdir(), "smolchat-wifi-"));
const passwordFile = join(wifiDir, "wifi");
writeFileSync(passwordFile, "p;ss:w,rd\n");

test("the Invite panel's QR codes give back the room URL and the Wi-Fi fields", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none",
    "--wifi-ssid", "Home Net", "--wifi-password-file", passwordFile]);
  const ann = await phoneSignedIn(server, "Ann", "/r/kitchen");
  await ann.page.tap("#people-toggle");
  const qr = await ann.page.waitForSelector("#invite-qr");
  await ann.page.waitForFunction(() => document.getElementById("invite-qr").complete
    && document.getElementById("invite-qr").naturalWidth > 0);
  await qr.scrollIntoViewIfNeeded();
  const url = `${server.origin}/r/kitchen`;
  assert.equal(decode(await qr.screenshot()), url);
  assert.equal(await ann.page.textContent(".invite-url"), url);
  const wifi = await ann.page.waitForSelector("#wifi-qr");
  await ann.page.waitForFunction(() => document.getElementById("wifi-qr").naturalWidth > 0);
  await wifi.scrollIntoViewIfNeeded();
  assert.equal(decode(await wifi.screenshot()), "WIFI:T:WPA;S:Home Net;P:p\\;ss\\:w\\,rd;;");

  // The printable card carries both codes, the URL and the room, on one page.
  const card = await ann.context.newPage();
  await card.goto(`${server.origin}/invite/kitchen`);
  await card.waitForFunction(() => [...document.images].every((i) => i.complete && i.naturalWidth > 0));
  assert.equal(await card.textContent(".url"), url);
  assert.match(await card.textContent("h1"), /#kitchen/);
  assert.equal(decode(await (await card.$("#room-qr")).screenshot()), url);
  const pdf = await card.pdf({ format: "A4" });
  const pages = (pdf.toString("latin1").match(/\/Type\s*\/Page[^s]/g) || []).length;
  assert.equal(pages, 1);
  await ann.context.close();
});

test("without a session the QR codes and the card are not given out", async () => {
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none", "--wifi-ssid", "Open"]);
  const res = await fetch(`${server.origin}/qr/wifi`);
  assert.equal(res.status, 401);
  const card = await fetch(`${server.origin}/invite/kitchen`);
  assert.match(await card.text(), /name="name"/);
});
