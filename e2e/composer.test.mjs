// The composer and the limits the server hands the page: character counter,
// Shift+Enter, the polite rate limit, keyboard-only use, and the page opened
// from disk with ?server=.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  REPO, startServer, startBrowser, person, openPage, waitForLine, closeAll, sleep, TEST_TIMEOUT,
} from './helpers.mjs';

let server, browser;

before(async () => {
  server = await startServer({ flags: ['--max-chat-chars', '40', '--rate-limit', '2'] });
  browser = await startBrowser();
}, { timeout: 40_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

test('the server serves this very page and fills in its limits', { timeout: TEST_TIMEOUT }, async () => {
  // A stale binary (built before web/index.html last changed) would fail here.
  const served = await (await fetch(server.url)).text();
  const file = fs.readFileSync(path.join(REPO, 'web', 'index.html'), 'utf8')
    .replace('__WSCHAT_MAX_CHAT_CHARS__', '40').replace('__WSCHAT_RATE_LIMIT__', '2');
  // The idle timeout (default 30 s) is filled in by servers that know the
  // placeholder; the page falls back to 30 where it is left as it is.
  const filledIdle = file.replace('__WSCHAT_IDLE_TIMEOUT__', '30');
  assert.ok(served === file || served === filledIdle, 'GET / returns web/index.html with its limits filled in (rebuild wschat?)');
  const page = await openPage(browser, server.url);
  try {
    const meta = (n) => page.getAttribute(`meta[name="${n}"]`, 'content');
    assert.equal(await meta('wschat-max-chat-chars'), '40');
    assert.equal(await meta('wschat-rate-limit'), '2');
    assert.ok(['30', '__WSCHAT_IDLE_TIMEOUT__'].includes(await meta('wschat-idle-timeout')));
  } finally {
    await closeAll(page);
  }
});

test('keyboard only: join, write two lines with Shift+Enter, send with Enter', { timeout: TEST_TIMEOUT }, async () => {
  const page = await openPage(browser, server.url);
  try {
    assert.equal(await page.evaluate(() => document.activeElement.id), 'name', 'the name field has focus');
    await page.keyboard.type('Kay');
    await page.keyboard.press('Tab');                        // into the colour group
    assert.equal(await page.evaluate(() => document.activeElement.name), 'colour');
    const before = await page.evaluate(() => document.activeElement.value);
    await page.keyboard.press('ArrowRight');                  // next colour
    const chosen = await page.evaluate(() => document.activeElement.value);
    assert.notEqual(chosen, before);
    await page.keyboard.press('Tab');                         // custom colour
    await page.keyboard.press('Tab');                         // Join
    assert.equal(await page.evaluate(() => document.activeElement.id), 'join-submit');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#join', { state: 'hidden' });
    await page.waitForFunction(() => document.activeElement.id === 'input');

    await page.keyboard.type('first line');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line');
    assert.equal(await page.inputValue('#input'), 'first line\nsecond line', 'Shift+Enter adds a line');
    await page.keyboard.press('Enter');
    const line = await waitForLine(page, 'first line\nsecond line');
    // The colour picked with the arrow key is the one the server now uses.
    assert.equal(await page.evaluate(() => localStorage.getItem('wschat.color')), chosen);
    assert.ok(await line.isVisible());
  } finally {
    await closeAll(page);
  }
});

test('the counter counts characters, not UTF-16 units, and stops over-long text', { timeout: TEST_TIMEOUT }, async () => {
  const page = await person(browser, server.url, 'Lou');
  try {
    await page.fill('#input', 'x'.repeat(20));
    assert.equal(await page.textContent('#counter'), '', 'no counter far from the limit');
    await page.fill('#input', '😀'.repeat(35));              // 70 UTF-16 units, 35 characters
    assert.equal(await page.textContent('#counter'), '35 / 40');
    assert.ok(await page.locator('#send').isEnabled());
    await page.fill('#input', 'y'.repeat(45));
    assert.match(await page.textContent('#counter'), /^45 \/ 40/);
    assert.match(await page.getAttribute('#counter', 'class'), /\bover\b/);
    assert.ok(await page.locator('#send').isDisabled());
    await page.press('#input', 'Enter');
    assert.match(await page.textContent('#composer-note'), /Too long by 5/);
    assert.equal(await page.inputValue('#input'), 'y'.repeat(45), 'nothing typed is lost');
    assert.equal(await page.locator('#log li.err').count(), 0, 'nothing went to the server');
    await page.fill('#input', '😀'.repeat(40));
    await page.press('#input', 'Enter');
    await waitForLine(page, '😀'.repeat(40));
  } finally {
    await closeAll(page);
  }
});

test('sending too fast is slowed down politely and keeps the text', { timeout: TEST_TIMEOUT }, async () => {
  const page = await person(browser, server.url, 'Max');
  try {
    // Ten quick Enters inside one task, so the test does not depend on how
    // fast this machine happens to be.
    const held = await page.evaluate(() => {
      const input = document.getElementById('input');
      for (let i = 1; i <= 10; i++) {
        input.value = `burst ${i}`;
        input.dispatchEvent(new Event('input'));
        input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
        if (/Easy there/.test(document.getElementById('composer-note').textContent)) return `burst ${i}`;
      }
      return null;
    });
    assert.ok(held, 'the page noticed the rate limit itself');
    assert.equal(await page.inputValue('#input'), held, 'the held-back message stays in the box');
    await sleep(1_200);
    await page.press('#input', 'Enter');
    await waitForLine(page, held);
    assert.equal(await page.locator('#log li.err:not(.polite)').count(), 0, 'no rude errors');
  } finally {
    await closeAll(page);
  }
});

test('opened from disk with ?server= it connects and falls back to default limits', { timeout: TEST_TIMEOUT }, async () => {
  const file = pathToFileURL(path.join(REPO, 'web', 'index.html')).href;
  const page = await openPage(browser, `${file}?server=ws://127.0.0.1:${server.port}/`);
  try {
    await page.fill('#name', 'Nat');
    await page.press('#name', 'Enter');
    await page.waitForSelector('#join', { state: 'hidden' });
    await page.fill('#input', 'z'.repeat(1700));              // the default 2000, not the server's 40
    assert.equal(await page.textContent('#counter'), '1700 / 2000');
    await page.fill('#input', 'hello from a file');
    await page.press('#input', 'Enter');
    await waitForLine(page, 'hello from a file');
  } finally {
    await closeAll(page);
  }
});

test('when the server itself says rate_limited, the page says so politely and keeps the text', { timeout: TEST_TIMEOUT }, async () => {
  // Opened from disk the page assumes the default 10 messages a second, while
  // this server allows 2: the server's rate_limited errors must be handled.
  const file = pathToFileURL(path.join(REPO, 'web', 'index.html')).href;
  const page = await openPage(browser, `${file}?server=ws://127.0.0.1:${server.port}/`);
  try {
    await page.fill('#name', 'Ola');
    await page.press('#name', 'Enter');
    await page.waitForSelector('#join', { state: 'hidden' });
    await page.evaluate(() => {
      const input = document.getElementById('input');
      for (let i = 1; i <= 6; i++) {
        input.value = `quick ${i}`;
        input.dispatchEvent(new Event('input'));
        input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
      }
    });
    const polite = page.locator('#log li.err.polite', { hasText: 'a little fast' });
    await polite.first().waitFor();
    await waitForLine(page, 'quick 1');
    // Every message is either delivered or back in the box, none lost. The
    // history of earlier tests on this server (section 9) is not counted.
    await sleep(300);
    const delivered = await page.locator('#log li.msg:not(.earlier) .text').allTextContents();
    const box = (await page.inputValue('#input')).split('\n').filter(Boolean);
    const all = [...delivered, ...box].sort();
    assert.deepEqual(all, ['quick 1', 'quick 2', 'quick 3', 'quick 4', 'quick 5', 'quick 6']);
    assert.ok(box.length > 0, 'some were rejected and kept');
    assert.equal(await polite.count(), 1, 'one notice for the whole burst');
    assert.equal(await page.locator('#log li.err:not(.polite)').count(), 0);
    assert.deepEqual(page.dialogs, []);
  } finally {
    await closeAll(page);
  }
});
