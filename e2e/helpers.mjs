// Shared plumbing for the browser tests: start a real wschat process, start
// Debian's Chromium through playwright-core, and drive the page the way a
// person would (type a name, pick a colour, press Enter).
//
// Everything talks to 127.0.0.1 only, and every wait is bounded.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// WSCHAT_BIN may be absolute, relative to the current directory, or relative to the repo root.
export const BIN = (() => {
  const bin = process.env.WSCHAT_BIN || 'target/debug/wschat';
  if (path.isAbsolute(bin)) return bin;
  const fromCwd = path.resolve(bin);
  return process.env.WSCHAT_BIN && fs.existsSync(fromCwd) ? fromCwd : path.resolve(REPO, bin);
})();
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const STEP_TIMEOUT = 10_000;   // any single wait in a test
export const TEST_TIMEOUT = 90_000;   // a whole test

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/**
 * Starts `wschat PORT --host 127.0.0.1 ...flags` and resolves once it printed
 * `listening on http://127.0.0.1:PORT/`. With port 0 the kernel picks the port.
 */
export async function startServer({ port = 0, flags = [], tries = 1 } = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`wschat binary not found at ${BIN}: run \`cargo build\` or set WSCHAT_BIN`);
  }
  let lastError;
  for (let i = 0; i < tries; i++) {
    try {
      return await startOnce(port, flags);
    } catch (e) {
      lastError = e;
      await sleep(300);   // a restart on the same port may race the old socket's release
    }
  }
  throw lastError;
}

function startOnce(port, flags) {
  const args = [String(port), '--host', '127.0.0.1', ...flags];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const lines = readline.createInterface({ input: proc.stdout });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`wschat ${args.join(' ')} did not print its listening line within 10 s; stderr:\n${stderr}`));
    }, 10_000);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`wschat ${args.join(' ')} exited early (code ${code}, signal ${signal}); stderr:\n${stderr}`));
    });
    lines.on('line', (line) => {
      const m = /^listening on http:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line.trim());
      if (!m) return;
      clearTimeout(timer);
      proc.removeAllListeners('exit');
      const server = {
        proc,
        port: Number(m[1]),
        url: `http://127.0.0.1:${m[1]}/`,
        get stderr() { return stderr; },
        /** Ends the process: SIGKILL for `kill`, else SIGTERM (then SIGKILL after 5 s). */
        async stop({ kill = false } = {}) {
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          const gone = new Promise((r) => proc.once('exit', r));
          proc.kill(kill ? 'SIGKILL' : 'SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
          await gone;
          clearTimeout(t);
        },
      };
      resolve(server);
    });
  });
}

/**
 * Starts Chromium. playwright-core's launch() gives every browser a fresh,
 * temporary user-data-dir of its own and removes it on close; each person in
 * a test gets an isolated context (own localStorage, own cookies).
 */
export async function startBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: sudo apt-get install chromium (or run scripts/test-e2e.sh)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/**
 * Opens the chat in a new isolated context. Records every JavaScript dialog
 * (alert/confirm/prompt) and uncaught page error so tests can assert none
 * happened, and every WebSocket with the frames sent and received as the
 * browser saw them (`page.sockets`). `setup(context)` runs before the page
 * loads (init scripts, routes).
 */
export async function openPage(browser, url, { viewport = { width: 1000, height: 720 }, colorScheme = 'light', deviceScaleFactor = 1, setup } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, deviceScaleFactor, locale: 'en-GB', timezoneId: 'UTC' });
  context.setDefaultTimeout(STEP_TIMEOUT);
  if (setup) await setup(context);
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.sockets = [];
  page.on('dialog', async (d) => { page.dialogs.push(d.message()); await d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('websocket', (ws) => {
    const rec = { url: ws.url(), sent: [], received: [] };
    page.sockets.push(rec);
    ws.on('framesent', (f) => rec.sent.push(f.payload));
    ws.on('framereceived', (f) => rec.received.push(f.payload));
  });
  await page.goto(url);
  await page.waitForSelector('body[data-conn="open"]');
  return page;
}

/** Types a name, picks a colour, presses Join, and waits until the composer is usable. */
export async function join(page, name, { color } = {}) {
  await page.fill('#name', name);
  if (color) await page.check(`#swatches input[value="${color}"]`);
  await page.press('#name', 'Enter');
  await page.waitForSelector('#join', { state: 'hidden' });
  await page.waitForSelector('#input:not([disabled])');
}

/** Opens a page and joins as `name`. */
export async function person(browser, url, name, opts = {}) {
  const page = await openPage(browser, url, opts);
  await join(page, name, opts);
  page.personName = name;
  return page;
}

/** Types a message in the composer and presses Enter. */
export async function say(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

/** Waits until a chat line with exactly this text is in the log; returns its locator. */
export async function waitForLine(page, text, { timeout = STEP_TIMEOUT } = {}) {
  const line = page.locator('#log li.msg').filter({ has: page.locator('.text', { hasText: exact(text) }) });
  await line.first().waitFor({ timeout });
  return line.first();
}

/** The texts of all chat lines in the log. */
export async function chatTexts(page) {
  return page.locator('#log li.msg .text').allTextContents();
}

/** The names in the people list, sorted. */
export async function userNames(page) {
  return (await page.locator('#users .uname').allTextContents()).sort();
}

/** Waits until the people list holds exactly `names` (order ignored). */
export async function waitForUsers(page, names, { timeout = STEP_TIMEOUT } = {}) {
  const want = [...names].sort();
  const deadline = Date.now() + timeout;
  let got;
  while (Date.now() < deadline) {
    got = await userNames(page);
    if (JSON.stringify(got) === JSON.stringify(want)) return;
    await sleep(100);
  }
  throw new Error(`people list is ${JSON.stringify(got)}, wanted ${JSON.stringify(want)}`);
}

/** Every JSON object the page sent on any of its WebSockets, in order. */
export function sentJson(page) {
  return page.sockets.flatMap((s) => s.sent).map((p) => { try { return JSON.parse(p); } catch { return null; } });
}

/**
 * An init script (for `setup`) that lets a test cut the page off the way a
 * laptop sleep or a network change does: `window.__wsTest.ghost()` makes the
 * page's current WebSocket look closed to the page (its onclose runs with
 * 1006) while the real connection stays open, so the server still holds it
 * and its name; `window.__wsTest.release()` then really closes it.
 * `window.__wsTest.block = true` makes new connections go to a closed port
 * (the page keeps retrying) until it is set back to false.
 */
export async function ghostableSockets(context) {
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    const t = { sockets: [], ghosts: [], block: false };
    window.__wsTest = t;
    window.WebSocket = class WebSocket extends Native {
      constructor(url, ...rest) {
        super(t.block ? 'ws://127.0.0.1:1/' : url, ...rest);
        t.sockets.push(this);
      }
    };
    t.ghost = () => {
      const s = t.sockets[t.sockets.length - 1];
      const onclose = s.onclose;
      s.onclose = null;
      s.onmessage = null;
      s.onerror = null;
      t.ghosts.push(s);
      onclose.call(s, new CloseEvent('close', { code: 1006, wasClean: false }));
    };
    t.release = () => { for (const s of t.ghosts.splice(0)) s.close(); };
  });
}

/**
 * The page as `server` serves it, saved to a temporary file with the
 * idle-timeout placeholder filled in as the server does (for servers that do
 * not substitute it yet; a page the server filled in is kept as served), and
 * the file:// address that opens it against `server`. (A page rewritten on
 * the fly by a route would count as a public site for Chromium's local
 * network checks, and could not connect to 127.0.0.1.)
 */
export async function servedPageFile(server, { idleTimeout }) {
  const html = (await (await fetch(server.url)).text()).replace('__WSCHAT_IDLE_TIMEOUT__', String(idleTimeout));
  const file = path.join(tmpDir('wschat-page-'), 'index.html');
  fs.writeFileSync(file, html);
  return `${pathToFileURL(file).href}?server=ws://127.0.0.1:${server.port}/`;
}

export function exact(text) {
  return new RegExp('^' + text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '$');
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

/** Closes every context given, ignoring ones already closed. */
export async function closeAll(...pages) {
  for (const p of pages) {
    if (p) await p.context().close().catch(() => {});
  }
}

export function tmpDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
