//! Shared helpers for the black-box integration tests.
//!
//! Everything here talks to a real server over TCP on 127.0.0.1:
//! - [`server`]: starts the library server on a free port (and stops it),
//!   or the `wschat` binary for command-line tests.
//! - [`raw`]: hand-built HTTP requests and RFC 6455 frames on a plain
//!   `TcpStream`, for protocol violations and exact byte-level checks. It
//!   shares no code with the server on purpose.
//! - [`client`]: a well-behaved client built on `tungstenite` (an independent
//!   WebSocket implementation) with JSON helpers for the chat protocol.
//! - [`metrics`]: fetch and parse `/metrics`.
//! - [`redis`]: a private `redis-server` for the cluster tests.
//!
//! Every read has a timeout, so a broken server fails a test instead of
//! hanging it.
#![allow(dead_code)]

pub mod client;
pub mod metrics;
pub mod raw;
pub mod redis;
pub mod server;

use std::time::Duration;

/// How long a test waits for something the server must send.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a test waits to be convinced that nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(300);
