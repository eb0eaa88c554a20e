//! The admin API's request path: `Admin::request` on a request head, then
//! `Admin::body` on the body bytes, then `Action::answer` for each outcome.
//!
//! The input is what a client sends: a request head (up to `\r\n\r\n`) and
//! the bytes behind it, of which the body is the first `Content-Length`.
//! An input without a complete head is one whole body, for publish or kick
//! (by its length), so that the JSON checks are fuzzed on their own too.
//! The token is `fuzz-admin-token-0123`; `--max-chat-chars` is derived from
//! the input's length (1 to 40).
//!
//! Invariants beyond "no panic":
//! - every decided response is one of the table's statuses, JSON with an
//!   `error` field, with `Allow` on 405 and `WWW-Authenticate` on 401;
//! - only a request carrying the exact token gets past 401, only POSTs of
//!   the two body paths read a body, never more than 64 KiB;
//! - an accepted publish has a trimmed, non-empty message within the limit
//!   and a `toname` that is trimmed and non-empty or absent, all agreeing
//!   with an independent reading of the JSON;
//! - an accepted kick has a trimmed name and a close reason `kicked` or
//!   `kicked: ...` of at most 123 bytes that is a prefix of the full reason;
//! - a refused body is a 400 `bad_request`;
//! - every answer to an action is valid JSON, 200 only for success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wschat::app::admin::{
    Action, Admin, Endpoint, MAX_BODY_BYTES, Outcome, Response, Step, users_body,
};
use wschat::app::chat::Color;
use wschat::engine::http::{self, Request};

const TOKEN: &str = "fuzz-admin-token-0123";

fn check_error(response: &Response) {
    let body: Value = serde_json::from_slice(&response.body).expect("error body is not JSON");
    assert!(body["error"].is_string() && body["message"].is_string());
    assert_ne!(response.status, 200);
}

fn check_body(admin: &Admin, endpoint: Endpoint, body: &[u8], max_chars: usize) {
    let parsed: Option<serde_json::Map<String, Value>> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let action = match admin.body(endpoint, body) {
        Err(response) => {
            assert_eq!(response.status, 400);
            check_error(&response);
            let v: Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(v["error"], "bad_request");
            return;
        }
        Ok(action) => action,
    };
    let map = parsed.expect("a body that is not a JSON object was accepted");
    match &action {
        Action::Publish { message, toname } => {
            assert_eq!(endpoint, Endpoint::Publish);
            let raw = map["message"].as_str().expect("message not a string");
            assert_eq!(message, raw.trim());
            assert!(!message.is_empty() && message.chars().count() <= max_chars);
            match map.get("toname") {
                None | Some(Value::Null) => assert!(toname.is_none()),
                Some(Value::String(t)) if t.trim().is_empty() => assert!(toname.is_none()),
                Some(Value::String(t)) => assert_eq!(toname.as_deref(), Some(t.trim())),
                Some(other) => panic!("toname {other} accepted"),
            }
        }
        Action::Kick { name, reason } => {
            assert_eq!(endpoint, Endpoint::Kick);
            let raw = map["name"].as_str().expect("name not a string");
            assert_eq!(name, raw.trim());
            assert!(reason.len() <= 123);
            let full = match map.get("reason") {
                None | Some(Value::Null) => "kicked".to_string(),
                Some(Value::String(r)) if r.trim().is_empty() => "kicked".to_string(),
                Some(Value::String(r)) => {
                    assert!(r.trim().chars().count() <= 100);
                    format!("kicked: {}", r.trim())
                }
                Some(other) => panic!("reason {other} accepted"),
            };
            assert!(full.starts_with(reason.as_str()));
            // Cut only as much as needed: one more character would not fit.
            if let Some(next) = full[reason.len()..].chars().next() {
                assert!(reason.len() + next.len_utf8() > 123);
            }
        }
        Action::Users { .. } => panic!("a body produced a users action"),
    }
    check_answers(&action);
}

fn check_answers(action: &Action) {
    for outcome in [
        Outcome::Users(users_body([("a\"b", Color(*b"007AFF"))])),
        Outcome::Done { id: None },
        Outcome::Done {
            id: Some("abc-1".into()),
        },
        Outcome::UnknownUser,
        Outcome::Unavailable,
    ] {
        let ok = matches!(outcome, Outcome::Users(_) | Outcome::Done { .. });
        let response = action.answer(outcome);
        let _: Value = serde_json::from_slice(&response.body).expect("answer is not JSON");
        assert_eq!(response.status == 200, ok);
        let mut out = Vec::new();
        response.write(&mut out);
        assert!(http::find_head_end(&out, 0).is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let max_chars = 1 + data.len() % 40;
    let admin = Admin::new(TOKEN, max_chars);

    let Some(end) = http::find_head_end(data, 0) else {
        let endpoint = if data.len() % 2 == 0 {
            Endpoint::Publish
        } else {
            Endpoint::Kick
        };
        check_body(&admin, endpoint, data, max_chars);
        return;
    };
    let Ok(request) = Request::parse(&data[..end]) else {
        return;
    };
    let authorized = request.headers("Authorization").count() == 1
        && request.header("Authorization").is_some_and(|v| {
            v.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
                && v.get(6..)
                    .is_some_and(|r| r.starts_with(' ') && r.trim_start_matches(' ') == TOKEN)
        });
    match admin.request(&request) {
        Step::Respond(response) => {
            check_error(&response);
            assert_eq!(response.head_only, request.method == "HEAD");
            match response.status {
                404 => {}
                405 => assert_eq!(response.headers.first().map(|h| h.0), Some("Allow")),
                401 => {
                    assert!(!authorized);
                    assert_eq!(response.headers, &[("WWW-Authenticate", "Bearer")]);
                }
                400 | 411 | 413 => {
                    assert!(authorized);
                    assert_eq!(request.method, "POST");
                }
                other => panic!("status {other} from the head checks"),
            }
            let mut out = Vec::new();
            response.write(&mut out);
            assert!(http::find_head_end(&out, 0).is_some());
        }
        Step::Act(action) => {
            assert!(authorized);
            assert_eq!(request.path, "/api/users");
            assert!(matches!(action, Action::Users { .. }));
            check_answers(&action);
        }
        Step::ReadBody { endpoint, len, .. } => {
            assert!(authorized);
            assert_eq!(request.method, "POST");
            assert!(request.header("Transfer-Encoding").is_none());
            assert!(len <= MAX_BODY_BYTES);
            // The engine reads exactly `len` bytes; what follows is ignored.
            if let Some(body) = data[end..].get(..len) {
                check_body(&admin, endpoint, body, max_chars);
            }
        }
    }
});
