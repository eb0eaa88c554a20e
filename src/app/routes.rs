//! The plain HTTP routes of PROTOCOL section 2: the chat page, `/healthz`
//! and `/metrics`; every other path is 404.

use super::{Refusal, Response};
use crate::engine::http;

/// The web client, with the server's limits substituted at start.
const INDEX_HTML: &str = include_str!("../../web/index.html");

/// The route table and what it serves.
#[derive(Debug)]
pub struct Routes {
    index_html: Vec<u8>,
}

/// What `/healthz` says while the node cannot serve (section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    RedisUnavailable,
}

impl Routes {
    /// The page learns the limits it must respect, and the keepalive it can
    /// expect, from values written into it here.
    pub fn new(max_chat_chars: usize, rate_limit: u32, idle_timeout_secs: u64) -> Routes {
        let index_html = INDEX_HTML
            .replace("__WSCHAT_MAX_CHAT_CHARS__", &max_chat_chars.to_string())
            .replace("__WSCHAT_RATE_LIMIT__", &rate_limit.to_string())
            .replace("__WSCHAT_IDLE_TIMEOUT__", &idle_timeout_secs.to_string())
            .into_bytes();
        Routes { index_html }
    }

    /// Answers a plain GET or HEAD; `metrics` renders `/metrics` on demand.
    pub fn serve(
        &self,
        path: &str,
        head_only: bool,
        health: Health,
        metrics: impl FnOnce() -> String,
    ) -> Response {
        let mut bytes = Vec::new();
        let status = match path {
            "/" | "/index.html" => {
                let html = "text/html; charset=utf-8";
                http::write_response(&mut bytes, 200, html, &[], &self.index_html, head_only);
                200
            }
            "/healthz" => {
                let (status, body): (u16, &[u8]) = match health {
                    Health::Ok => (200, b"ok\n"),
                    Health::RedisUnavailable => (503, b"redis unavailable\n"),
                };
                let text = "text/plain; charset=utf-8";
                http::write_response(&mut bytes, status, text, &[], body, head_only);
                status
            }
            "/metrics" => {
                let body = metrics();
                let text = "text/plain; version=0.0.4";
                http::write_response(&mut bytes, 200, text, &[], body.as_bytes(), head_only);
                200
            }
            _ => {
                http::write_error(&mut bytes, 404, &[], head_only);
                404
            }
        };
        Response {
            bytes,
            status,
            refusal: None,
        }
    }
}

/// A refusal: the status's short text body, with the headers it needs.
pub fn refuse(status: u16, headers: &[(&str, &str)], refusal: Refusal) -> Response {
    let mut bytes = Vec::new();
    http::write_error(&mut bytes, status, headers, false);
    Response {
        bytes,
        status,
        refusal: Some(refusal),
    }
}
