// What every browser test file starts with: Debian's headless Chromium (through playwright-core)
// and the real smolchat binary on 127.0.0.1, both stopped when the file's tests end.

import { after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BINARY = process.env.SMOLCHAT_BIN || join(here, "../../target/debug/smolchat");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** The longest any one wait may take. */
export const STEP = 20000;

const servers = [];
let browser = null;
after(async () => {
  if (browser) await browser.close();
  for (const server of servers) server.child.kill("SIGKILL");
});

/** Launches the file's one browser; `args` are Chromium flags beyond the quiet defaults. */
export async function launch(args = []) {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", ...args],
  });
  return browser;
}

/** Starts smolchat; resolves once it logs its address, with `origin` and `addr`. */
export function startServer(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(BINARY, ["--threads", "2", ...args], { stdio: ["ignore", "ignore", "pipe"] });
    const server = { child, exited: new Promise((done) => child.on("exit", (code) => done(code))) };
    servers.push(server);
    const timer = setTimeout(() => reject(new Error("smolchat did not start")), STEP);
    createInterface({ input: child.stderr }).on("line", (line) => {
      const match = line.match(/listening on http:\/\/(\S+)/);
      if (match) {
        clearTimeout(timer);
        server.origin = `http://${match[1]}`;
        server.addr = match[1];
        resolve(server);
      }
    });
    child.on("error", reject);
  });
}

/** Stops a server with SIGTERM and checks it exits 0. */
export async function stopServer(server) {
  server.child.kill("SIGTERM");
  assert.equal(await server.exited, 0);
}

/** Types `text` into the page's message box and sends it. */
export async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** Waits until a message with exactly `text` is shown. */
export async function waitForText(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === t),
    text, { timeout: STEP });
}

/** A browser session (`context` options: viewport, locale...) signed in as `name` on `path`
 * (at `context.origin`, if given, instead of the server's); counts the tones the page starts. */
export async function signedIn(server, name, path = "/", context = {}) {
  const { origin, ...options } = context;
  const session = await browser.newContext(options);
  await session.addInitScript(() => {
    window.__tones = 0;
    const start = OscillatorNode.prototype.start;
    OscillatorNode.prototype.start = function (...args) { window.__tones += 1; return start.apply(this, args); };
  });
  const page = await session.newPage();
  page.setDefaultTimeout(STEP);
  await page.goto((origin || server.origin) + path);
  await page.fill("#name", name);
  await page.tap("button[type=submit]");
  await page.waitForSelector("#status.online");
  return { context: session, page };
}

/** A `width` x `height` PNG drawn by a canvas in `page` (no image files are shipped), as bytes. */
export async function drawPng(page, width, height) {
  const base64 = await page.evaluate(([w, h]) => {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const g = canvas.getContext("2d");
    g.fillStyle = "#2f6f5e";
    g.fillRect(0, 0, w, h);
    g.fillStyle = "#fff";
    g.fillRect(w / 6, h / 4, w / 3, h * 0.3);
    return canvas.toDataURL("image/png").split(",")[1];
  }, [width, height]);
  return Buffer.from(base64, "base64");
}
