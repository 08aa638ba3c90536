// Clients nobody here wrote, driven by tests/browsers.rs; prints one JSON line of results.
//   node checks.js node-seed URL          Hydrogen seed 002's example, in Node (package ws)
//   node checks.js chromium URL CHROMIUM  the same in headless Chromium, then two pages that
//                                         get the handshake wrong and must learn why
//   node checks.js status-page HTTP_URL CHROMIUM ADMIN_KEY SERVICE_KEY SCREENSHOT
//                                         the built-in status page: log in, watch the figures
//                                         move when a client connects, see a published event
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
    executablePath, headless: true, args: BROWSER_ARGS,
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

const BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// A client of our own beside the page (Node's ws), authenticated with `key`; resolves once
// its first command is answered.
function sideClient(wsUrl, key) {
  const WebSocket = require("ws");
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, "hydrogen-protocol", { headers: { Authorization: `Key ${key}` } });
    const answers = new Map();
    ws.on("message", (m) => {
      const msg = JSON.parse(m);
      if (msg.type === "response" && answers.has(msg.id)) answers.get(msg.id)(msg);
    });
    ws.command = (id, channel, action, data) => new Promise((done) => {
      answers.set(id, done);
      ws.send(JSON.stringify({ type: "command", id, channel, action, data }));
    });
    ws.on("open", () => ws.command("hello", "system", "ping", {}).then(() => resolve(ws)));
    ws.on("error", reject);
  });
}

async function statusPage(url, executablePath, adminKey, serviceKey, screenshot) {
  const puppeteer = require("puppeteer-core");
  const browser = await puppeteer.launch({ executablePath, headless: true, args: BROWSER_ARGS });
  const wsUrl = url.replace(/^http/, "ws");
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 900 });
    await page.goto(url, { timeout: WAIT_MS });
    await page.waitForSelector("#login:not([hidden])", { timeout: WAIT_MS });
    await page.type("#key", adminKey);
    await page.click("#login-button");
    await page.waitForFunction(() => document.querySelector("#uptime").textContent !== "", { timeout: WAIT_MS });
    const before = Number(await page.$eval("#connections", (e) => e.textContent));
    const client = await sideClient(wsUrl, serviceKey);
    await page.waitForFunction((n) => Number(document.querySelector("#connections").textContent) === n,
      { timeout: WAIT_MS }, before + 1);
    const after = Number(await page.$eval("#connections", (e) => e.textContent));
    // The list comes from system/threads every 3 s: wait for both rows past their handshake.
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#connection-list tr")];
      return rows.length >= 2 && rows.every((tr) => tr.children[4].textContent === "connected");
    }, { timeout: WAIT_MS });
    const rows = await page.$$eval("#connection-list tr", (trs) => trs.map((tr) => tr.textContent));
    await page.type("#channel", "print");
    await page.click("#subscribe-button");
    await page.waitForFunction(() => document.querySelector("#subscribed").textContent.includes("print"), { timeout: WAIT_MS });
    const marker = "marker-" + Date.now();
    const published = await client.command("pub-1", "system", "publish",
      { channel: "print", action: "progress", data: { marker } });
    await page.waitForFunction((m) => document.querySelector("#events").textContent.includes(m),
      { timeout: WAIT_MS }, marker);
    const event = await page.$eval("#events li", (li) => li.textContent);
    // The page's own command function: which connections negotiated permessage-deflate.
    const compressed = await page.evaluate(async () => (await send("system", "threads")).threads
      .filter((t) => t.compression === "permessage-deflate").length);
    const stored = await page.evaluate(() => sessionStorage.getItem("hydrogen-ws-key"));
    const href = await page.evaluate(() => location.href);
    await page.screenshot({ path: screenshot, fullPage: true });
    client.close();
    return { before, after, rows, published, event, marker, compressed, keyStored: stored === adminKey,
             keyInUrl: href.includes(adminKey), memory: await page.$eval("#memory", (e) => e.textContent),
             threads: await page.$eval("#threads", (e) => e.textContent) };
  } finally {
    await browser.close();
  }
}

(async () => {
  const [mode, url, exe, ...rest] = process.argv.slice(2);
  const result = mode === "node-seed" ? await nodeSeed(url)
    : mode === "status-page" ? await statusPage(url, exe, ...rest)
    : await chromium(url, exe);
  process.stdout.write(JSON.stringify(result) + "\n");
})().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
