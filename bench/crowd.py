#!/usr/bin/env python3
"""crowd.py PORT N SECONDS: holds N idle chat connections to 127.0.0.1:PORT and
sends 100 chat lines from the first (so a v2 server's history is full), then
sleeps SECONDS and exits. Loopback only."""
import os, socket, struct, sys, time, json, base64
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def frame(text):
    data = text.encode(); mask = os.urandom(4)
    head = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack('>H', len(data)))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
socks = []
for i in range(n):
    s = socket.create_connection(('127.0.0.1', port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n'.encode())
    socks.append(s)
time.sleep(1)
for s in socks:
    s.setblocking(False)
    try:
        while s.recv(1 << 16): pass
    except BlockingIOError: pass
s0 = socks[0]
s0.setblocking(True)
for i in range(100):
    s0.sendall(frame(json.dumps({"name": "filler", "message": f"history line {i} " + "x" * 80})))
    time.sleep(0.002)
t_end = time.time() + hold
while time.time() < t_end:
    for s in socks:
        try:
            while s.recv(1 << 16): pass
        except (BlockingIOError, OSError): pass
    time.sleep(0.2)
