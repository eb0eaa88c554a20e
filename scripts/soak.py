#!/usr/bin/env python3
"""Soak test: a real wschat server on 127.0.0.1 driven by well- and
badly-behaved clients for a bounded time (Python 3.11 standard library only).

    scripts/soak.py --binary target/release/wschat [--seconds 60] [--tls]

With --tls every client speaks wss/https to a server started with a
certificate made by `openssl` for the run (client half-closes are left out:
TLS has none); everything else, and every check, is the same.

Normally started by scripts/soak.sh, which builds the binary first. The
server runs with small limits so that the unhappy paths happen often:
--max-output-bytes 65536, --max-message-bytes 16384, --handshake-timeout 3,
--idle-timeout 4, --close-timeout 2 (rate limit: the default 10/s).

Client kinds, each a fixed number of concurrent loops until the time is up:
- chatters: join, send numbered broadcasts (~4/s, 100-1800 characters with
  a checksum) and `users` requests; every chatter must receive every other
  chatter's lines (and its own) complete, in order, with no gap, and no
  error or close;
- churners: join, say something, leave with a clean close handshake (1000);
- violators: one protocol violation each (unmasked frame, reserved bits or
  opcode, bad UTF-8, oversized frame, binary on chat, bad close code, ...);
  the server must answer with the right close code;
- garbage heads: malformed or unwanted HTTP heads; the right status
  (400/404/405/426/431), or a silent close for a head that never ends;
- abrupt disconnects: vanish mid-head, mid-frame or with a reset;
- stalled readers: join, never read (tiny receive buffer, reading paused),
  first filling the kernel's send buffer with pongs they never read; the
  server must drop them as slow consumers (1008); in runs of 180 s or more
  also plain ones, which need ~4 MiB of chat to pile up;
- flooders: over the rate limit; `rate_limited` errors, then close 1008;
  mild ones get errors but stay connected;
- silent clients: never answer the keepalive ping; dropped after it.
A health checker fetches /healthz every second, and a sampler reads the
server's open descriptors and VmRSS from /proc.

At the end: the server must be alive, everything above as expected, no
connection left open, the descriptors back to their baseline (slack: 2)
and VmRSS back near its baseline (slack: 4 MiB, see docs/hardening.md),
the server's close-frame counts equal to what the clients received (plus
the slow-consumer drops), and SIGTERM must end the server with status 0.
Prints figures and a final `N passed, N failed` line; exits 1 on any
failure.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import struct
import ssl
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter

HOST = "127.0.0.1"
MAX_OUTPUT = 65536
MAX_MESSAGE = 16384
IDLE = 4
HANDSHAKE_TIMEOUT = 3
CLOSE_TIMEOUT = 2
FD_SLACK = 2
RSS_SLACK_KB = 4 * 1024

CHATTERS = 8
# With --tls: the clients' context (the run's own certificate, loopback only).
TLS = None
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Stats:
    def __init__(self):
        self.counts = Counter()
        self.failures = Counter()
        self.examples = {}

    def ok(self, what, n=1):
        self.counts[what] += n

    def fail(self, what, detail):
        self.failures[what] += 1
        self.examples.setdefault(what, [])
        if len(self.examples[what]) < 3:
            self.examples[what].append(detail)


STATS = Stats()
# Close frames the clients received from the server, by code.
CLOSES_SEEN = Counter()


class Closed(Exception):
    pass


def apply_mask(payload, key):
    """XOR with the repeated 4-byte key, as one big-integer operation."""
    n = len(payload)
    if n == 0:
        return payload
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class Conn:
    """A minimal RFC 6455 client over asyncio streams."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self.pings = 0
        self.answer_pings = True

    @classmethod
    async def open(cls, port, rcvbuf=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(
            sock=sock, limit=1 << 20, ssl=TLS, server_hostname="localhost" if TLS else None
        )
        return cls(reader, writer)

    def port(self):
        return self.w.get_extra_info("sockname")[1]

    async def handshake(self, port, path="/daemon.php"):
        key = base64.b64encode(os.urandom(16))
        self.w.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
            + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await self.r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise Closed("handshake refused: %r" % head[:40])
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if b"Sec-WebSocket-Accept: " + accept not in head:
            raise Closed("bad Sec-WebSocket-Accept")

    def send(self, opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        bit = 0x80 if mask else 0
        if n < 126:
            head += bytes([bit | n])
        elif n < 65536:
            head += bytes([bit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([bit | 127]) + struct.pack(">Q", n)
        if mask:
            key = os.urandom(4)
            head += key
            payload = apply_mask(payload, key)
        self.w.write(head + payload)

    def send_json(self, obj):
        self.send(1, json.dumps(obj).encode())

    def send_close(self, code=1000, reason=b""):
        self.send(8, struct.pack(">H", code) + reason if code is not None else b"")

    async def frame(self):
        """(fin, opcode, payload) of the next server frame."""
        try:
            b0, b1 = await self.r.readexactly(2)
            if b1 & 0x80:
                raise Closed("server frame is masked")
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", await self.r.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", await self.r.readexactly(8))
            payload = await self.r.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise Closed("eof") from e
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def next(self):
        """The next text message as JSON, or ('close', code) / ('eof',)."""
        while True:
            try:
                fin, opcode, payload = await self.frame()
            except Closed as e:
                if str(e) == "eof":
                    return ("eof",)
                raise
            if opcode == 9:
                self.pings += 1
                if self.answer_pings:
                    self.send(10, payload)
                continue
            if opcode == 10:
                continue
            if opcode == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                CLOSES_SEEN[code] += 1
                return ("close", code)
            if opcode != 1 or not fin:
                raise Closed("unexpected frame opcode %d fin %s" % (opcode, fin))
            return ("text", json.loads(payload))

    async def expect_close(self, code, timeout=5.0):
        """Skips text until a close frame; checks its code; replies; expects EOF."""
        async with asyncio.timeout(timeout):
            while True:
                got = await self.next()
                if got[0] == "text":
                    continue
                if got[0] == "eof":
                    return "eof before close %s" % code
                if got[1] != code:
                    return "close %s instead of %s" % (got[1], code)
                self.send_close(code if code != 1005 else None)
                if (await self.next()) != ("eof",):
                    return "no EOF after close reply"
                return None

    async def close_cleanly(self):
        """Client-initiated close: expects the 1000 echo and EOF."""
        self.send_close(1000)
        async with asyncio.timeout(5):
            while True:
                got = await self.next()
                if got[0] == "text":
                    continue
                if got != ("close", 1000):
                    return "closing got %r" % (got,)
                if (await self.next()) != ("eof",):
                    return "no EOF after close"
                return None

    def abort(self):
        sock = self.w.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.w.transport.abort()

    def drop(self):
        self.w.transport.abort()


async def http(port, raw, timeout=6.0, half_close=True):
    """Sends raw bytes (then EOF), returns everything the server sends until
    its EOF."""
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=TLS, server_hostname="localhost" if TLS else None
    )
    try:
        writer.write(raw)
        if half_close and TLS is None:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.transport.abort()


# ----- chatters ----------------------------------------------------------------


class Chat:
    def __init__(self):
        self.joined = 0
        self.all_joined = asyncio.Event()
        self.done = {}  # sender -> messages sent
        self.sent = Counter()
        self.received = Counter()


def make_line(i, seq):
    pad_len = random.randint(100, 1800)
    pad = "".join(random.choice("abcdefghijklmnop qrstuvwxyz\u00e9\u20ac\U0001F600") for _ in range(pad_len))
    pad += "."  # the server trims surrounding whitespace
    return "%d:%d:%d:%s" % (i, seq, zlib.crc32(pad.encode()), pad)


async def chatter(port, i, chat, stop_at):
    name = "chatter%d" % i
    conn = await Conn.open(port)
    try:
        await conn.handshake(port)
        first = await conn.next()
        if first[0] != "text" or first[1].get("type") != "users":
            STATS.fail("chatter", "%s: first message %r" % (name, first))
        conn.send_json({"type": "join", "name": name, "color": "%06X" % (i * 0x1F3F1F)})
        while True:
            got = await conn.next()
            if got[0] != "text":
                raise Closed("%s: %r while joining" % (name, got))
            m = got[1]
            if m.get("type") == "system" and m.get("event") == "join" and m.get("name") == name:
                break
        chat.joined += 1
        if chat.joined == CHATTERS:
            chat.all_joined.set()
        await chat.all_joined.wait()

        expected = [0] * CHATTERS
        finished = set()
        problems = []

        async def read():
            while len(finished) < CHATTERS:
                got = await conn.next()
                if got[0] != "text":
                    problems.append("%s got %r" % (name, got))
                    return
                m = got[1]
                kind = m.get("type")
                if kind == "error":
                    problems.append("%s got error %r" % (name, m))
                elif kind == "users":
                    names = {u["name"] for u in m["users"]}
                    missing = [n for n in ("chatter%d" % k for k in range(CHATTERS)) if n not in names]
                    if missing:
                        problems.append("%s: users list lacks %s" % (name, missing))
                elif kind == "usermsg" and m["name"].startswith("chatter"):
                    sender = int(m["name"][7:])
                    parts = m["message"].split(":", 3)
                    if parts[1] == "done":
                        if int(parts[2]) != expected[sender]:
                            problems.append(
                                "%s: %s sent %s lines, %d received" % (name, m["name"], parts[2], expected[sender])
                            )
                        finished.add(sender)
                        continue
                    seq, crc, pad = int(parts[1]), int(parts[2]), parts[3]
                    if seq != expected[sender]:
                        problems.append("%s: from %s line %d, expected %d" % (name, m["name"], seq, expected[sender]))
                        expected[sender] = seq
                    if zlib.crc32(pad.encode()) != crc:
                        problems.append("%s: line %d from %s corrupted" % (name, seq, m["name"]))
                    expected[sender] += 1
                    chat.received[name] += 1

        reader = asyncio.create_task(read())
        seq = 0
        next_users = time.monotonic() + 3
        while time.monotonic() < stop_at and not reader.done():
            conn.send_json({"message": make_line(i, seq)})
            seq += 1
            if time.monotonic() > next_users and time.monotonic() < stop_at - 2:
                conn.send_json({"type": "users"})
                next_users = time.monotonic() + 3
            await conn.w.drain()
            await asyncio.sleep(random.uniform(0.15, 0.35))
        conn.send_json({"message": "%d:done:%d" % (i, seq)})
        chat.sent[name] = seq
        try:
            async with asyncio.timeout(20):
                await reader
        except TimeoutError:
            problems.append("%s: done markers missing from %s" % (name, sorted(set(range(CHATTERS)) - finished)))
            reader.cancel()
        for p in problems:
            STATS.fail("chatter order/completeness", p)
        if not problems:
            STATS.ok("chatter complete and in order")
        err = await conn.close_cleanly()
        if err:
            STATS.fail("chatter close", "%s: %s" % (name, err))
    finally:
        conn.drop()


# ----- the other kinds ------------------------------------------------------------


async def churner(port, k, n):
    conn = await Conn.open(port)
    try:
        await conn.handshake(port, random.choice(["/", "/daemon.php", "/demo/shout.php?x=1"]))
        name = "churn%d-%d" % (k, n)
        conn.send_json({"name": name, "message": "hello from %s" % name, "color": "#00ff00"})
        conn.send_json({"type": "users"})
        seen = False
        async with asyncio.timeout(5):
            while not seen:
                got = await conn.next()
                if got[0] != "text":
                    raise Closed("churner got %r" % (got,))
                m = got[1]
                if m.get("type") == "error":
                    STATS.fail("churner", "%s: %r" % (name, m))
                seen = m.get("type") == "usermsg" and m.get("name") == name
        err = await conn.close_cleanly()
        if err:
            STATS.fail("churner", err)
        else:
            STATS.ok("churner clean close")
    finally:
        conn.drop()


def violations():
    big = MAX_MESSAGE + 1
    return [
        ("unmasked frame", 1002, lambda c: c.send(1, b'{"type":"users"}', mask=False)),
        ("reserved bit", 1002, lambda c: c.send(1, b"x", rsv=0x40)),
        ("reserved opcode", 1002, lambda c: c.send(3, b"x")),
        ("control frame over 125", 1002, lambda c: c.send(9, b"p" * 126)),
        ("fragmented ping", 1002, lambda c: c.send(9, b"p", fin=False)),
        ("continuation first", 1002, lambda c: c.send(0, b"x")),
        ("text inside fragmented", 1002, lambda c: (c.send(1, b"a", fin=False), c.send(1, b"b"))),
        ("close of 1 byte", 1002, lambda c: c.send(8, b"\x03")),
        ("close code 1005", 1002, lambda c: c.send_close(1005)),
        ("close code 999", 1002, lambda c: c.send_close(999)),
        ("64-bit length top bit", 1002, lambda c: c.w.write(b"\x82\xff\x80" + b"\0" * 7 + b"\0\0\0\0")),
        ("bad UTF-8", 1007, lambda c: c.send(1, b'{"message":"\xff"}')),
        ("surrogate UTF-8", 1007, lambda c: c.send(1, b"\xed\xa0\x80")),
        ("bad UTF-8 across fragments", 1007, lambda c: (c.send(1, b"ok \xce", fin=False), c.send(0, b"\x28"))),
        ("close reason not UTF-8", 1007, lambda c: c.send_close(1000, b"\xc3")),
        ("binary on chat", 1003, lambda c: c.send(2, b"\x00\x01")),
        ("oversized frame header", 1009, lambda c: c.send(1, b"", length=big)),
        ("oversized fragments", 1009, lambda c: (c.send(1, b"a" * 9000, fin=False), c.send(0, b"b" * 9000))),
    ]


async def violator(port, k, n):
    what, code, act = random.choice(violations())
    conn = await Conn.open(port)
    try:
        await conn.handshake(port)
        if random.random() < 0.5:
            conn.send_json({"type": "join", "name": "bad%d-%d" % (k, n)})
        act(conn)
        err = await conn.expect_close(code)
        if err:
            STATS.fail("violation answered", "%s: %s" % (what, err))
        else:
            STATS.ok("violation closed with %d" % code)
    finally:
        conn.drop()


def garbage_heads():
    junk = bytes(random.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(random.randint(1, 300)))
    hs = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    return [
        ("junk", junk + b"\r\n\r\n", b"400"),
        ("no colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"400"),
        ("POST", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"405"),
        ("version 8", b"GET / HTTP/1.1\r\nHost: x\r\n" + hs + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", b"426"),
        ("bad key", b"GET / HTTP/1.1\r\nHost: x\r\n" + hs + b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", b"400"),
        ("HTTP/1.0 upgrade", b"GET / HTTP/1.0\r\nHost: x\r\n" + hs + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", b"400"),
        ("head over 8 KiB", b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, b"431"),
        ("TLS hello", bytes.fromhex("160301020001") + os.urandom(200) + b"\r\n\r\n", b"400"),
        ("unknown path", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        ("healthz", b"GET /healthz?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        ("HEAD", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
    ]


async def garbage(port, k, n):
    if n % 10 == 9:
        # A head that never ends: closed at the handshake timeout, no response.
        t0 = time.monotonic()
        got = await http(port, b"GET / HTTP/1.1\r\nHost: x\r\n", HANDSHAKE_TIMEOUT + 5, False)
        took = time.monotonic() - t0
        if got or not HANDSHAKE_TIMEOUT - 0.3 <= took <= HANDSHAKE_TIMEOUT + 3:
            STATS.fail("garbage head answered", "unfinished head: %r after %.1fs" % (got[:20], took))
        else:
            STATS.ok("unfinished head dropped at timeout")
        return
    what, raw, status = random.choice(garbage_heads())
    got = await http(port, raw)
    if not got.startswith(b"HTTP/1.1 " + status + b" "):
        STATS.fail("garbage head answered", "%s: %r, expected %s" % (what, got[:40], status.decode()))
    else:
        STATS.ok("garbage head %s" % status.decode())


async def abrupt(port, k, n):
    kind = n % 5
    conn = await Conn.open(port)
    try:
        if kind == 0:
            conn.abort()  # right after connect, with a reset
        elif kind == 1:
            conn.w.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
            await conn.w.drain()
            await asyncio.sleep(0.05)
            conn.abort()
        else:
            await conn.handshake(port)
            conn.send_json({"type": "join", "name": "abrupt%d-%d" % (k, n)})
            if kind == 2:
                conn.w.write(b"\x81\xfe\x01\x00\x00\x00\x00\x00half a frame")  # then vanish
            elif kind == 3:
                conn.send_json({"message": "bye"})
            await conn.w.drain()
            await asyncio.sleep(random.uniform(0, 0.2))
            if kind == 4:
                conn.w.close()  # FIN without a close frame
            else:
                conn.abort()
        STATS.ok("abrupt disconnect")
    finally:
        conn.drop()


async def stalled(port, k, n, stall, pings):
    """Joins, then never reads (tiny receive buffer, reading paused).

    The server's kernel send buffer grows to tcp_wmem's maximum (4 MiB on
    a stock Linux) before the server's own output starts to pile up, so a
    plain stalled reader needs minutes of chat to be dropped. With `pings`
    the reader first sends pings it never reads the pongs of, which fills
    that kernel buffer within a second; the chatters' broadcasts then take
    the pending output over --max-output-bytes.
    """
    conn = await Conn.open(port, rcvbuf=4096)
    try:
        await conn.handshake(port)
        conn.send_json({"type": "join", "name": "stalled%d-%d" % (k, n)})
        conn.w.transport.pause_reading()
        end = time.monotonic() + stall
        if pings:
            sent = 0
            try:
                ping = bytes([0x89, 0x80 | 120]) + b"\0\0\0\0" + b"p" * 120
                while sent < 50000 and time.monotonic() < end:
                    conn.w.write(ping * 500)
                    sent += 500
                    async with asyncio.timeout(1):
                        await conn.w.drain()
            except TimeoutError:
                pass  # the server stopped reading us: backpressure
        # Keep sending (unsolicited pongs, while the server still reads) so
        # that the keepalive is not what ends the connection.
        while time.monotonic() < end:
            conn.send(10, b"")
            await asyncio.sleep(1)
        conn.w.transport.resume_reading()
        last = None
        try:
            async with asyncio.timeout(15):
                while True:
                    fin, opcode, payload = await conn.frame()
                    if opcode == 8:
                        last = struct.unpack(">H", payload[:2])[0]
        except Closed:
            pass  # EOF or reset: dropped, as it should be
        except TimeoutError:
            STATS.fail("stalled reader dropped", "still open after %ss stalled + 15s reading" % stall)
            return
        STATS.ok("stalled reader dropped (%s)" % ("pinging" if pings else "plain"))
        if last == 1008:
            STATS.ok("stalled reader saw close 1008")
        elif last is not None:
            STATS.fail("stalled reader dropped", "close %s instead of 1008" % last)
    finally:
        conn.drop()


async def flooder(port, k, n):
    conn = await Conn.open(port)
    hard = n % 2 == 0
    try:
        await conn.handshake(port)
        conn.send_json({"type": "join", "name": "flood%d-%d" % (k, n)})
        count = 150 if hard else 30
        for j in range(count):
            conn.send_json({"message": "flood %d" % j})
        await conn.w.drain()
        errors = 0
        closed = None
        try:
            async with asyncio.timeout(3 if hard else 1.5):
                while True:
                    got = await conn.next()
                    if got[0] == "text" and got[1].get("type") == "error":
                        if got[1].get("code") != "rate_limited":
                            STATS.fail("flood", "error %r" % got[1])
                        errors += 1
                    elif got[0] != "text":
                        closed = got
                        break
        except TimeoutError:
            pass
        if hard:
            if errors < 100 or closed != ("close", 1008):
                STATS.fail("flood closed with 1008", "%d errors, then %r" % (errors, closed))
            else:
                conn.send_close(1008)
                STATS.ok("flooder closed with 1008")
        else:
            if errors < 5 or closed is not None:
                STATS.fail("mild flood tolerated", "%d errors, then %r" % (errors, closed))
            else:
                STATS.ok("mild flooder rate limited, kept")
                err = await conn.close_cleanly()
                if err:
                    STATS.fail("mild flood tolerated", err)
    finally:
        conn.drop()


async def silent(port, k, n):
    t0 = time.monotonic()  # the server's idle clock starts after this
    conn = await Conn.open(port)
    conn.answer_pings = False
    try:
        await conn.handshake(port)
        async with asyncio.timeout(2 * IDLE + 5):
            while (await conn.next())[0] == "text":
                pass
        took = time.monotonic() - t0
        if conn.pings < 1 or not 2 * IDLE - 0.3 <= took <= 2 * IDLE + 3:
            STATS.fail("silent client dropped", "%d pings, dropped after %.1fs" % (conn.pings, took))
        else:
            STATS.ok("silent client pinged and dropped")
    finally:
        conn.drop()


# ----- the server ------------------------------------------------------------------


def proc_figures(pid):
    fds = len(os.listdir("/proc/%d/fd" % pid))
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return fds, rss


async def fetch(port, path):
    got = await http(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    head, _, body = got.partition(b"\r\n\r\n")
    return head.split(b" ")[1].decode() if b" " in head else "?", body.decode()


def parse_metrics(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def loop_kind(name, worker, concurrency, stop_at, pause=(0.05, 0.3), limit=40):
    async def runner(k):
        n = 0
        while time.monotonic() < stop_at:
            try:
                async with asyncio.timeout(limit):
                    await worker(k, n)
            except Exception as e:  # noqa: BLE001 - every surprise is a finding
                STATS.fail(name, "%s: %r" % (type(e).__name__, e))
            n += 1
            await asyncio.sleep(random.uniform(*pause))
        return n

    counts = await asyncio.gather(*(runner(k) for k in range(concurrency)))
    STATS.ok("%s connections" % name, sum(counts))


def make_certificate():
    """A self-signed certificate for localhost in a fresh directory; returns
    the server's extra flags and sets the clients' TLS context."""
    global TLS
    where = tempfile.mkdtemp(prefix="wschat-soak-tls-")
    cert, key = os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    TLS = ssl.create_default_context(cafile=cert)
    return ["--tls-cert", cert, "--tls-key", key]


async def soak(args):
    seconds = args.seconds
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    log = open(args.log, "wb")
    tls_flags = make_certificate() if args.tls else []
    server = subprocess.Popen(
        [
            args.binary, "0", "--host", HOST, *tls_flags,
            "--max-output-bytes", str(MAX_OUTPUT),
            "--max-message-bytes", str(MAX_MESSAGE),
            "--max-connections", "1000",
            "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
            "--idle-timeout", str(IDLE),
            "--close-timeout", str(CLOSE_TIMEOUT),
        ],
        stdout=subprocess.PIPE, stderr=log, env=env,
    )
    checks = []  # (passed, text)

    def check(passed, text):
        checks.append((bool(passed), text))

    try:
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 10)
        m = re.search(rb"listening on https?://127\.0\.0\.1:(\d+)/", line)
        if not m:
            raise SystemExit("soak: server did not start: %r" % line)
        port = int(m.group(1))
        pid = server.pid
        await asyncio.sleep(0.5)
        base_fds, base_rss = proc_figures(pid)
        print("soak: server pid %d on port %d; baseline %d fds, VmRSS %d KiB" % (pid, port, base_fds, base_rss))

        t0 = time.monotonic()
        stop_at = t0 + seconds
        peak = [base_fds, base_rss]
        health = Counter()

        async def sampler():
            while server.poll() is None:
                fds, rss = proc_figures(pid)
                peak[0] = max(peak[0], fds)
                peak[1] = max(peak[1], rss)
                await asyncio.sleep(0.5)

        async def health_checker():
            while time.monotonic() < stop_at:
                try:
                    start = time.monotonic()
                    status, body = await fetch(port, "/healthz")
                    health["ok" if (status, body) == ("200", "ok\n") else "bad"] += 1
                    health["max_ms"] = max(health["max_ms"], int((time.monotonic() - start) * 1000))
                except Exception:  # noqa: BLE001
                    health["bad"] += 1
                await asyncio.sleep(1)

        sample_task = asyncio.create_task(sampler())
        chat = Chat()
        chatters = [asyncio.create_task(chatter(port, i, chat, stop_at)) for i in range(CHATTERS)]
        async with asyncio.timeout(10):
            await chat.all_joined.wait()
        stall = max(4.0, min(10.0, seconds / 2))
        # A plain stalled reader needs ~4 MiB of chat (see `stalled`).
        long_stall = min(300.0, seconds - 40)
        kinds = [
            health_checker(),
            loop_kind("churner", lambda k, n: churner(port, k, n), 2, stop_at),
            loop_kind("violator", lambda k, n: violator(port, k, n), 3, stop_at),
            loop_kind("garbage", lambda k, n: garbage(port, k, n), 2, stop_at),
            loop_kind("abrupt", lambda k, n: abrupt(port, k, n), 2, stop_at),
            loop_kind("stalled", lambda k, n: stalled(port, k, n, stall, True), 2, stop_at - stall, (0.5, 1.0)),
            loop_kind("flooder", lambda k, n: flooder(port, k, n), 1, stop_at, (0.5, 1.0)),
            loop_kind("silent", lambda k, n: silent(port, k, n), 1, stop_at - 2 * IDLE, (0.1, 0.5)),
        ]
        if seconds >= 180:
            kinds.append(loop_kind("stalled plain", lambda k, n: stalled(port, k, n, long_stall, False), 2,
                                   stop_at - long_stall, (0.5, 1.0), long_stall + 40))
        results = await asyncio.gather(*chatters, *kinds, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                STATS.fail("client task", repr(r))
        elapsed = time.monotonic() - t0

        # Everyone is gone: the server must be back where it started.
        alive = server.poll() is None
        check(alive, "server alive after %.0fs" % elapsed)
        metrics = {}
        open_now = None
        if alive:
            status, body = await fetch(port, "/healthz")
            check((status, body) == ("200", "ok\n"), "/healthz answers 200 ok at the end")
            for _ in range(40):
                metrics = parse_metrics((await fetch(port, "/metrics"))[1])
                open_now = {s: metrics.get('wschat_connections_open{state="%s"}' % s, -1)
                            for s in ("handshake", "open", "closing", "http")}
                if open_now["handshake"] == open_now["open"] == open_now["closing"] == 0 and open_now["http"] <= 1:
                    break
                await asyncio.sleep(0.25)
            check(open_now["handshake"] == open_now["open"] == open_now["closing"] == 0 and open_now["http"] <= 1,
                  "no connection left open: %s" % open_now)
            check(metrics.get("wschat_users_named") == 0, "no name left held (users_named %s)" % metrics.get("wschat_users_named"))
            await asyncio.sleep(0.5)
            fds, rss = proc_figures(pid)
            check(fds <= base_fds + FD_SLACK,
                  "descriptors back to baseline: %d at start, %d peak, %d at end (slack %d)" % (base_fds, peak[0], fds, FD_SLACK))
            check(rss <= base_rss + RSS_SLACK_KB,
                  "VmRSS back near baseline: %d KiB at start, %d peak, %d at end (slack %d KiB)" % (base_rss, peak[1], rss, RSS_SLACK_KB))
        check(health["bad"] == 0 and health["ok"] > 0,
              "/healthz during the run: %d ok, %d bad, slowest %d ms" % (health["ok"], health["bad"], health["max_ms"]))
        complete = STATS.counts["chatter complete and in order"]
        lines = sum(chat.sent.values())
        check(complete == CHATTERS and not STATS.failures["chatter order/completeness"],
              "%d/%d chatters received all %d lines (%d deliveries) in order" % (complete, CHATTERS, lines, sum(chat.received.values())))
        dropped = sum(n for what, n in STATS.counts.items() if what.startswith("stalled reader dropped"))
        slow = metrics.get("wschat_slow_consumers_dropped_total", 0)
        check(dropped > 0 and slow >= dropped,
              "stalled readers dropped: %d (%d saw the 1008), server counted %d slow consumers"
              % (dropped, STATS.counts["stalled reader saw close 1008"], slow))
        # Every close frame the server counted reached a client, except the
        # 1008s queued behind the backlog of the stalled readers it dropped.
        counted = {int(k.split('"')[1]): int(v) for k, v in metrics.items()
                   if k.startswith("wschat_closes_total{") and v}
        expected = {code: n for code, n in CLOSES_SEEN.items() if code is not None}
        expected[1008] = expected.get(1008, 0) + int(slow)
        expected = {code: n for code, n in expected.items() if n}
        check(counted == expected,
              "close frames sent (server) = received (clients) + slow-consumer drops: %s"
              % ", ".join("%d: %d" % (c, n) for c, n in sorted(counted.items())) if counted == expected
              else "close frames: server counted %s, clients saw %s" % (counted, expected))
        sample_task.cancel()
        for name in sorted(STATS.failures):
            check(False, "%s: %d failure(s), e.g. %s" % (name, STATS.failures[name], STATS.examples[name]))
        # Shutdown.
        if alive:
            server.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(asyncio.to_thread(server.wait), 10)
            except TimeoutError:
                code = None
            check(code == 0, "SIGTERM: exit status %s" % code)

        print("soak: %.0fs, client outcomes:" % elapsed)
        for what in sorted(STATS.counts):
            print("  %-40s %d" % (what, STATS.counts[what]))
        if metrics:
            print("soak: server counters:")
            for key in sorted(metrics):
                if key.endswith("_total") or "_total{" in key:
                    if metrics[key]:
                        print("  %-60s %d" % (key, metrics[key]))
        for passed, text in checks:
            print("%s %s" % ("PASS" if passed else "FAIL", text))
        failed = sum(1 for p, _ in checks if not p)
        print("soak: %d passed, %d failed" % (len(checks) - failed, failed))
        return 1 if failed else 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--log", default="soak-server.log")
    ap.add_argument("--tls", action="store_true", help="wss/https clients, a certificate made for the run")
    args = ap.parse_args()
    if args.seconds < 10:
        raise SystemExit("soak: at least 10 seconds")
    # Writes after the server dropped a stalled reader are expected.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
