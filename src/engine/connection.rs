//! One connection's protocol state: where it is in its life
//! (AwaitingHandshake → Open → Closing, or a plain HTTP exchange), the frame
//! decoder, and the output not yet accepted by the kernel.
//!
//! Nothing here knows about chat; the server pairs a [`Connection`] with the
//! application state in each slab entry.

use super::frame::Decoder;
use mio::net::TcpStream;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the request head (bytes so far; dropped once parsed).
    AwaitingHandshake { head: Vec<u8> },
    /// WebSocket open: frames flow both ways.
    Open,
    /// The server sent a close frame and waits for the peer's close (or
    /// EOF) until the deadline. `discard`: the stream can no longer be
    /// parsed, so bytes are thrown away unread.
    Closing { discard: bool },
    /// A last response (plain HTTP, a refusal, or the reply to a client's
    /// close) is queued; once it is written the write side is shut.
    Finishing,
    /// Write side shut; reading and discarding until the peer's EOF, so
    /// unread bytes do not turn the close into a reset that could destroy
    /// the response in flight.
    Lingering,
}

/// The engine's part of a slab entry.
#[derive(Debug)]
pub struct Connection {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    pub decoder: Decoder,
    /// Bytes queued for the socket, in order.
    pub out: Vec<u8>,
    /// What the current phase waits for: the head, the next ping, the peer's
    /// close, or the end of lingering.
    pub deadline: Instant,
    /// A keepalive ping is outstanding (set when sent, cleared by any input).
    pub ping_sent: bool,
    /// Already on the loop's list of connections to flush this turn.
    pub dirty: bool,
    /// WRITABLE interest is registered (only while output is pending).
    pub wants_write: bool,
    /// Already on the loop's list of connections with unread input.
    pub in_backlog: bool,
    /// Was a plain HTTP exchange, not a WebSocket (for the metrics label).
    pub is_http: bool,
    /// Why the connection is ending, for the log line when it closes.
    pub close_reason: Option<Box<str>>,
    /// The peer sent EOF (edge-triggered: it will not be reported again).
    pub eof_seen: bool,
    /// Input is not read until the output backlog shrinks (backpressure).
    pub read_paused: bool,
    /// Bytes moved in either direction since the last trim.
    pub active: bool,
    /// Messages handled in this loop turn (see the server's fairness budget).
    pub turn_messages: u16,
    /// Input read but not yet processed because the budget ran out;
    /// empty (and unallocated) except for a connection that floods.
    pub stash: Vec<u8>,
}

/// How far a flush got.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Every queued byte was written.
    All,
    /// The kernel buffer is full; the rest waits for WRITABLE.
    Blocked,
}

/// An output buffer that grew past this for a burst is released once drained.
const KEEP_OUTPUT_CAPACITY: usize = 16 * 1024;

impl Connection {
    pub fn new(socket: TcpStream, peer: SocketAddr, deadline: Instant, max_message: usize) -> Self {
        Connection {
            socket,
            peer,
            phase: Phase::AwaitingHandshake { head: Vec::new() },
            decoder: Decoder::new(max_message),
            out: Vec::new(),
            deadline,
            ping_sent: false,
            dirty: false,
            wants_write: false,
            in_backlog: false,
            is_http: false,
            close_reason: None,
            eof_seen: false,
            read_paused: false,
            active: true,
            turn_messages: 0,
            stash: Vec::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// A connection that moved no bytes since the last call gives its
    /// buffers back, so an idle connection owns no heap memory; a busy one
    /// keeps them and allocates nothing per message.
    pub fn trim_if_idle(&mut self) {
        if !self.active {
            if self.out.is_empty() && self.out.capacity() > 0 {
                self.out = Vec::new();
            }
            self.decoder.trim();
        }
        self.active = false;
    }

    /// Writes queued output until done or the socket would block. Returns
    /// the bytes written alongside how far it got.
    pub fn flush(&mut self) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        while written < self.out.len() {
            match self.socket.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.out.drain(..written);
                    return Ok((Flushed::Blocked, written));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out.capacity() > KEEP_OUTPUT_CAPACITY {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Ok((Flushed::All, written))
    }
}
