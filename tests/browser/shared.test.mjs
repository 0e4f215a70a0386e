// Browser test: a room shared over Redis (`--redis`) tells the page when this box cannot reach
// the other boxes. The page shows a banner and holds its composer shut until Redis is back.
// The test starts its own redis-server (Debian's package) on a free loopback port, with the
// AOF so a restart keeps ids, and stops it by PID.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP, launch, startServer, stopServer, send, waitForText, signedIn } from "./harness.mjs";

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
