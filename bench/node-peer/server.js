#!/usr/bin/env node
// A reference peer for the wschat benchmarks: the chat protocol subset that
// `wschat-bench` exercises, on Node's `ws` (pinned in package-lock.json).
//
//   node server.js [PORT] [--host ADDR] [--echo] [--max-output-bytes N]
//
// Speaks (see shared PROTOCOL.md sections 3-6):
// - right after the handshake: one `users` message with the named users;
// - `{"type":"join","name":...}`: claim a name, `system` join (or rename)
//   to everyone; `name_taken` / `invalid_name` errors;
// - `{"type":"users"}`: the user list;
// - a chat message (no `type`): optional name claim, then a `usermsg`
//   broadcast to every open connection, the sender included (`toname` makes
//   it private to that user plus a copy to the sender);
// - a named connection closing: `system` leave;
// - `/echo` (with `--echo`): every message sent back with the same opcode.
//
// Like wschat, it serialises each broadcast once, and drops a client whose
// pending output passes --max-output-bytes (default 1 MiB, wschat's default),
// so neither server can win by buffering without bound. No rate limit (the
// benchmarks run wschat with --rate-limit 0). With port 0 it prints
// `listening on http://HOST:PORT/` once bound, as wschat does.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

function parseArgs(argv) {
  const opts = { port: 9000, host: '127.0.0.1', echo: false, maxOutput: 1 << 20 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--host') opts.host = argv[++i];
    else if (a === '--echo') opts.echo = true;
    else if (a === '--max-output-bytes') opts.maxOutput = Number(argv[++i]);
    else if (a === '--rate-limit') i++; // accepted for command-line parity; always off
    else if (/^\d+$/.test(a)) opts.port = Number(a);
    else {
      process.stderr.write(`node-peer: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// name (lower-cased) -> client; client state lives on the socket object.
const byName = new Map();
const clients = new Set();
let colorSeq = 0;

function randomColor() {
  colorSeq = (colorSeq * 1103515245 + 12345 + Date.now()) >>> 0;
  return (colorSeq & 0xffffff).toString(16).toUpperCase().padStart(6, '0');
}

function sendTo(ws, buf) {
  if (ws.readyState !== 1) return;
  if (ws.bufferedAmount > opts.maxOutput) {
    ws.close(1008, 'slow consumer');
    setTimeout(() => ws.terminate(), 1000).unref();
    return;
  }
  ws.send(buf, { binary: false });
}

function broadcast(obj) {
  const buf = Buffer.from(JSON.stringify(obj)); // serialised once for everyone
  for (const c of clients) sendTo(c, buf);
}

function sendJson(ws, obj) {
  sendTo(ws, Buffer.from(JSON.stringify(obj)));
}

function sendError(ws, code, message) {
  sendJson(ws, { type: 'error', code, message });
}

function usersMessage() {
  const users = [];
  for (const c of clients) if (c.chat.name !== null) users.push({ name: c.chat.name, color: c.chat.color });
  return { type: 'users', users };
}

// Validates a claimed name; returns an error code or null.
function checkName(ws, raw) {
  const name = raw.trim();
  const chars = [...name];
  if (chars.length < 1 || chars.length > 32 || /[\u0000-\u001f\u007f-\u009f]/.test(name)) return ['invalid_name', name];
  const holder = byName.get(name.toLowerCase());
  if (holder !== undefined && holder !== ws) return ['name_taken', name];
  return [null, name];
}

// Applies a validated name claim, sending join/rename first.
function claimName(ws, name) {
  const st = ws.chat;
  if (st.name === name) return;
  if (st.name === null) {
    st.name = name;
    byName.set(name.toLowerCase(), ws);
    broadcast({ type: 'system', event: 'join', name, message: `${name} joined` });
  } else {
    const from = st.name;
    byName.delete(from.toLowerCase());
    st.name = name;
    byName.set(name.toLowerCase(), ws);
    broadcast({ type: 'system', event: 'rename', name, from, message: `${from} is now ${name}` });
  }
}

function onChatMessage(ws, text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (_) {
    return sendError(ws, 'bad_json', 'not a JSON object');
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return sendError(ws, 'bad_json', 'not a JSON object');
  const type = msg.type === undefined ? 'message' : msg.type;
  if (type === 'users') return sendJson(ws, usersMessage());
  if (type !== 'join' && type !== 'message') return sendError(ws, 'bad_request', 'unknown type');
  if ('name' in msg && typeof msg.name !== 'string') return sendError(ws, 'bad_request', 'name must be a string');
  if (type === 'join' && typeof msg.name !== 'string') return sendError(ws, 'bad_request', 'name required');
  if (type === 'message' && typeof msg.message !== 'string') return sendError(ws, 'bad_request', 'message required');
  let name = null;
  if (typeof msg.name === 'string') {
    const [err, n] = checkName(ws, msg.name);
    if (err === 'invalid_name') return sendError(ws, err, 'invalid name');
    if (err === 'name_taken') return sendError(ws, err, `the name ${n} is in use`);
    name = n;
  }
  if (typeof msg.color === 'string' && /^#?[0-9a-fA-F]{6}$/.test(msg.color)) {
    ws.chat.color = msg.color.replace('#', '').toUpperCase();
  }
  if (type === 'join') return claimName(ws, name);
  if (name === null && ws.chat.name === null) return sendError(ws, 'not_joined', 'join first');
  const text2 = msg.message.trim();
  if (text2.length === 0) return sendError(ws, 'bad_request', 'empty message');
  let target = null;
  if (typeof msg.toname === 'string' && msg.toname.trim() !== '') {
    target = byName.get(msg.toname.trim().toLowerCase());
    if (target === undefined) return sendError(ws, 'unknown_user', 'no such user');
  }
  if (name !== null) claimName(ws, name);
  const out = { type: 'usermsg', name: ws.chat.name, message: text2, color: ws.chat.color, ts: Date.now() };
  if (target === null) return broadcast(out);
  out.toname = target.chat.name;
  out.private = true;
  const buf = Buffer.from(JSON.stringify(out));
  sendTo(target, buf);
  if (target !== ws) sendTo(ws, buf);
}

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (path === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404, { 'Content-Type': 'text/plain', Connection: 'close' });
  res.end('not found\n');
});
// Like wschat: no idle HTTP keep-alive games, many connections welcome.
server.maxConnections = 100000;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 65536, clientTracking: false });

server.on('upgrade', (req, socket, head) => {
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => {
    const path = (req.url || '/').split('?')[0];
    if (opts.echo && path === '/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      return;
    }
    ws.chat = { name: null, color: randomColor() };
    clients.add(ws);
    sendJson(ws, usersMessage());
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        ws.close(1003, 'binary data not accepted');
        return;
      }
      onChatMessage(ws, data.toString('utf8'));
    });
    ws.on('close', () => {
      clients.delete(ws);
      const name = ws.chat.name;
      if (name !== null) {
        byName.delete(name.toLowerCase());
        ws.chat.name = null;
        broadcast({ type: 'system', event: 'leave', name, message: `${name} left` });
      }
    });
    ws.on('error', () => {});
  });
});

server.listen(opts.port, opts.host, () => {
  const addr = server.address();
  process.stdout.write(`listening on http://${opts.host}:${addr.port}/\n`);
});
server.on('error', (e) => {
  process.stderr.write(`node-peer: cannot listen on ${opts.host}:${opts.port}: ${e.message}\n`);
  process.exit(1);
});

function shutdown() {
  for (const c of clients) c.close(1001, 'going away');
  server.close();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
