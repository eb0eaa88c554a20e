//! Applications that run on top of the protocol engine.

pub mod chat;
pub mod echo;
