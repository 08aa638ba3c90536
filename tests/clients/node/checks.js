// Clients nobody here wrote, driven by tests/browsers.rs; prints one JSON line of results.
//   node checks.js node-seed URL          Hydrogen seed 002's example, in Node (package ws)
//   node checks.js chromium URL CHROMIUM  the same in headless Chromium, then two pages that
//                                         get the handshake wrong and must learn why
"use strict";

const WAIT_MS = 10000;

// Seed 002's example as written, with its two callbacks recording instead of logging.
const seedExample = `(url) => new Promise((resolve) => {
  const got = [];
  const ws = new WebSocket(url, 'hydrogen-protocol');
  ws.onopen = () => { got.push('open'); };
  ws.onmessage = (event) => {
    const status = JSON.parse(event.data);
    got.push(status);
    if (got.length >= 3) { ws.close(); resolve({ok: true, got}); }
  };
  ws.onclose = (e) => resolve({ok: false, got, code: e.code, reason: e.reason});
})`;

// A page that opens `url` with `protocols` and reports how it closed.
const closeReport = `(url, protocols) => new Promise((resolve) => {
  const ws = protocols === null ? new WebSocket(url) : new WebSocket(url, protocols);
  ws.onclose = (e) => resolve({code: e.code, reason: e.reason, wasClean: e.wasClean});
})`;

function withDeadline(promise, what) {
  return Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what}: no answer in ${WAIT_MS} ms`)), WAIT_MS))]);
}

async function nodeSeed(url) {
  globalThis.WebSocket = require("ws");
  return withDeadline(eval(seedExample)(url), "seed example in node");
}

async function chromium(url, executablePath) {
  const puppeteer = require("puppeteer-core");
  const browser = await puppeteer.launch({
    executablePath, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    const run = (fn, ...args) => withDeadline(page.evaluate(fn, ...args), "chromium page");
    return {
      seed: await run(eval(seedExample), url),
      noProtocol: await run(eval(closeReport), url, null),
      wrongKey: await run(eval(closeReport), url + "?key=not-a-key-anyone-has", "hydrogen-protocol"),
    };
  } finally {
    await browser.close();
  }
}

(async () => {
  const [mode, url, exe] = process.argv.slice(2);
  const result = mode === "node-seed" ? await nodeSeed(url) : await chromium(url, exe);
  process.stdout.write(JSON.stringify(result) + "\n");
})().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
