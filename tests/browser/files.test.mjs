// Sharing in real headless Chromium: one browser shares a large photo through the share button,
// another sees its preview and opens it; the photo arrives shrunk to 1600 px. The photo is made
// in the test by a canvas in the page (no image files are shipped).

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP, launch, startServer } from "./harness.mjs";

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
  const base64 = await ann.page.evaluate(() => {
    const canvas = document.createElement("canvas");
    canvas.width = 3000;
    canvas.height = 2000;
    const g = canvas.getContext("2d");
    g.fillStyle = "#2f6f5e";
    g.fillRect(0, 0, 3000, 2000);
    g.fillStyle = "#fff";
    g.fillRect(500, 500, 1000, 600);
    return canvas.toDataURL("image/png").split(",")[1];
  });
  await ann.page.setInputFiles("#share-input", {
    name: "big.png", mimeType: "image/png", buffer: Buffer.from(base64, "base64"),
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
