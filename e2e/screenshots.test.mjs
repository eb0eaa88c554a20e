// Two people chatting, photographed for docs/: the desktop view at 1280x800
// (light) and a phone at 390x844 (dark).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, startServer, startBrowser, person, say, waitForLine, waitForUsers, closeAll, sleep } from './helpers.mjs';

let server, browser;

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

test('screenshots of two people chatting, desktop and phone', { timeout: 90_000 }, async () => {
  server = await startServer();
  browser = await startBrowser();
  const alice = await person(browser, server.url, 'Alice', { color: '3E63DD', viewport: { width: 1280, height: 800 } });
  const bob = await person(browser, server.url, 'Bob', { color: 'F76B15', viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, colorScheme: 'dark' });
  const carol = await person(browser, server.url, 'Carol', { color: '30A46C' });
  try {
    await waitForUsers(alice, ['Alice', 'Bob', 'Carol']);
    const script = [
      [alice, 'Morning! Did the deploy go out?'],
      [bob, 'Yes, about ten minutes ago. The graphs look calm.'],
      [carol, 'Nice work, both of you.'],
      [alice, 'Great. Lunch at 12:30 to celebrate?'],
      [bob, 'Sounds good.\nThe usual place?'],
    ];
    for (const [who, text] of script) {
      await say(who, text);
      await waitForLine(alice, text);
      await waitForLine(bob, text);
    }
    await bob.click('#people-btn');
    await bob.getByRole('button', { name: 'Send a private message to Alice' }).click();
    await say(bob, 'Bring the slides, I will get us a table.');
    await waitForLine(alice, 'Bring the slides, I will get us a table.');
    await bob.fill('#input', 'See you there');
    await alice.fill('#input', 'Deal!');
    await sleep(300);

    const desktop = path.join(REPO, 'docs', 'screenshot.png');
    const phone = path.join(REPO, 'docs', 'screenshot-phone.png');
    fs.mkdirSync(path.dirname(desktop), { recursive: true });
    await alice.screenshot({ path: desktop });
    await bob.screenshot({ path: phone });
    for (const f of [desktop, phone]) {
      assert.ok(fs.statSync(f).size > 10_000, `${f} looks empty`);
    }
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  } finally {
    await closeAll(alice, bob, carol);
  }
});
