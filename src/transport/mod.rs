//! Byte transports under the engine: plain TCP or TLS (the lead replaces
//! this file with the `Transport` enum).

pub mod tls;
