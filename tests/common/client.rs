//! A well-behaved chat client on `tungstenite` (an independent RFC 6455
//! implementation), with JSON helpers.

use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocket;
use tungstenite::{Error, Message};

use super::{QUIET, READ_TIMEOUT};

/// A `TcpStream` whose reads and writes are retried when a signal
/// interrupts them. Test binaries that spawn `wschat` receive SIGCHLD, and a
/// socket call with a timeout (SO_RCVTIMEO) then fails with EINTR instead of
/// being restarted; tungstenite would report that as a broken connection.
#[derive(Debug)]
pub struct Stream(pub TcpStream);

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

pub struct Client {
    pub ws: WebSocket<Stream>,
}

/// What the next read produced.
#[derive(Debug)]
pub enum Got {
    Msg(Message),
    Timeout,
    Closed(String),
}

impl Client {
    /// Opens a WebSocket at `path` without reading anything after the 101.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, response) = tungstenite::client::client(url.as_str(), Stream(stream))
            .unwrap_or_else(|e| panic!("WebSocket handshake to {url} failed: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        Client { ws }
    }

    /// Opens a chat connection and returns it with its `users` snapshot;
    /// the `history` message that follows it (section 9, on by default) is
    /// checked and consumed.
    pub fn chat_at(addr: SocketAddr, path: &str) -> (Client, Value) {
        let (client, users, history) = Client::greeted(addr, path);
        assert!(history["messages"].is_array(), "{history}");
        (client, users)
    }

    /// Opens a chat connection and returns it with its greeting: the
    /// `users` snapshot, then the `history` message.
    pub fn greeted(addr: SocketAddr, path: &str) -> (Client, Value, Value) {
        let mut client = Client::connect(addr, path);
        let users = client.recv();
        assert_eq!(users["type"], "users", "first message after 101: {users}");
        assert!(users["users"].is_array(), "{users}");
        let history = client.recv();
        assert_eq!(
            history["type"], "history",
            "second message after 101: {history}"
        );
        (client, users, history)
    }

    /// A chat connection at `/`, snapshot consumed.
    pub fn chat(addr: SocketAddr) -> Client {
        Client::chat_at(addr, "/").0
    }

    /// A chat connection that has claimed `name` (own `join` consumed).
    pub fn named(addr: SocketAddr, name: &str) -> Client {
        let mut client = Client::chat(addr);
        client.join(name);
        client
    }

    /// Sends `{"type":"join","name":name}` and expects the own join event.
    pub fn join(&mut self, name: &str) {
        self.send(json!({"type": "join", "name": name}));
        let event = self.recv();
        assert_fields(
            &event,
            &json!({"type": "system", "event": "join", "name": name, "message": format!("{name} joined")}),
        );
    }

    pub fn send(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    pub fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .unwrap_or_else(|e| panic!("send binary: {e}"));
    }

    /// The next message of any kind, within `timeout`.
    pub fn next_within(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Got::Timeout;
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.ws.get_mut().0.set_read_timeout(Some(wait)).unwrap();
            match self.ws.read() {
                Ok(message) => return Got::Msg(message),
                Err(Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Got::Closed(e.to_string()),
            }
        }
    }

    /// The next text message parsed as JSON; pings and pongs are skipped.
    /// Panics on timeout, close or anything else.
    pub fn recv(&mut self) -> Value {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Got::Msg(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!("server sent invalid JSON {:?}: {e}", text.as_str())
                    });
                }
                Got::Msg(Message::Ping(_)) | Got::Msg(Message::Pong(_)) => {}
                Got::Timeout => panic!("no message from the server within {READ_TIMEOUT:?}"),
                other => panic!("expected a JSON text message, got {other:?}"),
            }
        }
    }

    /// The next message must be an error with `code`.
    pub fn expect_error(&mut self, code: &str) -> Value {
        let msg = self.recv();
        assert_eq!(msg["type"], "error", "expected error {code}, got {msg}");
        assert_eq!(msg["code"], code, "expected error {code}, got {msg}");
        assert!(msg["message"].is_string(), "error without message: {msg}");
        msg
    }

    /// Nothing at all arrives for a short while.
    pub fn expect_quiet(&mut self) {
        match self.next_within(QUIET) {
            Got::Timeout => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    /// A barrier: asks for the user list; the very next message must be the
    /// answer. Proves nothing else was queued for this connection before.
    pub fn barrier(&mut self) -> Value {
        self.send(json!({"type": "users"}));
        let msg = self.recv();
        assert_eq!(msg["type"], "users", "expected the users answer, got {msg}");
        msg
    }

    /// Reads until a close frame; returns its code (panics on anything else
    /// but data messages, which are skipped).
    pub fn expect_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Got::Msg(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Got::Msg(_) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// Names of a `users` message, sorted.
pub fn user_names(users: &Value) -> Vec<String> {
    let mut names: Vec<String> = users["users"]
        .as_array()
        .unwrap_or_else(|| panic!("not a users message: {users}"))
        .iter()
        .map(|u| u["name"].as_str().expect("user name").to_string())
        .collect();
    names.sort();
    names
}

/// The colour a `users` message lists for `name`.
pub fn user_color(users: &Value, name: &str) -> String {
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {users}"))["color"]
        .as_str()
        .expect("colour string")
        .to_string()
}

/// Six upper-case hex digits, as the server must send colours.
pub fn is_server_color(s: &str) -> bool {
    s.len() == 6
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Every field of `expected` is in `actual` with the same value (the server
/// may add fields in later versions; clients ignore them).
pub fn assert_fields(actual: &Value, expected: &Value) {
    let expected = expected.as_object().expect("expected must be an object");
    let object = actual
        .as_object()
        .unwrap_or_else(|| panic!("expected an object like {expected:?}, got {actual}"));
    for (key, value) in expected {
        assert_eq!(
            object.get(key),
            Some(value),
            "field {key:?}: expected {value}, got message {actual}"
        );
    }
}
