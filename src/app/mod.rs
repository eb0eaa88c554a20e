//! Applications that run on top of the protocol engine.

pub mod admin;
pub mod chat;
pub mod echo;
pub mod history;
