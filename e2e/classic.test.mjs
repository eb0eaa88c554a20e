// The classic PHP/jQuery chat page (our re-creation in classic/index.html,
// opened from disk) against a real wschat, unchanged except that it reads the
// WebSocket address from ?ws=. It must talk with other classic pages and with
// the new web client, under the paths the old tutorials used.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  REPO, startServer, startBrowser, person, say, waitForLine, waitForUsers,
  closeAll, sleep, exact, STEP_TIMEOUT, TEST_TIMEOUT,
} from './helpers.mjs';

const CLASSIC_PAGE = pathToFileURL(path.join(REPO, 'e2e', 'classic', 'index.html')).href;
// The list classic/index.html picks its colour from.
const CLASSIC_COLOURS = ['007AFF', 'FF7000', '15E25F', 'CFC700', 'CF1100', 'CF00BE', '7B3FD6', '0099A8'];

let server, browser;

before(async () => {
  server = await startServer();
  browser = await startBrowser();
}, { timeout: 40_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

function classicUrl(port, wsPath) {
  return `${CLASSIC_PAGE}?ws=${encodeURIComponent(`ws://127.0.0.1:${port}${wsPath}`)}`;
}

/**
 * Opens the classic page in its own context. Records dialogs, page errors,
 * console errors, and the WebSocket (address, frames sent and received, as
 * the browser saw them on the wire).
 *
 * The page empties its message field whenever anything arrives, including
 * the `users` list wschat sends right after the handshake (and the `history`
 * that follows it from a v2 server); a person would never type that fast, so
 * before returning we wait until the page has handled its first message and
 * nothing more came for 200 ms. To know that exactly, an init script adds one
 * listener of its own to every WebSocket the page makes (it changes nothing
 * else: the page's onmessage still runs, after it, in the same task).
 */
async function openClassic(url, { waitForFirstMessage = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 }, locale: 'en-GB', timezoneId: 'UTC' });
  context.setDefaultTimeout(STEP_TIMEOUT);
  await context.addInitScript(() => {
    window.__wsMessagesSeen = 0;
    const Native = window.WebSocket;
    window.WebSocket = class WebSocket extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener('message', () => { window.__wsMessagesSeen++; });
      }
    };
  });
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.consoleErrors = [];
  page.sockets = [];
  page.on('dialog', async (d) => { page.dialogs.push(d.message()); await d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.on('websocket', (ws) => {
    const rec = { url: ws.url(), sent: [], received: [] };
    page.sockets.push(rec);
    ws.on('framesent', (f) => rec.sent.push(f.payload));
    ws.on('framereceived', (f) => rec.received.push(f.payload));
  });
  await page.goto(url);
  if (waitForFirstMessage) {
    await page.locator('#message_box > div.system_msg', { hasText: exact('Connected!') }).waitFor();
    await page.waitForFunction(() => window.__wsMessagesSeen >= 1);
    let seen = -1;
    for (let i = 0; i < 50; i++) {
      const now = await page.evaluate(() => window.__wsMessagesSeen);
      if (now === seen) break;
      seen = now;
      await sleep(200);
    }
  }
  return page;
}

/** What a person does on the classic page: type name and message, click Send. */
async function classicSay(page, name, text) {
  await page.fill('#name', name);
  await page.fill('#message', text);
  await page.click('#send-btn');
}

/** Every line in #message_box as text, in order. */
async function boxLines(page) {
  return page.locator('#message_box > div').allTextContents();
}

/** Waits until #message_box holds a chat line `name : text`; returns {name, color, text} of the first. */
async function waitForClassicLine(page, name, text) {
  const line = page.locator('#message_box > div:not([class])').filter({ hasText: exact(`${name} : ${text}`) }).first();
  await line.waitFor();
  return {
    name: await line.locator('span.user_name').textContent(),
    style: await line.locator('span.user_name').getAttribute('style'),
    text: await line.locator('span.user_message').textContent(),
  };
}

async function waitForSystemLine(page, text) {
  await page.locator('#message_box > div.system_msg', { hasText: exact(text) }).first().waitFor();
}

/** The colour the classic page picked for this load (index.php's PHP pick). */
async function classicColour(page) {
  const c = await page.evaluate(() => window.user_colour);
  assert.ok(CLASSIC_COLOURS.includes(c), `colour ${c} is from the page's list`);
  return c;
}

/** The colour the new web client shows for a chat line (its avatar). */
async function avatarColour(line) {
  return line.locator('.avatar').evaluate((e) => e.style.getPropertyValue('--c').trim());
}

function assertClean(...pages) {
  for (const p of pages) {
    assert.deepEqual(p.dialogs, [], 'no alert() or other dialog');
    assert.deepEqual(p.errors, [], 'no uncaught page error');
    if (p.consoleErrors) assert.deepEqual(p.consoleErrors, [], 'no console error');
  }
}

test('two classic jQuery pages and the new web client chat together', { timeout: TEST_TIMEOUT }, async () => {
  const wsUrl = classicUrl(server.port, '/demo/server.php');
  let olga, piet, nina;
  try {
    olga = await openClassic(wsUrl);
    piet = await openClassic(wsUrl);
    for (const p of [olga, piet]) {
      assert.equal(p.sockets.length, 1);
      assert.equal(p.sockets[0].url, `ws://127.0.0.1:${server.port}/demo/server.php`);
      assert.deepEqual(await boxLines(p), ['Connected!'], 'the page starts with its own "Connected!" line only');
      // The server's `users` snapshot is not something the page knows; it ignores it.
      assert.equal(JSON.parse(p.sockets[0].received[0]).type, 'users');
    }
    const olgaColour = await classicColour(olga);
    const pietColour = await classicColour(piet);

    // A person on the new page arrives; the classic pages get the system line.
    nina = await person(browser, server.url, 'Nina', { color: '30A46C' });
    await waitForSystemLine(olga, 'Nina joined');
    await waitForSystemLine(piet, 'Nina joined');

    // Olga's first message names her: a join line, then her message, everywhere.
    await classicSay(olga, 'Olga', 'Hello from the old page');
    for (const p of [olga, piet]) {
      const line = await waitForClassicLine(p, 'Olga', 'Hello from the old page');
      assert.deepEqual(line, { name: 'Olga', style: `color:#${olgaColour}`, text: 'Hello from the old page' });
    }
    const atNina = await waitForLine(nina, 'Hello from the old page');
    assert.equal(await atNina.locator('.who').textContent(), 'Olga');
    assert.equal(await avatarColour(atNina), `#${olgaColour}`);
    await nina.locator('#log li.sys > span', { hasText: exact('Olga joined') }).first().waitFor();
    assert.equal(await olga.inputValue('#message'), '', 'the page empties the message field when its line comes back');
    assert.equal(await olga.inputValue('#name'), 'Olga', 'the name stays for the next message');
    // On the wire: exactly the classic shape, nothing else.
    assert.deepEqual(JSON.parse(olga.sockets[0].sent[0]), { message: 'Hello from the old page', name: 'Olga', color: olgaColour });

    // Piet answers, with some non-ASCII text.
    await classicSay(piet, 'Piet', 'Hoi Olga, café ☕ ok?');
    for (const p of [olga, piet]) {
      const line = await waitForClassicLine(p, 'Piet', 'Hoi Olga, café ☕ ok?');
      assert.equal(line.style, `color:#${pietColour}`);
    }
    const pietAtNina = await waitForLine(nina, 'Hoi Olga, café ☕ ok?');
    assert.equal(await pietAtNina.locator('.who').textContent(), 'Piet');
    assert.equal(await avatarColour(pietAtNina), `#${pietColour}`);
    await waitForUsers(nina, ['Nina', 'Olga', 'Piet']);

    // The new page writes; the classic pages show it with Nina's colour.
    await say(nina, 'Greetings from the new page');
    for (const p of [olga, piet]) {
      const line = await waitForClassicLine(p, 'Nina', 'Greetings from the new page');
      assert.deepEqual(line, { name: 'Nina', style: 'color:#30A46C', text: 'Greetings from the new page' });
    }

    // A second message from Olga: no second join line.
    await classicSay(olga, 'Olga', 'Second one');
    await waitForClassicLine(piet, 'Olga', 'Second one');
    await waitForClassicLine(olga, 'Olga', 'Second one');
    await waitForLine(nina, 'Second one');

    // Both classic pages saw the same conversation, in the same order.
    const expected = [
      'Connected!',
      'Nina joined',
      'Olga joined',
      'Olga : Hello from the old page',
      'Piet joined',
      'Piet : Hoi Olga, café ☕ ok?',
      'Nina : Greetings from the new page',
      'Olga : Second one',
    ];
    assert.deepEqual(await boxLines(olga), expected);
    assert.deepEqual(await boxLines(piet), expected);

    // Piet closes his tab: the others get a leave line.
    const pietGone = piet;
    piet = null;
    await pietGone.context().close();
    await waitForSystemLine(olga, 'Piet left');
    await nina.locator('#log li.sys > span', { hasText: exact('Piet left') }).first().waitFor();
    await waitForUsers(nina, ['Nina', 'Olga']);
    assert.equal(await olga.locator('#message_box > div', { hasText: 'Connection Closed' }).count(), 0, 'Olga is still connected');

    // Olga can still talk after that.
    await classicSay(olga, 'Olga', 'Still here');
    await waitForLine(nina, 'Still here');
    await waitForClassicLine(olga, 'Olga', 'Still here');

    assertClean(olga, pietGone);
    assert.deepEqual(nina.dialogs, []);
    assert.deepEqual(nina.errors, []);
  } finally {
    await closeAll(olga, piet, nina);
  }
});

test('a classic page on /daemon.php: empty fields alert, chat works, server shutdown shows "Connection Closed"', { timeout: TEST_TIMEOUT }, async () => {
  // A server of its own, so that stopping it does not disturb the other tests.
  const own = await startServer();
  let dana, emil;
  try {
    dana = await openClassic(classicUrl(own.port, '/daemon.php'));
    emil = await openClassic(classicUrl(own.port, '/demo/server.php'));
    assert.equal(dana.sockets[0].url, `ws://127.0.0.1:${own.port}/daemon.php`);
    const danaColour = await classicColour(dana);

    // The page's own checks: an alert and nothing sent.
    await dana.click('#send-btn');
    await dana.fill('#name', 'Dana');
    await dana.click('#send-btn');
    assert.deepEqual(dana.dialogs, ['Enter your Name please!', 'Enter Some message Please!']);
    assert.deepEqual(dana.sockets[0].sent, []);
    dana.dialogs.length = 0;

    await classicSay(dana, 'Dana', 'Hello via daemon.php');
    for (const p of [dana, emil]) {
      const line = await waitForClassicLine(p, 'Dana', 'Hello via daemon.php');
      assert.equal(line.style, `color:#${danaColour}`);
      await waitForSystemLine(p, 'Dana joined');
    }
    await classicSay(emil, 'Emil', 'Hi Dana');
    await waitForClassicLine(dana, 'Emil', 'Hi Dana');

    const expected = ['Connected!', 'Dana joined', 'Dana : Hello via daemon.php', 'Emil joined', 'Emil : Hi Dana'];
    assert.deepEqual(await boxLines(dana), expected);
    assert.deepEqual(await boxLines(emil), expected);

    // The server goes away (SIGTERM: close 1001 to everyone): the page's onclose.
    await own.stop();
    for (const p of [dana, emil]) {
      await waitForSystemLine(p, 'Connection Closed');
      assert.deepEqual(await boxLines(p), [...expected, 'Connection Closed']);
    }
    assertClean(dana, emil);
  } finally {
    await closeAll(dana, emil);
    await own.stop();
  }
});

test('a classic page whose server is not there shows "Error Occurred" and "Connection Closed"', { timeout: TEST_TIMEOUT }, async () => {
  // A port that was just in use and is now free: nothing listens there.
  const gone = await startServer();
  const port = gone.port;
  await gone.stop();
  let page;
  try {
    page = await openClassic(classicUrl(port, '/demo/server.php'), { waitForFirstMessage: false });
    await waitForSystemLine(page, 'Connection Closed');
    await sleep(100);
    // Error events carry no data, so the classic page prints "undefined".
    assert.deepEqual(await boxLines(page), ['Error Occurred - undefined', 'Connection Closed']);
    assert.deepEqual(page.dialogs, []);
    assert.deepEqual(page.errors, []);
  } finally {
    await closeAll(page);
  }
});
