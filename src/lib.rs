//! wschat: a WebSocket chat server in one process, one thread, one poll loop.
//!
//! Where to look:
//! - [`config`]: the command line and `WSCHAT_*` variables (PROTOCOL section 8).
//! - [`server`]: the `mio` poll loop. It owns a `slab` of connections, accepts,
//!   reads (`server/input.rs`), runs timers through the poll timeout, and
//!   flushes every connection that received output once per loop turn
//!   (`server/output.rs`); `server/room.rs` is the chat's view of the slab.
//! - [`engine`]: the protocol engine, independent of any application:
//!   [`engine::http`] parses request heads and writes plain responses,
//!   [`engine::handshake`] decides the opening handshake (PROTOCOL section 2),
//!   [`engine::frame`] encodes and decodes RFC 6455 frames (with
//!   [`engine::mask`] and [`engine::utf8`]), [`engine::close`] names close codes,
//!   [`engine::connection`] holds one connection's state machine and buffers.
//! - [`app`]: the applications on top of the engine: [`app::chat`] (the JSON
//!   chat of PROTOCOL sections 3-5) and [`app::echo`] (section 6).
//! - [`metrics`]: the counters behind `/metrics`.

pub mod app;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod server;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
