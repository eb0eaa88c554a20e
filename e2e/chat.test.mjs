// The chat page against a real wschat: talking, private messages, the people
// list, name collisions and hostile input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, startBrowser, person, openPage, say, waitForLine, chatTexts,
  waitForUsers, closeAll, sleep, exact, sentJson, TEST_TIMEOUT,
} from './helpers.mjs';

let server, browser;

before(async () => {
  server = await startServer();
  browser = await startBrowser();
}, { timeout: 40_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

test('two people join and chat both ways', { timeout: TEST_TIMEOUT }, async () => {
  const alice = await person(browser, server.url, 'Alice');
  const bob = await person(browser, server.url, 'Bob');
  try {
    // Alice sees Bob arrive.
    await alice.locator('#log li.sys', { hasText: 'Bob' }).first().waitFor();

    await say(alice, 'Hi Bob, how are you?');
    const onBob = await waitForLine(bob, 'Hi Bob, how are you?');
    const onAlice = await waitForLine(alice, 'Hi Bob, how are you?');
    assert.equal(await onBob.locator('.who').textContent(), 'Alice');
    assert.ok(!(await onBob.getAttribute('class')).includes('own'), 'a line from someone else is not marked as own');
    assert.ok((await onAlice.getAttribute('class')).includes('own'), 'own line is set apart');
    assert.match(await onBob.locator('time').textContent(), /^\d{2}:\d{2}$/);
    assert.equal(await alice.inputValue('#input'), '', 'the composer empties after sending');

    await say(bob, 'Fine, thanks!\nAnd you?');
    const reply = await waitForLine(alice, 'Fine, thanks!\nAnd you?');
    assert.equal(await reply.locator('.who').textContent(), 'Bob');
    await waitForLine(bob, 'Fine, thanks!\nAnd you?');

    // Web addresses become links; the text around them stays text.
    await say(alice, 'notes at http://127.0.0.1:9/notes.');
    const withLink = await waitForLine(bob, 'notes at http://127.0.0.1:9/notes.');
    assert.equal(await withLink.locator('a').count(), 1);
    assert.equal(await withLink.locator('a').getAttribute('href'), 'http://127.0.0.1:9/notes');
    assert.equal(await withLink.locator('a').textContent(), 'http://127.0.0.1:9/notes');

    // Everyone saw the same lines, in the same order.
    assert.deepEqual(await chatTexts(alice), await chatTexts(bob));
    assert.deepEqual(alice.dialogs, []);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  } finally {
    await closeAll(alice, bob);
  }
});

test('a private message reaches only its target', { timeout: TEST_TIMEOUT }, async () => {
  const ann = await person(browser, server.url, 'Ann');
  const ben = await person(browser, server.url, 'Ben');
  const cat = await person(browser, server.url, 'Cat');
  try {
    await waitForUsers(ann, ['Ann', 'Ben', 'Cat']);
    await ann.getByRole('button', { name: 'Send a private message to Ben' }).click();
    assert.ok(await ann.locator('#private-chip').isVisible(), 'the composer shows who the message goes to');
    await say(ann, 'psst, only for you');

    const atBen = await waitForLine(ben, 'psst, only for you');
    assert.match(await atBen.getAttribute('class'), /\bprivate\b/);
    assert.equal(await atBen.locator('.tag-private').textContent(), 'private to you');
    const atAnn = await waitForLine(ann, 'psst, only for you');
    assert.match(await atAnn.getAttribute('class'), /\bown\b.*\bprivate\b|\bprivate\b.*\bown\b/);
    assert.equal(await atAnn.locator('.tag-private').textContent(), 'private to Ben');

    // Ben answers privately too.
    await ben.getByRole('button', { name: 'Send a private message to Ann' }).click();
    await say(ben, 'got it');
    const answer = await waitForLine(ann, 'got it');
    assert.equal(await answer.locator('.tag-private').textContent(), 'private to you');

    // Back to everyone; the public line is a barrier: the server processes in
    // order, so once Cat has it, Cat would already have any earlier line.
    await ann.click('#private-cancel');
    assert.ok(await ann.locator('#private-chip').isHidden());
    await say(ann, 'hello everyone');
    const pub = await waitForLine(cat, 'hello everyone');
    assert.doesNotMatch(await pub.getAttribute('class'), /\bprivate\b/);
    const catSaw = await chatTexts(cat);
    assert.ok(!catSaw.includes('psst, only for you'), `Cat must not see the private line, saw ${JSON.stringify(catSaw)}`);
    assert.ok(!catSaw.includes('got it'));
    await waitForLine(ben, 'hello everyone');
  } finally {
    await closeAll(ann, ben, cat);
  }
});

test('the people list follows join, rename and leave', { timeout: TEST_TIMEOUT }, async () => {
  const dee = await person(browser, server.url, 'Dee');
  let eve;
  try {
    await waitForUsers(dee, ['Dee']);
    assert.equal(await dee.textContent('#user-count'), '1');

    eve = await person(browser, server.url, 'Eve');
    await waitForUsers(dee, ['Dee', 'Eve']);
    await waitForUsers(eve, ['Dee', 'Eve']);
    assert.equal(await dee.textContent('#user-count'), '2');

    // Eve renames herself through the page.
    await eve.click('#me-btn');
    await eve.waitForSelector('#join', { state: 'visible' });
    await eve.fill('#name', 'Evelyn');
    await eve.press('#name', 'Enter');
    await eve.waitForSelector('#join', { state: 'hidden' });
    await waitForUsers(dee, ['Dee', 'Evelyn']);
    await waitForUsers(eve, ['Dee', 'Evelyn']);
    await dee.locator('#log li.sys', { hasText: 'Evelyn' }).first().waitFor();
    assert.equal(await eve.textContent('#me-name'), 'Evelyn');
    // Messages now go out under the new name.
    await say(eve, 'new name, same me');
    const line = await waitForLine(dee, 'new name, same me');
    assert.equal(await line.locator('.who').textContent(), 'Evelyn');

    await eve.context().close();
    await waitForUsers(dee, ['Dee']);
    assert.equal(await dee.textContent('#user-count'), '1');
    await dee.locator('#log li.sys', { hasText: 'left' }).first().waitFor();
  } finally {
    await closeAll(dee, eve);
  }
});

test('a name collision is reported at the name field', { timeout: TEST_TIMEOUT }, async () => {
  const fay = await person(browser, server.url, 'Fay');
  const other = await openPage(browser, server.url);
  try {
    await other.fill('#name', 'fay');   // names compare case-insensitively
    await other.press('#name', 'Enter');
    const err = other.locator('#name-error');
    await err.waitFor({ state: 'visible' });
    assert.match(await err.textContent(), /already taken/);
    assert.equal(await other.getAttribute('#name', 'aria-invalid'), 'true');
    assert.ok(await other.locator('#join').isVisible(), 'the join form stays open');
    assert.ok(await other.locator('#input').isDisabled(), 'cannot write before joining');
    assert.deepEqual(other.dialogs, [], 'no alert()');
    // The error is announced and sits next to the field it is about.
    assert.equal(await err.getAttribute('role'), 'alert');
    assert.match(await other.getAttribute('#name', 'aria-describedby'), /name-error/);

    // Typing clears it; a free name works.
    await other.fill('#name', 'Fay Two');
    assert.ok(await err.isHidden());
    await other.press('#name', 'Enter');
    await other.waitForSelector('#join', { state: 'hidden' });
    await waitForUsers(fay, ['Fay', 'Fay Two']);
  } finally {
    await closeAll(fay, other);
  }
});

test('markup in names and messages is shown as text and never runs', { timeout: TEST_TIMEOUT }, async () => {
  const evil = '<img src=x onerror=alert(1)>';
  const mallory = await person(browser, server.url, evil);
  const gus = await person(browser, server.url, 'Gus');
  try {
    await waitForUsers(gus, [evil, 'Gus']);
    await say(mallory, evil);
    await say(mallory, '<script>alert(2)</script><b>bold?</b>');
    await say(mallory, 'javascript:alert(3) <a href="javascript:alert(4)">x</a>');
    const line = await waitForLine(gus, evil);
    assert.equal(await line.locator('.who').textContent(), evil);
    await waitForLine(gus, '<script>alert(2)</script><b>bold?</b>');
    const jsLine = await waitForLine(gus, 'javascript:alert(3) <a href="javascript:alert(4)">x</a>');
    assert.equal(await jsLine.locator('a').count(), 0, 'only http(s) addresses become links');
    await waitForLine(mallory, evil);
    // Gus opens a private conversation with the odd name, which must work too.
    await gus.getByRole('button', { name: 'Send a private message to ' + evil }).click();
    assert.equal(await gus.textContent('#private-name'), evil);
    await sleep(500);   // give any injected handler time to fire
    for (const p of [mallory, gus]) {
      assert.equal(await p.locator('#log img, #users img, #log script, #log b').count(), 0, 'no element made from user text');
      assert.deepEqual(p.dialogs, [], 'no dialog opened');
      assert.deepEqual(p.errors, []);
    }
    // Mallory's own join line shows the name as typed.
    const joinedLine = mallory.locator('#log li.sys > span', { hasText: exact(evil + ' joined') });
    await joinedLine.first().waitFor();
  } finally {
    await closeAll(mallory, gus);
  }
});

test('a reader scrolled up stays put and gets a "new messages" marker', { timeout: TEST_TIMEOUT }, async () => {
  const kim = await person(browser, server.url, 'Kim');
  const lee = await person(browser, server.url, 'Lee', { viewport: { width: 800, height: 420 } });
  try {
    for (let i = 1; i <= 12; i++) {
      await say(kim, `line ${i} ${'of a long conversation'.repeat(3)}`);
      await sleep(60);
    }
    await waitForLine(lee, `line 12 ${'of a long conversation'.repeat(3)}`);
    const atBottom = () => lee.$eval('#log', (l) => l.scrollHeight - l.scrollTop - l.clientHeight < 48);
    assert.ok(await atBottom(), 'follows the conversation while at the bottom');
    assert.ok(await lee.locator('#new-marker').isHidden());

    await lee.$eval('#log', (l) => { l.scrollTop = 0; });
    await sleep(100);
    await say(kim, 'are you still reading?');
    await waitForLine(lee, 'are you still reading?');
    assert.equal(await lee.$eval('#log', (l) => l.scrollTop), 0, 'the reader is not yanked down');
    const marker = lee.locator('#new-marker');
    await marker.waitFor({ state: 'visible' });
    assert.match(await marker.textContent(), /1 new message/);
    assert.equal(await lee.locator('#log li.divider').count(), 1);

    await marker.click();
    await lee.waitForFunction(() => { const l = document.getElementById('log'); return l.scrollHeight - l.scrollTop - l.clientHeight < 48; });
    await marker.waitFor({ state: 'hidden' });
  } finally {
    await closeAll(kim, lee);
  }
});

test('the people list is kept from events alone: no {"type":"users"} request, ever', { timeout: TEST_TIMEOUT }, async () => {
  // Asking for the whole list after every join made one join cost
  // (people online)^2 list entries in server output.
  const pat = await person(browser, server.url, 'Pat', { color: '0090FF' });
  let quin, rosa, sam;
  try {
    quin = await person(browser, server.url, 'Quin', { color: 'E5484D' });
    rosa = await person(browser, server.url, 'Rosa', { color: '30A46C' });
    await waitForUsers(pat, ['Pat', 'Quin', 'Rosa']);

    // A rename and a leave, seen by everyone from the events.
    await rosa.click('#me-btn');
    await rosa.fill('#name', 'Rosalind');
    await rosa.press('#name', 'Enter');
    await rosa.waitForSelector('#join', { state: 'hidden' });
    await quin.context().close();
    quin = null;
    for (const p of [pat, rosa]) await waitForUsers(p, ['Pat', 'Rosalind']);
    assert.equal(await rosa.textContent('#me-name'), 'Rosalind');

    // A newcomer gets the list from the snapshot, colours included.
    sam = await person(browser, server.url, 'Sam', { color: 'D6409F' });
    await waitForUsers(sam, ['Pat', 'Rosalind', 'Sam']);
    const colourIn = (p, name) => p.locator('#users li', { has: p.locator('.uname', { hasText: exact(name) }) })
      .locator('.avatar').evaluate((e) => e.style.getPropertyValue('--c').trim());
    assert.equal(await colourIn(sam, 'Pat'), '#0090FF');
    assert.equal(await colourIn(sam, 'Rosalind'), '#30A46C');
    // A line carries its sender's colour, which the list picks up.
    await say(sam, 'hi all');
    await waitForLine(pat, 'hi all');
    assert.equal(await colourIn(pat, 'Sam'), '#D6409F');

    await sleep(2000);   // longer than the old page waited before asking for the list
    for (const p of [pat, rosa, sam]) {
      const asked = sentJson(p).filter((m) => m && m.type === 'users');
      assert.deepEqual(asked, [], `${p.personName} never asks for the list`);
    }
    // What Pat sent: its join, and nothing else.
    assert.deepEqual(sentJson(pat), [{ type: 'join', name: 'Pat', color: '0090FF' }]);
    assert.deepEqual([...pat.errors, ...rosa.errors, ...sam.errors], []);
  } finally {
    await closeAll(pat, quin, rosa, sam);
  }
});
