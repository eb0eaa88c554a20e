// Two people chatting, photographed: the desktop view at 1280x800 (light) and
// a phone at 390x844 (dark). The pictures go to target/screenshots/ only;
// scripts/update-screenshots.sh copies them into docs/ on purpose.
//
// The scene opens with earlier messages and an announcement, as the README
// shows them (WSCHAT_E2E_V2=0 takes the plain scene without them).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, startServer, startBrowser, person, say, waitForLine, waitForUsers, closeAll, sleep } from './helpers.mjs';

const V2 = process.env.WSCHAT_E2E_V2 !== '0';
const OUT = path.join(REPO, 'target', 'screenshots');
const TOKEN = 'screenshot-admin-token-0123456789';

let server, browser;

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

async function publish(message) {
  const res = await fetch(new URL('/api/publish', server.url), {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ message }),
  });
  assert.equal(res.status, 200, `POST /api/publish answered ${res.status}`);
}

test(`screenshots of people chatting, desktop and phone${V2 ? ' (history and an announcement)' : ''}`, { timeout: 90_000 }, async () => {
  server = await startServer({ flags: V2 ? ['--history', '100', '--admin-token', TOKEN] : [] });
  browser = await startBrowser();
  let alice, bob, carol, dan;
  try {
    if (V2) {
      // Earlier in the day: what the history brings to everyone who comes later.
      carol = await person(browser, server.url, 'Carol', { color: '30A46C' });
      dan = await person(browser, server.url, 'Dan', { color: '8E4EC6' });
      await say(carol, 'Release 2.4 is tagged, notes are in the wiki.');
      await say(dan, 'Thanks! I will roll it out after the stand-up.');
      await waitForLine(carol, 'Thanks! I will roll it out after the stand-up.');
      await publish('Maintenance tonight at 22:00 UTC: a short restart, the chat reconnects on its own.');
      await carol.locator('#log li.announce').first().waitFor();
      await closeAll(dan);
      dan = null;
    }
    alice = await person(browser, server.url, 'Alice', { color: '3E63DD', viewport: { width: 1280, height: 800 } });
    bob = await person(browser, server.url, 'Bob', { color: 'F76B15', viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, colorScheme: 'dark' });
    carol ??= await person(browser, server.url, 'Carol', { color: '30A46C' });
    await waitForUsers(alice, ['Alice', 'Bob', 'Carol']);
    if (V2) {
      for (const p of [alice, bob]) {
        await p.locator('#log li.earlier-divider').first().waitFor();
        await p.locator('#log li.announce').first().waitFor();
      }
    }
    const script = V2 ? [
      [alice, 'Morning! Did the deploy go out?'],
      [bob, 'Yes, ten minutes ago. The graphs look calm.'],
      [carol, 'Nice work, both of you.'],
      [alice, 'Lunch at 12:30 to celebrate?'],
    ] : [
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

    const desktop = path.join(OUT, 'screenshot.png');
    const phone = path.join(OUT, 'screenshot-phone.png');
    fs.mkdirSync(OUT, { recursive: true });
    await alice.screenshot({ path: desktop });
    await bob.screenshot({ path: phone });
    for (const f of [desktop, phone]) {
      assert.ok(fs.statSync(f).size > 10_000, `${f} looks empty`);
    }
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  } finally {
    await closeAll(alice, bob, carol, dan);
  }
});
