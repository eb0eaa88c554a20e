// Kill the server under two open pages, start it again on the same port, and
// check the pages find their way back on their own.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startBrowser, person, say, waitForLine, waitForUsers, closeAll } from './helpers.mjs';

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
