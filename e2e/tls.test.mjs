// The unchanged page over https and wss: a wschat started with a self-signed
// certificate (made by openssl for this run), two people chatting in
// Chromium, which accepts that certificate only in the contexts that ask to.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  REPO, startServer, startBrowser, person, say, waitForLine, waitForUsers, closeAll,
  selfSignedCert, TEST_TIMEOUT,
} from './helpers.mjs';

const OUT = path.join(REPO, 'target', 'screenshots');

let server, browser, cert;

before(async () => {
  cert = selfSignedCert();
  server = await startServer({ tls: cert });
  browser = await startBrowser();
}, { timeout: 40_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  if (cert) fs.rmSync(cert.dir, { recursive: true, force: true });
}, { timeout: 20_000 });

test('the server speaks https with the test certificate, which Chromium does not trust by itself', { timeout: TEST_TIMEOUT }, async () => {
  assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await assert.rejects(page.goto(server.url, { timeout: 10_000 }), /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    await context.close();
  }
});

test('two people chat over https and wss', { timeout: TEST_TIMEOUT }, async () => {
  // The page's own response, kept to read the certificate it came with.
  const pageResponses = [];
  const opts = {
    ignoreHTTPSErrors: true,
    setup: (context) => context.on('response', (r) => { if (r.url() === server.url) pageResponses.push(r); }),
  };
  let alice, bob;
  try {
    alice = await person(browser, server.url, 'Alice', { ...opts, color: '3E63DD' });
    bob = await person(browser, server.url, 'Bob', { ...opts, color: 'F76B15' });

    // The pages and their sockets went over TLS, to this server, with this certificate.
    assert.equal(pageResponses.length, 2);
    for (const r of pageResponses) {
      assert.equal(r.status(), 200);
      const tls = await r.securityDetails();
      assert.equal(tls?.subjectName, 'localhost', 'the page came with the test certificate');
      assert.match(tls?.protocol ?? '', /^TLS 1\.[23]$/);
    }
    const wss = `wss://127.0.0.1:${server.port}/`;
    for (const p of [alice, bob]) {
      assert.equal(await p.evaluate(() => location.protocol), 'https:');
      assert.deepEqual(p.sockets.map((s) => s.url), [wss], `${p.personName}'s page opened one socket, to ${wss}`);
      assert.equal(await p.getAttribute('body', 'data-conn'), 'open');
      assert.equal(await p.textContent('#conn-text'), 'Connected');
    }

    for (const p of [alice, bob]) await waitForUsers(p, ['Alice', 'Bob']);

    await say(alice, 'Hello Bob, this is encrypted.');
    const atBob = await waitForLine(bob, 'Hello Bob, this is encrypted.');
    assert.equal(await atBob.locator('.who').textContent(), 'Alice');
    await say(bob, 'Hi Alice, so is this!');
    const atAlice = await waitForLine(alice, 'Hi Alice, so is this!');
    assert.equal(await atAlice.locator('.who').textContent(), 'Bob');
    await waitForLine(alice, 'Hello Bob, this is encrypted.');
    await waitForLine(bob, 'Hi Alice, so is this!');

    // Every socket either page opened was a wss one, and the frames crossed it.
    for (const p of [alice, bob]) {
      assert.ok(p.sockets.length > 0);
      for (const s of p.sockets) assert.ok(s.url.startsWith('wss://'), `socket URL ${s.url} is wss://`);
      assert.ok(p.sockets.some((s) => s.received.length > 0), `${p.personName} received frames over wss`);
      assert.equal(await p.textContent('#conn-text'), 'Connected');
      assert.deepEqual(p.dialogs, []);
      assert.deepEqual(p.errors, []);
    }

    fs.mkdirSync(OUT, { recursive: true });
    await alice.screenshot({ path: path.join(OUT, 'tls-chat.png') });
    assert.ok(fs.statSync(path.join(OUT, 'tls-chat.png')).size > 1000);
  } finally {
    await closeAll(alice, bob);
  }
});
