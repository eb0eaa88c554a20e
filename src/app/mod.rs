//! Applications on top of the engine, and the one interface through which
//! the loop reaches them.
//!
//! The loop knows two traits and nothing else about what runs on it:
//! - [`Service`]: what the loop calls. A complete request head goes to
//!   [`Service::on_request`], which answers it (a plain response, a body to
//!   read first, or an upgrade); WebSocket messages, opens and leaves follow.
//! - [`Connections`]: what the loop offers back: the per-connection state
//!   the service keeps in each slab entry, queueing frames within the
//!   output caps, closes, and the counters.
//!
//! [`Wschat`] is the service this server runs: the plain routes
//! ([`routes`]), the chat ([`chat`]) and the echo application ([`echo`]).

pub mod admin;
pub mod chat;
pub mod echo;
pub mod history;
pub mod routes;
mod service;

pub use service::{Peer, Wschat};

use crate::engine::close::CloseCode;
use crate::engine::frame::Opcode;
use crate::engine::http::Request;
use crate::metrics::{AppGauges, Metrics};
use std::net::SocketAddr;
use std::time::Instant;

/// A connection, as the loop names it (its slab key).
pub type ConnId = usize;

/// What the loop offers a [`Service`]. `P` is the service's state of one
/// connection, kept in the connection's slab entry.
pub trait Connections<P> {
    /// The time of the current loop turn.
    fn now(&self) -> Instant;
    /// The state of an open WebSocket connection.
    fn peer(&mut self, id: ConnId) -> Option<&mut P>;
    /// Queues framed bytes on one open WebSocket, within its output cap;
    /// false if they were not queued.
    fn send(&mut self, id: ConnId, frame: &[u8]) -> bool;
    /// Queues one frame, encoded straight into the connection's output.
    fn send_frame(&mut self, id: ConnId, opcode: Opcode, payload: &[u8]) -> bool;
    /// Queues framed bytes on every open WebSocket whose state `to`
    /// accepts; returns how many.
    fn broadcast(&mut self, frame: &[u8], to: impl FnMut(&P) -> bool) -> u64;
    /// Closes an open WebSocket with a close frame (settled after the
    /// current event, never from inside a broadcast).
    fn close(&mut self, id: ConnId, code: CloseCode, reason: &str);
    fn metrics(&mut self) -> &mut Metrics;
    /// The Prometheus text of the loop's counters plus `app`'s gauges.
    fn render_metrics(&mut self, app: &AppGauges) -> String;
}

/// Why a request was turned away, for the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The `reason` label of `wschat_connections_rejected_total`.
    pub metric: &'static str,
    pub why: &'static str,
}

/// A complete plain HTTP response; the connection ends once it is sent.
#[derive(Debug)]
pub struct Response {
    pub bytes: Vec<u8>,
    pub status: u16,
    pub refusal: Option<Refusal>,
}

/// How a service answers a request head.
#[derive(Debug)]
pub enum Answer<P> {
    Respond(Response),
    /// Read a body of `length` bytes (within the handshake timeout), then
    /// call [`Service::on_body`] with `pending`. With `send_continue` (the
    /// request said `Expect: 100-continue`) a `100 Continue` goes first.
    ReadBody {
        length: usize,
        send_continue: bool,
        pending: P,
    },
    /// Switch to WebSocket; `peer` becomes the connection's state.
    Upgrade {
        accept: String,
        subprotocol: Option<&'static str>,
        peer: P,
        /// The application's name, for the log.
        app: &'static str,
    },
}

/// What the loop calls. One value serves every connection.
pub trait Service {
    /// The state of one connection.
    type Peer;

    /// A complete request head from `addr`.
    fn on_request(
        &mut self,
        id: ConnId,
        request: &Request<'_>,
        addr: SocketAddr,
        conns: &mut impl Connections<Self::Peer>,
    ) -> Answer<Self::Peer>;

    /// The body asked for by [`Answer::ReadBody`].
    fn on_body(
        &mut self,
        id: ConnId,
        pending: Self::Peer,
        body: &[u8],
        conns: &mut impl Connections<Self::Peer>,
    ) -> Response;

    /// The `101` is queued: the application may greet.
    fn on_open(&mut self, id: ConnId, conns: &mut impl Connections<Self::Peer>);

    /// One complete data message.
    fn on_message(
        &mut self,
        id: ConnId,
        binary: bool,
        payload: &[u8],
        conns: &mut impl Connections<Self::Peer>,
    );

    /// The connection stopped being an application connection (closed,
    /// failed, dropped, or the server is stopping); `peer` was its state.
    fn on_leave(&mut self, id: ConnId, peer: Self::Peer, conns: &mut impl Connections<Self::Peer>);

    /// The loop's waker fired (another thread has work for the service).
    fn on_wake(&mut self, _conns: &mut impl Connections<Self::Peer>) {}

    /// About once a second, for the service's own timers.
    fn on_tick(&mut self, _conns: &mut impl Connections<Self::Peer>) {}

    /// `run` is about to return after a graceful shutdown: last words to
    /// other processes (a cluster node's leaves), done by `until`.
    fn on_stop(&mut self, _conns: &mut impl Connections<Self::Peer>, _until: Instant) {}
}
