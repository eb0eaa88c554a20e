//! wschat: a WebSocket chat server in one process, one thread, one poll loop.
//!
//! Where to look, from the socket up:
//! - [`server`]: the `mio` poll loop. It owns a `slab` of connections and
//!   moves bytes between sockets, connections and the service
//!   (`server/pump.rs`), keeps deadlines in a heap (`server/timers.rs`) and
//!   guards the server-wide limits (`server/guard.rs`). It knows neither
//!   RFC 6455 nor the chat.
//! - [`transport`]: the byte pipe under a connection (plain TCP; TLS is a
//!   second variant).
//! - [`engine`]: the protocol engine, independent of any application:
//!   [`engine::connection`] is one connection's sans-IO state machine
//!   (handshake → open → closing, keepalive and close deadlines),
//!   [`engine::http`] parses request heads and writes plain responses,
//!   [`engine::handshake`] decides the opening handshake (PROTOCOL section
//!   2), [`engine::frame`] encodes and decodes RFC 6455 frames (with
//!   [`engine::mask`] and [`engine::utf8`]), [`engine::close`] names close
//!   codes.
//! - [`app`]: what runs on top, behind one [`app::Service`] interface:
//!   [`app::routes`] (the page, `/healthz`, `/metrics`), [`app::chat`] (the
//!   JSON chat of PROTOCOL sections 3-5: requests become [`app::chat::ChatEvent`]s,
//!   applied in one order) and [`app::echo`] (section 6);
//!   [`app::history`] keeps the broadcasts a new connection receives and
//!   makes their ids (section 9); [`app::admin`] decides the admin API's
//!   requests (section 11).
//! - [`cluster`]: with `--redis`, the bridge threads between the loop and
//!   the Redis that orders every node's chat events (PROTOCOL section 12);
//!   [`app::chat::cluster`] is the chat's side of it.
//! - [`console`]: `--console`, standard input read on its own thread.
//! - [`config`]: the command line and `WSCHAT_*` variables; [`metrics`]: the
//!   counters behind `/metrics`.

#![forbid(unsafe_code)]

pub mod app;
pub mod cluster;
pub mod config;
pub mod console;
pub mod engine;
pub mod metrics;
pub mod server;
pub mod transport;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
