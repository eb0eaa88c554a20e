#!/usr/bin/env python3
"""idle_wss.py PORT PID N [SNI]: opens N idle wss connections to 127.0.0.1:PORT
one after another with Python's ssl module (OpenSSL, so a TLS stack
independent of the server's rustls), waits 2.5 s, and prints the server's
VmRSS (read from /proc/PID) per connection. Loopback only; N is bounded by
the caller's descriptor limit."""
import base64, os, socket, ssl, sys, time

port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sni = sys.argv[4] if len(sys.argv) > 4 else None

def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS for pid %d" % pid)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # loopback only: the test's own certificate
ctx.set_alpn_protocols(["http/1.1"])
time.sleep(0.3)
before = rss_kib()
held = []
for _ in range(n):
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=sni)
    key = base64.b64encode(os.urandom(16)).decode()
    tls.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            raise SystemExit("server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit("not upgraded: %r" % head[:60])
    held.append(tls)
time.sleep(2.5)
after = rss_kib()
print(f"{ssl.OPENSSL_VERSION}, {held[0].version()} {held[0].cipher()[0]}, SNI {sni}: "
      f"{n} idle wss, server VmRSS {before} -> {after} KiB: {(after - before) * 1024 // n} B per connection")
