// Browser tests: a room shared over Redis (`--redis`) tells the page when this box cannot reach
// the other boxes; the page shows a banner and holds its composer shut until Redis is back. A
// message the server says it did not send (the network to Redis dropped it) is sent again by
// the page with its key once it can be, and shows once. The tests start their own
// redis-server (Debian's package) on a free loopback port, with the AOF so a restart keeps
// ids, and stop it by PID. A photo shared on one box shows in a page on another, which
// fetches it from the box that holds it.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import { createInterface } from "node:readline";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP, drawPng, launch, startServer, stopServer, send, waitForText, signedIn } from "./harness.mjs";

await launch();
const redises = [];
after(() => { for (const redis of redises) redis.kill("SIGKILL"); });

/** A loopback port nobody listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Starts redis-server on `port` with its files in `dir`; resolves once its log says ready. */
function startRedis(port, dir) {
  return new Promise((resolve, reject) => {
    const child = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "",
      "--appendonly", "yes", "--appendfsync", "always", "--dir", dir], { stdio: ["ignore", "pipe", "ignore"] });
    redises.push(child);
    const timer = setTimeout(() => reject(new Error("redis-server did not start")), STEP);
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("error", reject);
    child.on("exit", () => reject(new Error("redis-server exited")));
  });
}

test("the page says when the other boxes cannot be reached and holds the composer shut", async () => {
  const dir = mkdtempSync(join(tmpdir(), "smolchat-redis-"));
  const port = await freePort();
  let redis = await startRedis(port, dir);
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none",
    "--redis", `redis://127.0.0.1:${port}/0`]);
  const { page } = await signedIn(server, "Ann", "/", { hasTouch: true });
  assert.equal(await page.isHidden("#shared-down"), true);
  await send(page, "before");
  await waitForText(page, "before");

  redis.kill("SIGKILL");
  await page.waitForSelector("#shared-down:not([hidden])");
  assert.equal(await page.isDisabled("#text"), true);
  assert.equal(await page.isDisabled("#send"), true);

  redis = await startRedis(port, dir);
  await page.waitForSelector("#shared-down", { state: "hidden" });
  await page.waitForSelector("#send:not([disabled])");
  await send(page, "after");
  await waitForText(page, "after");
  await stopServer(server);
});

/** A proxy in front of Redis on `port` that can drop everything both ways, as a failing
 * network does, and pass it again. */
function networkCutter(port) {
  const cutter = { passing: true, sockets: [] };
  const server = createServer((client) => {
    const upstream = connect(port, "127.0.0.1");
    cutter.sockets.push(client, upstream);
    client.on("data", (bytes) => { if (cutter.passing) upstream.write(bytes); });
    upstream.on("data", (bytes) => { if (cutter.passing) client.write(bytes); });
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on("close", end); upstream.on("close", end);
    client.on("error", end); upstream.on("error", end);
  });
  cutter.close = () => { server.close(); cutter.sockets.forEach((s) => s.destroy()); };
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    cutter.port = server.address().port;
    resolve(cutter);
  }));
}

test("a message the network to Redis dropped is sent again by the page and shows once", async () => {
  const dir = mkdtempSync(join(tmpdir(), "smolchat-redis-"));
  const port = await freePort();
  await startRedis(port, dir);
  const cutter = await networkCutter(port);
  const server = await startServer(["--addr", "127.0.0.1:0", "--data-dir", "none",
    "--redis", `redis://127.0.0.1:${cutter.port}/0`]);
  const { page } = await signedIn(server, "Ann", "/", { hasTouch: true });
  await send(page, "first");
  await waitForText(page, "first");

  cutter.passing = false;
  await send(page, "once");
  // The server says it was not sent; the page will send it again itself.
  await page.waitForSelector(".event.warn");
  cutter.passing = true;
  await waitForText(page, "once");
  await send(page, "next");
  await waitForText(page, "next");
  const texts = await page.$$eval("#messages .msg .text", (els) => els.map((e) => e.textContent));
  assert.deepEqual(texts, ["first", "once", "next"]);
  await stopServer(server);
  cutter.close();
});

test("a photo shared on one box shows in a page on another box", async () => {
  const dir = mkdtempSync(join(tmpdir(), "smolchat-redis-"));
  const port = await freePort();
  await startRedis(port, dir);
  const boxes = [];
  for (const name of ["a", "b"]) {
    const data = mkdtempSync(join(tmpdir(), `smolchat-box-${name}-`));
    boxes.push(await startServer(["--addr", "127.0.0.1:0", "--data-dir", data,
      "--redis", `redis://127.0.0.1:${port}/0`]));
  }
  const ann = await signedIn(boxes[0], "Ann", "/", { hasTouch: true });
  const bob = await signedIn(boxes[1], "Bob", "/", { hasTouch: true });
  await ann.page.setInputFiles("#share-input", {
    name: "view.png", mimeType: "image/png", buffer: await drawPng(ann.page, 300, 200),
  });
  const preview = "#messages .msg .file-preview img";
  await bob.page.waitForSelector(preview);
  await bob.page.waitForFunction((sel) => {
    const img = document.querySelector(sel);
    return img && img.complete && img.naturalWidth > 0;
  }, preview);
  const seen = await bob.page.$eval(preview, (img) => ({
    natural: [img.naturalWidth, img.naturalHeight],
    src: new URL(img.src).origin,
  }));
  assert.deepEqual(seen.natural, [300, 200]);
  assert.equal(seen.src, boxes[1].origin, "box B serves it from its own origin");
  for (const box of boxes) await stopServer(box);
});
