// Kill the server under two open pages, start it again on the same port, and
// check the pages find their way back on their own.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, startBrowser, person, say, waitForLine, waitForUsers, closeAll, sleep, sentJson,
  ghostableSockets, servedPageFile,
} from './helpers.mjs';

let server, browser;

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

test('pages reconnect and re-join after the server restarts, keeping typed text', { timeout: 90_000 }, async () => {
  server = await startServer();
  const port = server.port;
  browser = await startBrowser();
  const hal = await person(browser, server.url, 'Hal');
  const ivy = await person(browser, server.url, 'Ivy');
  try {
    await say(hal, 'before the restart');
    await waitForLine(ivy, 'before the restart');

    const draft = 'half-written thought, please keep me';
    await ivy.fill('#input', draft);

    // An abrupt death: no close frames, the pages just lose their sockets.
    await server.stop({ kill: true });
    for (const p of [hal, ivy]) {
      await p.waitForSelector('body:not([data-conn="open"])');
      await p.waitForSelector('#input[disabled]');
      await p.locator('#log li.sys', { hasText: 'Reconnecting' }).first().waitFor();
    }
    assert.equal(await ivy.inputValue('#input'), draft, 'the composer keeps its text while offline');

    server = await startServer({ port, tries: 20 });
    assert.equal(server.port, port);

    // Back-off starts at 250 ms and is capped at 10 s: allow for the cap.
    for (const p of [hal, ivy]) {
      await p.waitForSelector('body[data-conn="open"]', { timeout: 20_000 });
      await p.waitForSelector('#input:not([disabled])', { timeout: 10_000 });
    }
    await hal.locator('#log li.sys', { hasText: 'You are back as Hal' }).first().waitFor();
    await ivy.locator('#log li.sys', { hasText: 'You are back as Ivy' }).first().waitFor();
    await waitForUsers(hal, ['Hal', 'Ivy']);
    assert.equal(await ivy.inputValue('#input'), draft, 'the composer still has its text after reconnecting');
    assert.equal(await hal.textContent('#me-name'), 'Hal');

    // Chat works again, both ways, with no reload.
    await say(hal, 'after the restart');
    await waitForLine(ivy, 'after the restart');
    await ivy.press('#input', 'Enter');
    const line = await waitForLine(hal, draft);
    assert.equal(await line.locator('.who').textContent(), 'Ivy');

    // A polite shutdown (SIGTERM sends close code 1001) is announced as a restart.
    await server.stop();
    await hal.locator('#log li.sys', { hasText: 'The server is restarting' }).first().waitFor();
    server = await startServer({ port, tries: 20 });
    await hal.waitForSelector('#input:not([disabled])', { timeout: 20_000 });
    await ivy.waitForSelector('#input:not([disabled])', { timeout: 20_000 });
    await say(ivy, 'third time lucky');
    await waitForLine(hal, 'third time lucky');
    await waitForUsers(ivy, ['Hal', 'Ivy']);
    assert.deepEqual([...hal.dialogs, ...ivy.dialogs], []);
    assert.deepEqual([...hal.errors, ...ivy.errors], []);
  } finally {
    await closeAll(hal, ivy);
  }
});

// After a laptop sleep or a network change the page knows its connection is
// gone long before the server does: the server keeps the dead connection, and
// the name with it, until its keepalive gives up (2 x --idle-timeout). The
// page keeps claiming its name until then instead of saying it is taken.
const IDLE = 1;   // --idle-timeout: the page waits 2 x 1 s + 10 s at most

test('after a silent drop the page waits for the server to release its name, then gets it back', { timeout: 90_000 }, async () => {
  const own = await startServer({ flags: ['--idle-timeout', String(IDLE)] });
  browser ??= await startBrowser();
  let jo, kit;
  try {
    const page = await servedPageFile(own, { idleTimeout: IDLE });
    jo = await person(browser, page, 'Jo', { setup: ghostableSockets });
    kit = await person(browser, own.url, 'Kit');
    await waitForUsers(jo, ['Jo', 'Kit']);
    await jo.fill('#input', 'typed before the sleep');

    // The page's connection dies without the server noticing.
    await jo.evaluate(() => window.__wsTest.ghost());
    await jo.waitForSelector('body[data-rejoin="waiting"]');
    assert.equal(await jo.textContent('#conn-text'), 'Reconnecting: waiting for the server to release your name…');
    await jo.locator('#log li.sys', { hasText: 'still holds your name “Jo”' }).first().waitFor();
    assert.ok(await jo.locator('#join').isHidden(), 'no join dialog while waiting');
    assert.ok(await jo.locator('#name-error').isHidden(), 'no "name taken" error while waiting');
    assert.ok(await jo.locator('#input').isDisabled());
    assert.equal(await jo.inputValue('#input'), 'typed before the sleep');
    // It keeps asking: a second claim after the first refusal.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && claims(jo, 'Jo') < 3) await sleep(100);
    assert.ok(claims(jo, 'Jo') >= 3, `the page claimed Jo again and again (${claims(jo, 'Jo')} claims)`);
    await waitForUsers(kit, ['Jo', 'Kit']);   // the old connection still holds it

    // The server lets the old connection go: the page gets the name back.
    await jo.evaluate(() => window.__wsTest.release());
    await jo.locator('#log li.sys', { hasText: 'You are back as Jo' }).first().waitFor({ timeout: 10_000 });
    await jo.waitForSelector('body:not([data-rejoin])');
    assert.equal(await jo.textContent('#conn-text'), 'Connected');
    await jo.waitForSelector('#input:not([disabled])');
    assert.equal(await jo.textContent('#me-name'), 'Jo');
    assert.equal(await jo.inputValue('#input'), 'typed before the sleep', 'the draft survives');
    await jo.press('#input', 'Enter');
    const line = await waitForLine(kit, 'typed before the sleep');
    assert.equal(await line.locator('.who').textContent(), 'Jo');
    await waitForUsers(jo, ['Jo', 'Kit']);
    assert.deepEqual(jo.dialogs, []);
    assert.deepEqual([...jo.errors, ...kit.errors], []);
  } finally {
    await closeAll(jo, kit);
    await own.stop();
  }
});

test('the page gives up on its name once the server would have released it, with a clear message', { timeout: 90_000 }, async () => {
  const own = await startServer({ flags: ['--idle-timeout', String(IDLE)] });
  browser ??= await startBrowser();
  let lu;
  try {
    lu = await person(browser, await servedPageFile(own, { idleTimeout: IDLE }), 'Lu', { setup: ghostableSockets });
    const started = Date.now();
    await lu.evaluate(() => window.__wsTest.ghost());   // never released: someone "else" has Lu now
    await lu.waitForSelector('body[data-rejoin="waiting"]');
    const err = lu.locator('#name-error');
    await err.waitFor({ state: 'visible', timeout: (2 * IDLE + 10 + 10) * 1000 });
    const waited = (Date.now() - started) / 1000;
    assert.ok(waited >= 2 * IDLE + 10 - 1, `waited ${waited} s, at least 2 x idle timeout + 10 s`);
    assert.match(await err.textContent(), /“Lu” is still in use after waiting \d+ s/);
    assert.ok(await lu.locator('#join').isVisible(), 'the join dialog is open to pick another name');
    assert.equal(await lu.inputValue('#name'), 'Lu');
    assert.ok(await lu.locator('body:not([data-rejoin])').count() === 1);
    assert.equal(await lu.textContent('#conn-text'), 'Connected');
    await lu.locator('#log li.sys', { hasText: 'Could not get your name “Lu” back' }).first().waitFor();

    // Another name works at once.
    await lu.fill('#name', 'Lu Two');
    await lu.press('#name', 'Enter');
    await lu.waitForSelector('#join', { state: 'hidden' });
    await lu.waitForSelector('#input:not([disabled])');
    assert.equal(await lu.textContent('#me-name'), 'Lu Two');
    await waitForUsers(lu, ['Lu', 'Lu Two']);
    assert.deepEqual(lu.dialogs, []);
    assert.deepEqual(lu.errors, []);
  } finally {
    await closeAll(lu);
    await own.stop();
  }
});

/** How many times the page sent a join claiming `name`. */
function claims(page, name) {
  return sentJson(page).filter((m) => m && m.type === 'join' && m.name === name).length;
}
