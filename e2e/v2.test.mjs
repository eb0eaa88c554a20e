// The page against the v2 server features: history with message ids
// (PROTOCOL.md section 9), announcements through the admin API (section 11)
// and colours on join/rename events (section 4).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  REPO, startServer, startBrowser, person, say, waitForLine, chatTexts,
  waitForUsers, closeAll, sleep, exact, sentJson, ghostableSockets, STEP_TIMEOUT, TEST_TIMEOUT,
} from './helpers.mjs';

const TOKEN = 'e2e-admin-token-0123456789abcdef';
const CLASSIC_PAGE = pathToFileURL(path.join(REPO, 'e2e', 'classic', 'index.html')).href;

let browser;

before(async () => { browser = await startBrowser(); }, { timeout: 40_000 });
after(async () => { await browser?.close().catch(() => {}); }, { timeout: 20_000 });

/** A server of the test's own, with history and the admin API on. */
function v2Server(history = 50) {
  return startServer({ flags: ['--history', String(history), '--admin-token', TOKEN] });
}

/** POST /api/publish as an operator; returns the announcement's id. */
async function publish(server, message) {
  const res = await fetch(new URL('/api/publish', server.url), {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ message }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, `POST /api/publish: ${res.status} ${JSON.stringify(body)}`);
  assert.equal(body.ok, true);
  assert.match(body.id, /^[A-Za-z0-9_-]{1,64}$/);
  return body.id;
}

/** The log as [class, text] rows, top to bottom. */
async function logRows(page) {
  return page.$$eval('#log > li', (lis) => lis.map((li) => [li.className, li.querySelector('.text')?.textContent ?? li.textContent]));
}

/** The colour of `name`'s avatar in the people list. */
function listColour(page, name) {
  return page.locator('#users li', { has: page.locator('.uname', { hasText: exact(name) }) })
    .locator('.avatar').evaluate((e) => e.style.getPropertyValue('--c').trim());
}

test('a newcomer sees the history under an "earlier messages" divider, before live messages', { timeout: TEST_TIMEOUT }, async () => {
  const server = await v2Server();
  let amy, ben, cid;
  try {
    amy = await person(browser, server.url, 'Amy', { color: '30A46C' });
    ben = await person(browser, server.url, 'Ben', { color: 'E5484D' });
    // Each line waits for the one before it, so the server's order is known.
    await say(amy, 'first, from before');
    await waitForLine(ben, 'first, from before');
    await say(ben, 'second, from before');
    await waitForLine(ben, 'second, from before');
    await publish(server, 'an announcement from before');
    await ben.locator('#log li.announce').first().waitFor();
    await ben.getByRole('button', { name: 'Send a private message to Amy' }).click();
    await say(ben, 'private, never in history');
    await waitForLine(amy, 'private, never in history');
    await closeAll(ben);
    ben = null;

    cid = await person(browser, server.url, 'Cid');
    await say(amy, 'live, after Cid came');
    await waitForLine(cid, 'live, after Cid came');
    const rows = await logRows(cid);
    const at = (cls, text) => rows.findIndex(([c, t]) => c.split(' ').includes(cls) && (text === undefined || t === text));
    const divider = at('earlier-divider');
    assert.ok(divider >= 0, `an "earlier messages" divider in ${JSON.stringify(rows)}`);
    assert.equal(rows[divider][1], 'Earlier messages');
    const first = at('msg', 'first, from before');
    const second = at('msg', 'second, from before');
    const ann = rows.findIndex(([c, t]) => c.includes('announce') && t.includes('an announcement from before'));
    const joined = at('sys', undefined);
    const live = at('msg', 'live, after Cid came');
    assert.ok(divider < first && first < second && second < ann && ann < live,
      `divider, history in order, then live: ${JSON.stringify(rows)}`);
    assert.ok(ann < joined, 'Cid\'s own join line comes after the history');
    assert.ok((await cid.locator('#log li.msg.earlier').count()) === 2, 'history lines are marked as earlier');
    assert.ok(!(await chatTexts(cid)).includes('private, never in history'));
    // The history names who wrote: Ben left, his line stays his.
    const benLine = await waitForLine(cid, 'second, from before');
    assert.equal(await benLine.locator('.who').textContent(), 'Ben');
    assert.equal(await benLine.locator('.avatar').evaluate((e) => e.style.getPropertyValue('--c').trim()), '#E5484D');
    assert.deepEqual(cid.errors, []);
  } finally {
    await closeAll(amy, ben, cid);
    await server.stop();
  }
});

test('after a reconnect each message is shown once: what was missed is added, nothing repeats', { timeout: TEST_TIMEOUT }, async () => {
  const server = await v2Server();
  let dee, eli;
  try {
    dee = await person(browser, server.url, 'Dee', { setup: ghostableSockets });
    eli = await person(browser, server.url, 'Eli');
    await say(eli, 'one');
    await say(eli, 'two');
    await waitForLine(dee, 'two');

    // Dee's network goes away for a while (new connections fail), her
    // connection closes; meanwhile the chat goes on.
    await dee.evaluate(() => { window.__wsTest.block = true; window.__wsTest.sockets.at(-1).close(); });
    await dee.waitForSelector('body:not([data-conn="open"])');
    await waitForUsers(eli, ['Eli']);
    await say(eli, 'three');
    await publish(server, 'four, announced');
    await say(eli, 'five');
    await waitForLine(eli, 'five');

    await dee.evaluate(() => { window.__wsTest.block = false; });
    // Reconnect now rather than after the page's back-off (at most 10 s).
    // The button is hidden while an attempt is under way, and the page may
    // have started one on its own: then there is nothing to click.
    await dee.locator('#retry-now').click({ timeout: 2_000 }).catch(() => {});
    await dee.locator('#log li.sys', { hasText: 'You are back as Dee' }).first().waitFor({ timeout: 20_000 });
    await say(eli, 'six, live');
    await waitForLine(dee, 'six, live');

    assert.deepEqual(await chatTexts(dee), ['one', 'two', 'three', 'five', 'six, live'], 'every line once, in order');
    assert.equal(await dee.locator('#log li.announce').count(), 1);
    const rows = await logRows(dee);
    const missed = rows.findIndex(([c]) => c.includes('earlier-divider'));
    assert.ok(missed >= 0 && rows[missed][1] === 'Missed while you were away', JSON.stringify(rows));
    assert.ok(missed > rows.findIndex(([, t]) => t === 'two') && missed < rows.findIndex(([, t]) => t === 'three'));
    assert.deepEqual(dee.errors, []);
  } finally {
    await closeAll(dee, eli);
    await server.stop();
  }
});

test('an announcement is a banner on the page and a system line on the classic page, which ignores the history', { timeout: TEST_TIMEOUT }, async () => {
  const server = await v2Server();
  let fay, classic;
  try {
    fay = await person(browser, server.url, 'Fay');
    await say(fay, 'kept in history');
    await waitForLine(fay, 'kept in history');

    // The classic page: Connected!, then `users` and a non-empty `history`, which it ignores.
    const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
    context.setDefaultTimeout(STEP_TIMEOUT);
    classic = await context.newPage();
    classic.errors = [];
    classic.dialogs = [];
    classic.on('pageerror', (e) => classic.errors.push(String(e)));
    classic.on('dialog', async (d) => { classic.dialogs.push(d.message()); await d.dismiss().catch(() => {}); });
    const received = [];
    classic.on('websocket', (ws) => ws.on('framereceived', (f) => received.push(JSON.parse(f.payload))));
    await classic.goto(`${CLASSIC_PAGE}?ws=${encodeURIComponent(`ws://127.0.0.1:${server.port}/demo/server.php`)}`);
    const deadline = Date.now() + STEP_TIMEOUT;
    while (Date.now() < deadline && !received.some((m) => m.type === 'history')) await sleep(50);
    assert.deepEqual(received.map((m) => m.type).slice(0, 2), ['users', 'history']);
    assert.equal(received[1].messages.length, 1);

    const text = 'The chat restarts at 22:00 UTC';
    const id = await publish(server, text);
    const banner = fay.locator('#log li.announce').filter({ hasText: text });
    await banner.waitFor();
    assert.equal(await banner.locator('.announce-label').textContent(), 'Announcement');
    assert.equal(await banner.locator('.text').textContent(), text);
    assert.equal(await fay.locator('#log li.msg', { hasText: text }).count(), 0, 'not a person\'s line');
    assert.equal(await fay.locator('#log li.sys', { hasText: text }).count(), 0, 'not a join/leave line');

    await classic.locator('#message_box > div.system_msg', { hasText: exact(text) }).waitFor();
    assert.deepEqual(await classic.locator('#message_box > div').allTextContents(), ['Connected!', text],
      'the history adds nothing, the announcement is one system line');
    const ev = received.find((m) => m.event === 'announce');
    assert.equal(ev.id, id);
    assert.deepEqual(classic.errors, []);
    assert.deepEqual(classic.dialogs, []);
    assert.deepEqual(fay.errors, []);
  } finally {
    await closeAll(fay, classic);
    await server.stop();
  }
});

test('join and rename events carry the colour: the list shows it at once, without asking for the list', { timeout: TEST_TIMEOUT }, async () => {
  const server = await v2Server();
  let gus, hal;
  try {
    gus = await person(browser, server.url, 'Gus', { color: '0090FF' });
    hal = await person(browser, server.url, 'Hal', { color: 'F76B15' });
    await waitForUsers(gus, ['Gus', 'Hal']);
    assert.equal(await listColour(gus, 'Hal'), '#F76B15', 'the colour of the join event, before Hal wrote anything');

    // Rename with a new colour: the rename event carries it.
    await hal.click('#me-btn');
    await hal.fill('#name', 'Hallie');
    await hal.check('#swatches input[value="8E4EC6"]');
    await hal.press('#name', 'Enter');
    await hal.waitForSelector('#join', { state: 'hidden' });
    await waitForUsers(gus, ['Gus', 'Hallie']);
    assert.equal(await listColour(gus, 'Hallie'), '#8E4EC6');
    assert.equal(await listColour(hal, 'Hallie'), '#8E4EC6');

    await sleep(2000);
    for (const p of [gus, hal]) assert.deepEqual(sentJson(p).filter((m) => m && m.type === 'users'), []);
    assert.deepEqual([...gus.errors, ...hal.errors], []);
  } finally {
    await closeAll(gus, hal);
    await server.stop();
  }
});
