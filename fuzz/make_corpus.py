#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (Python 3 stdlib only).

The seeds are realistic inputs: handshakes as browsers and the classic
PHP/jQuery clients send them, masked frames as clients send them, and chat
sessions in the protocol's JSON. Run it again after changing it; the files
are committed, so the fuzz runs do not need it.

    python3 fuzz/make_corpus.py
"""

import hashlib
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC 6455 sample key


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def crlf(*lines):
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ----- http_head --------------------------------------------------------------

HTTP = {
    "chrome": crlf(
        "GET /daemon.php HTTP/1.1",
        "Host: localhost:9000",
        "Connection: Upgrade",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "Upgrade: websocket",
        "Origin: http://localhost:9000",
        "Sec-WebSocket-Version: 13",
        "Accept-Encoding: gzip, deflate, br",
        "Accept-Language: en-US,en;q=0.9",
        "Sec-WebSocket-Key: " + KEY,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ),
    "firefox": crlf(
        "GET /demo/shout.php HTTP/1.1",
        "Host: 127.0.0.1:9000",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Accept: */*",
        "Sec-WebSocket-Version: 13",
        "Origin: http://127.0.0.1:9000",
        "Sec-WebSocket-Extensions: permessage-deflate",
        "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
        "Connection: keep-alive, Upgrade",
        "Sec-Fetch-Dest: websocket",
        "Sec-Fetch-Mode: websocket",
        "Sec-Fetch-Site: same-origin",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "Upgrade: websocket",
    ),
    "subprotocol_chat": crlf(
        "GET /chat?room=1 HTTP/1.1",
        "Host: example.com",
        "Upgrade: WebSocket",
        "Connection: upgrade",
        "Sec-WebSocket-Key: " + KEY,
        "Sec-WebSocket-Protocol: superchat, chat",
        "Sec-WebSocket-Version: 13",
    ),
    "tungstenite": crlf(
        "GET /echo HTTP/1.1",
        "Host: 127.0.0.1:40000",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==",
    ),
    "lowercase_tabs": b"GET / HTTP/1.1\r\nhost:\tx\r\nupgrade:\twebsocket \r\nconnection:\tfoo,  UPGRADE\r\nsec-websocket-key: "
    + KEY.encode()
    + b"\r\nsec-websocket-version:13\r\n\r\n",
    "version_8": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 8",
    ),
    "no_version": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + KEY,
    ),
    "bad_key": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: not-base64!!", "Sec-WebSocket-Version: 13",
    ),
    "key_15_bytes": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA", "Sec-WebSocket-Version: 13",
    ),
    "no_host": crlf(
        "GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
    "http10_upgrade": crlf(
        "GET / HTTP/1.0", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
    "key_without_upgrade": crlf(
        "GET / HTTP/1.1", "Host: x", "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
    "upgrade_h2c": crlf("GET / HTTP/1.1", "Host: x", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings"),
    "evil_origin": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Origin: https://evil.example", "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
    "origin_case": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Origin: HTTPS://Chat.Example.COM", "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
    "head_with_frame_behind": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ) + bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(b ^ k for b, k in zip(b"hello", b"\x01\x02\x03\x04\x01")),
    "get_root": crlf("GET / HTTP/1.1", "Host: localhost:9000", "Accept: text/html"),
    "get_index": crlf("GET /index.html HTTP/1.1", "Host: localhost"),
    "healthz_query": crlf("GET /healthz?x=1 HTTP/1.1", "Host: localhost"),
    "metrics": crlf("GET /metrics HTTP/1.1", "Host: localhost", "Accept: text/plain"),
    "curl": crlf("GET /healthz HTTP/1.1", "Host: 127.0.0.1:9000", "User-Agent: curl/8.5.0", "Accept: */*"),
    "head": crlf("HEAD / HTTP/1.1", "Host: x"),
    "head_upgrade": crlf(
        "HEAD / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
    "post": crlf("POST /chat HTTP/1.1", "Host: x", "Content-Length: 0"),
    "not_found_fragment": crlf("GET /nope#frag HTTP/1.1", "Host: x"),
    "http09": b"GET /\r\n\r\n",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: x\n\n\r\n\r\n",
    "header_no_colon": crlf("GET / HTTP/1.1", "Host x"),
    "header_space_in_name": crlf("GET / HTTP/1.1", "Ho st: x"),
    "folded_header": crlf("GET / HTTP/1.1", "Host: x", "X-Long: a", " continued"),
    "big_version": crlf("GET / HTTP/999.999", "Host: x"),
    "version_4_digits": crlf("GET / HTTP/1000.1", "Host: x"),
    "many_spaces": crlf("GET    /    HTTP/1.1", "Host:     x    "),
    "not_utf8": b"GET /\xff\xfe HTTP/1.1\r\nHost: \xc3\x28\r\n\r\n",
    "tls_client_hello": bytes.fromhex("16030100f8010000f40303") + b"\x00" * 24,
    "incomplete": b"GET / HTTP/1.1\r\nHost: x\r\n\r",
    "many_headers": crlf("GET / HTTP/1.1", *["X-H%d: %d" % (i, i) for i in range(101)]),
    "duplicate_upgrade": crlf(
        "GET / HTTP/1.1", "Host: x", "Upgrade: foo", "Upgrade: websocket", "Connection: close",
        "Connection: Upgrade", "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13",
    ),
}

# ----- frame_decoder ----------------------------------------------------------


def frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d", rsv=0, length=None):
    """A client frame; mask=None sends it unmasked."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


ZERO = b"\x00\x00\x00\x00"
TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def fd(stream, max_bytes=65536, cuts=()):
    """Prefix: max byte (limit = byte * 8), cut count, cut lengths."""
    return bytes([min(max_bytes // 8, 255), len(cuts)]) + bytes(cuts) + stream


CHAT = b'{"name":"alice","message":"hello","color":"007AFF"}'
EMOJI = "caf\u00e9 \U0001F600 \u4e2d\u6587".encode()
FRAMES = {
    "text_hello": fd(frame(TEXT, b"Hello")),
    "text_zero_mask": fd(frame(TEXT, b"Hello, world", mask=ZERO)),
    "chat_json": fd(frame(TEXT, CHAT)),
    "chat_json_cut": fd(frame(TEXT, CHAT), cuts=(1, 3, 5, 9)),
    "two_messages": fd(frame(TEXT, b'{"type":"users"}') + frame(TEXT, CHAT, mask=ZERO)),
    "fragmented_text": fd(
        frame(TEXT, b"Hel", fin=False) + frame(CONT, b"lo, ", fin=False) + frame(CONT, b"world")
    ),
    "fragmented_with_ping": fd(
        frame(TEXT, b"frag", fin=False, mask=ZERO) + frame(PING, b"p", mask=ZERO)
        + frame(CONT, b"ment", mask=ZERO)
    ),
    "utf8_split_across_frames": fd(
        frame(TEXT, EMOJI[:6], fin=False, mask=ZERO) + frame(CONT, EMOJI[6:], mask=ZERO),
        cuts=(7, 2, 1),
    ),
    "utf8_valid_4byte": fd(frame(TEXT, "\U0010FFFF\u00a0".encode(), mask=ZERO)),
    "utf8_surrogate": fd(frame(TEXT, b"\xed\xa0\x80", mask=ZERO)),
    "utf8_overlong": fd(frame(TEXT, b"\xc0\x80", mask=ZERO)),
    "utf8_truncated_at_end": fd(frame(TEXT, b"abc\xe2\x82", mask=ZERO)),
    "utf8_bad_in_continuation": fd(
        frame(TEXT, b"ok \xce", fin=False, mask=ZERO) + frame(CONT, b"\xbaX\xff", mask=ZERO)
    ),
    "binary": fd(frame(BINARY, bytes(range(40)))),
    "binary_fragmented": fd(frame(BINARY, b"\x00\x01", fin=False) + frame(CONT, b"\x02")),
    "len16": fd(frame(TEXT, b"x" * 200, mask=ZERO)),
    "len64": fd(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 300) + ZERO + b"y" * 300),
    "len64_top_bit": fd(bytes([0x82, 0xFF]) + b"\x80" + b"\x00" * 7 + ZERO),
    "too_big_for_max": fd(frame(TEXT, b"z" * 100, mask=ZERO), max_bytes=64),
    "fragments_exceed_max": fd(
        frame(TEXT, b"a" * 40, fin=False, mask=ZERO) + frame(CONT, b"b" * 40, mask=ZERO), max_bytes=64
    ),
    "empty_text": fd(frame(TEXT, b"")),
    "ping": fd(frame(PING, b"are you there")),
    "pong": fd(frame(PONG, b"")),
    "ping_126": fd(frame(PING, b"p" * 126, mask=ZERO)),
    "ping_fragmented": fd(frame(PING, b"p", fin=False)),
    "close_empty": fd(frame(CLOSE, b"")),
    "close_1000_reason": fd(frame(CLOSE, close_payload(1000, b"bye"))),
    "close_4000": fd(frame(CLOSE, close_payload(4000, "\u00e9t\u00e9".encode()), mask=ZERO)),
    "close_1_byte": fd(frame(CLOSE, b"\x03", mask=ZERO)),
    "close_1005": fd(frame(CLOSE, close_payload(1005), mask=ZERO)),
    "close_bad_utf8_reason": fd(frame(CLOSE, close_payload(1000, b"\xff"), mask=ZERO)),
    "close_mid_fragment": fd(
        frame(TEXT, b"half", fin=False, mask=ZERO) + frame(CLOSE, close_payload(1001), mask=ZERO)
    ),
    "unmasked_text": fd(frame(TEXT, b"Hello", mask=None)),
    "unmasked_then_close": fd(frame(TEXT, b"x", mask=None) + frame(CLOSE, b"", mask=ZERO)),
    "rsv1_set": fd(frame(TEXT, b"deflated?", rsv=0x40)),
    "reserved_opcode_3": fd(frame(3, b"?")),
    "reserved_opcode_b": fd(frame(0xB, b"")),
    "continuation_first": fd(frame(CONT, b"orphan")),
    "text_inside_fragmented": fd(frame(TEXT, b"a", fin=False) + frame(TEXT, b"b")),
    "error_then_close_reply": fd(
        frame(TEXT, b"\xff", mask=ZERO) + frame(TEXT, b"ignored") + frame(CLOSE, close_payload(1000))
    ),
    "header_cut_byte_by_byte": fd(frame(TEXT, b"x" * 130, mask=ZERO), cuts=(1, 1, 1, 1, 1, 1, 1)),
}

# ----- chat_message -----------------------------------------------------------


def chat(*lines):
    return "\n".join(lines).encode()


CHATS = {
    "php_client": chat(
        "A", "B",
        'a{"name":"alice","message":"hello","color":"007AFF"}',
        'b{"name":"bob","message":"hi alice","color":"#ff7000"}',
        'a{"name":"alice","message":"psst","color":"007AFF","toname":"BOB"}',
    ),
    "join_users_leave": chat(
        "A", "B", "C",
        'a{"type":"join","name":"alice"}',
        'b{"type":"join","name":"Bob","color":"FF7000"}',
        'c{"type":"users"}',
        "w",
        'c{"type":"users","name":7}',
    ),
    "rename_and_case": chat(
        "A", "B",
        'a{"type":"join","name":"alice"}',
        'a{"type":"join","name":"Alice"}',
        'a{"name":"alicia","message":"new name"}',
        'b{"type":"join","name":"ALICIA"}',
        'b{"type":"join","name":"alice"}',
    ),
    "errors": chat(
        "A", "B",
        "a[1,2]",
        'a"\\ud800"',
        'a{"message":"\\ud800"}',
        'a{"type":7}',
        'a{"type":"dance"}',
        'a{"name":null,"message":"x"}',
        'a{"name":"a"}',
        'a{"name":"a","message":5}',
        'a{"message":"hi"}',
        'a{"name":"  ","message":"x"}',
        'a{"name":"a\\u0007b","message":"x"}',
        'a{"name":"' + "n" * 33 + '","message":"x"}',
        'b{"type":"join","name":"bob"}',
        'a{"name":"bob","message":"x"}',
        'a{"name":"a","message":"   "}',
        'a{"name":"a","message":"01234567890"}',
        'a{"name":"a","message":"x","toname":"nobody"}',
        'a{"name":"a","message":"x","toname":5}',
        "a{not json",
        "a",
    ),
    "unicode": chat(
        "A", "B",
        'a{"type":"join","name":"\u00c9milie \U0001F600"}',
        'b{"type":"join","name":"\u0130stanbul"}',
        'b{"type":"join","name":"i\u0307stanbul"}',
        'a{"message":"\u3000 caf\u00e9 \u2003","color":"#abcdef"}',
        'b{"name":"\u0130stanbul","message":"x","toname":"\u00e9milie \U0001F600"}',
    ),
    "private_to_self": chat(
        "A", 'a{"type":"join","name":"solo"}', 'a{"message":"me","toname":" SOLO "}',
        'a{"message":"x","toname":""}', 'a{"message":"y","toname":null}',
    ),
    "rate_flood": chat(
        "!\x01\x0a", "A", "B", 'a{"type":"join","name":"flood"}',
        *['a{"message":"%d"}' % i for i in range(16)],
        "t\xff", 'a{"message":"after"}',
    ),
    "rate_refill": chat(
        "!\x02\x14", "A", 'a{"type":"join","name":"r"}',
        *['a{"message":"m%d"}' % i for i in range(6)], "t\x32",
        *['a{"message":"n%d"}' % i for i in range(4)],
    ),
    "colors": chat(
        "A", 'a{"type":"join","name":"c","color":"00ff00"}', 'a{"message":"x","color":"#GGGGGG"}',
        'a{"message":"y","color":123}', 'a{"message":"z","color":null}', 'a{"message":"w","color":"#12345"}',
    ),
    "sparse_slots": chat(
        "D", "C", 'd{"type":"join","name":"thousand"}', 'c{"type":"join","name":"seven"}',
        'c{"message":"to 1000","toname":"thousand"}', "z", 'c{"message":"gone?","toname":"thousand"}',
    ),
    "leave_and_rejoin": chat(
        "A", "B", 'a{"type":"join","name":"x"}', "w", 'b{"type":"join","name":"X"}', "A",
        'a{"type":"join","name":"x"}',
    ),
    "raw_lines": chat("A", "B", "C", "D", '{"type":"users"}', 'E{"name":"e"}', "not json at all"),
    "escapes": chat(
        "A", 'a{"name":"q\\"uote","message":"line\\nbreak\\t\\u0000 \\\\ </script>"}',
    ),
    "duplicate_keys": chat("A", 'a{"name":"a","name":"b","message":"m","message":"n"}'),
    "history_of_a_room": chat(
        "A", "B", "C",
        'a{"type":"join","name":"ann"}', 'b{"type":"join","name":"ben"}', 'c{"type":"join","name":"cy"}',
        *['%s{"message":"msg %d"}' % ("abc"[i % 3], i) for i in range(12)],
        "x", 'a{"message":"ben left?","toname":"ben"}', "B", 'b{"type":"join","name":"ben"}',
    ),
    "too_long_unicode": chat("!\x00\x04", "A", 'a{"name":"u","message":"\U0001F600\U0001F600\U0001F600\U0001F600\U0001F600"}'),
    "exactly_max": chat("A", 'a{"name":"m","message":"  0123456789  "}'),
    "join_without_name": chat("A", 'a{"type":"join"}', 'a{"type":"join","name":""}', 'a{"type":"join","name":5}'),
    "toname_whitespace": chat("A", "B", 'a{"type":"join","name":"a"}', 'b{"type":"join","name":"b"}', 'a{"message":"hi","toname":" \t "}'),
    "message_type_explicit": chat("A", 'a{"type":"message","name":"t","message":"typed"}', 'a{"type":"MESSAGE","message":"x"}'),
    "name_32_and_33": chat("A", "B", 'a{"type":"join","name":"' + "é" * 32 + '"}', 'b{"type":"join","name":"' + "é" * 33 + '"}'),
    "name_control_unicode": chat("A", 'a{"type":"join","name":"a\u0085b"}', 'a{"type":"join","name":"a\u200bb"}'),
    "flood_then_others": chat(
        "!\x01\x10", "A", "B", 'a{"type":"join","name":"f"}', 'b{"type":"join","name":"g"}',
        *['a{"message":"%d"}' % i for i in range(14)], 'b{"message":"still here"}',
    ),
    "not_an_object": chat("A", "a1", "anull", 'a"str"', "a[]", "atrue", "a{}"),
    "nested_json": chat("A", 'a{"name":"n","message":"m","extra":{"a":[1,2,{"b":null}]},"x":1e999}'),
}


# ----- admin_body -------------------------------------------------------------

ADMIN_TOKEN = "fuzz-admin-token-0123"  # the token the admin_body target uses


def admin(method, path, body=None, auth="Bearer " + ADMIN_TOKEN, extra=()):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:9000", "User-Agent: curl/7.88.1", "Accept: */*"]
    if auth is not None:
        lines.append("Authorization: " + auth)
    lines.extend(extra)
    data = body.encode() if isinstance(body, str) else (body or b"")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return crlf(*lines) + data


ADMIN = {
    "users": admin("GET", "/api/users"),
    "users_head": admin("HEAD", "/api/users"),
    "publish": admin("POST", "/api/publish", '{"message":"Maintenance at 18:00"}'),
    "publish_private": admin("POST", "/api/publish", '{"message":"psst","toname":" bob "}'),
    "publish_toname_null": admin("POST", "/api/publish", '{"message":"hi","toname":null}'),
    "publish_unicode": admin("POST", "/api/publish", '{"message":"  \\u00e9t\\u00e9 \\ud83d\\ude00  "}'),
    "publish_wrong_types": admin("POST", "/api/publish", '{"message":5,"toname":[]}'),
    "publish_empty": admin("POST", "/api/publish", '{"message":" \t "}'),
    "publish_not_object": admin("POST", "/api/publish", '["message"]'),
    "publish_lone_surrogate": admin("POST", "/api/publish", '{"message":"\\ud800"}'),
    "publish_extra_bytes": admin("POST", "/api/publish", '{"message":"a"}') + b"GET / HTTP/1.1\r\n\r\n",
    "publish_short_body": admin("POST", "/api/publish", "", extra=()).replace(b"Content-Length: 0", b"Content-Length: 40") + b'{"message":',
    "publish_expect": admin("POST", "/api/publish", '{"message":"x"}', extra=("Expect: 100-continue",)),
    "kick": admin("POST", "/api/kick", '{"name":"alice","reason":"spam"}'),
    "kick_reason_null": admin("POST", "/api/kick", '{"name":"alice","reason":null}'),
    "kick_long_reason": admin("POST", "/api/kick", '{"name":"a","reason":"' + "\u20ac" * 100 + '"}'),
    "kick_emoji_reason": admin("POST", "/api/kick", '{"name":"a","reason":"' + "😀" * 40 + '"}'),
    "kick_no_name": admin("POST", "/api/kick", '{"reason":"x"}'),
    "no_token": admin("POST", "/api/kick", '{"name":"a"}', auth=None),
    "wrong_token": admin("GET", "/api/users", auth="Bearer fuzz-admin-token-0124"),
    "lower_bearer": admin("GET", "/api/users", auth="bearer    " + ADMIN_TOKEN),
    "wrong_method": admin("DELETE", "/api/users"),
    "no_such_path": admin("GET", "/api/nope"),
    "chunked": crlf("POST /api/publish HTTP/1.1", "Host: x", "Authorization: Bearer " + ADMIN_TOKEN,
                    "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
    "no_length": crlf("POST /api/publish HTTP/1.1", "Host: x", "Authorization: Bearer " + ADMIN_TOKEN),
    "too_large": crlf("POST /api/publish HTTP/1.1", "Host: x", "Authorization: Bearer " + ADMIN_TOKEN,
                      "Content-Length: 65537"),
    "bad_length": crlf("POST /api/kick HTTP/1.1", "Host: x", "Authorization: Bearer " + ADMIN_TOKEN,
                       "Content-Length: 3, 4"),
    "bare_body_publish": b'{"message":" hello ","toname":""}',
    "bare_body_kick": b'{"name":" eve ","reason":"  flooding  "}',
}


def main():
    shutil.rmtree(os.path.join(HERE, "corpus"), ignore_errors=True)
    for target, seeds in (("http_head", HTTP), ("frame_decoder", FRAMES), ("chat_message", CHATS), ("admin_body", ADMIN)):
        for name, data in seeds.items():
            write(target, name, data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
