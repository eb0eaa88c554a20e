//! The WebSocket protocol engine, independent of what runs on top of it.

pub mod close;
pub mod connection;
pub mod forwarded;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod utf8;
