//! The admin API of PROTOCOL section 11, decided without any I/O.
//!
//! The router calls [`Admin::request`] for a plain HTTP request whose path is
//! under `/api/` ([`is_admin_path`]) while the admin API is enabled, before
//! section 2's method check (the admin checks take the place of checks 4 and
//! 5 there). The answer is a [`Step`]:
//!
//! - [`Step::Respond`]: the request is decided (404, 405, 401, 411, 413, 400):
//!   write the [`Response`] and close;
//! - [`Step::ReadBody`]: read exactly `len` body bytes, still under the
//!   handshake deadline (the engine does, `Answer::ReadBody`), then call
//!   [`Admin::body`], which gives either a 400 or an [`Action`];
//! - [`Step::Act`]: perform the [`Action`] on the chat.
//!
//! The chat performs an [`Action`] and reports an [`Outcome`];
//! [`Action::answer`] turns it into the final [`Response`] (checks 8 and 9 of
//! the table are the chat's to know: lost cluster, unknown user).
//!
//! Check order, as in the table: path (404), method (405), token (401),
//! `Content-Length` (411), its size (413), the body (400), then the chat
//! (503, 404). Check 6 (a body that never completes) is the loop's deadline.

use super::chat::Color;
use crate::engine::http::{Request, write_response};
use serde_json::{Map, Value};
use std::fmt;
use subtle::ConstantTimeEq;

/// Largest request body accepted (check 5).
pub const MAX_BODY_BYTES: usize = 65536;
/// Longest admin token (the configuration checks 16 to 256).
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest kick `reason`, in Unicode scalar values.
pub const MAX_REASON_CHARS: usize = 100;
/// A close frame's reason fits in 125 bytes minus the 2-byte code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;
/// Content type of every admin response.
pub const CONTENT_TYPE: &str = "application/json";

/// Whether a plain HTTP request belongs to the admin API (when enabled).
pub fn is_admin_path(path: &str) -> bool {
    path.starts_with("/api/")
}

/// The three admin paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/users`
    Users,
    /// `POST /api/publish`
    Publish,
    /// `POST /api/kick`
    Kick,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Endpoint> {
        [Endpoint::Users, Endpoint::Publish, Endpoint::Kick]
            .into_iter()
            .find(|e| e.path() == path)
    }

    /// The endpoint's path (for the log).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Users => "/api/users",
            Endpoint::Publish => "/api/publish",
            Endpoint::Kick => "/api/kick",
        }
    }

    fn allows(self, method: &str) -> bool {
        match self {
            Endpoint::Users => method == "GET" || method == "HEAD",
            Endpoint::Publish | Endpoint::Kick => method == "POST",
        }
    }

    fn allow_header(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Endpoint::Users => &[("Allow", "GET, HEAD")],
            Endpoint::Publish | Endpoint::Kick => &[("Allow", "POST")],
        }
    }
}

/// A complete admin answer: always JSON, always `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Headers beyond the standard ones (`Allow`, `WWW-Authenticate`).
    pub headers: &'static [(&'static str, &'static str)],
    /// The JSON body (announced but not sent when `head_only`).
    pub body: Vec<u8>,
    /// A HEAD request: headers only.
    pub head_only: bool,
}

impl Response {
    /// `{"error": code, "message": message}` with `status`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let mut body = b"{\"error\":".to_vec();
        push_json_str(&mut body, code);
        body.extend_from_slice(b",\"message\":");
        push_json_str(&mut body, message);
        body.push(b'}');
        Response {
            status,
            headers: &[],
            body,
            head_only: false,
        }
    }

    fn ok(body: Vec<u8>) -> Response {
        Response {
            status: 200,
            headers: &[],
            body,
            head_only: false,
        }
    }

    fn with_headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Response {
        self.headers = headers;
        self
    }

    fn head(mut self, head_only: bool) -> Response {
        self.head_only = head_only;
        self
    }

    /// Appends the whole HTTP response (`Connection: close`) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_response(
            out,
            self.status,
            CONTENT_TYPE,
            self.headers,
            &self.body,
            self.head_only,
        );
    }
}

fn bad_request(message: &str) -> Response {
    Response::error(400, "bad_request", message)
}

/// What to do after the request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Decided: write the response and close.
    Respond(Response),
    /// Read exactly `len` bytes of body (0 is possible) before the
    /// handshake deadline, then call [`Admin::body`]. With
    /// `expect_continue`, first write `100 Continue`.
    ReadBody {
        endpoint: Endpoint,
        len: usize,
        expect_continue: bool,
    },
    /// Perform the action and answer with [`Action::answer`].
    Act(Action),
}

/// What the chat is asked to do. Names and texts are already checked and
/// trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// List every named user (cluster-wide with `--redis`).
    Users { head_only: bool },
    /// An `announce` event: to everyone (with an id, kept in the history)
    /// when `toname` is `None`, else to that user alone (matched
    /// case-insensitively; no id, not kept).
    Publish {
        message: String,
        toname: Option<String>,
    },
    /// Close that user's connection (matched case-insensitively) with 1008
    /// and `reason`: `kicked` or `kicked: TEXT`, at most 123 bytes.
    Kick { name: String, reason: String },
}

/// How the chat fared with an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The user list, as built by [`users_body`].
    Users(Vec<u8>),
    /// Published or kicked; `id` of a broadcast announcement.
    Done { id: Option<String> },
    /// `toname` or `name` names nobody connected (check 9).
    UnknownUser,
    /// The node has lost its cluster (check 8).
    Unavailable,
}

impl Action {
    /// The final response for this action's outcome.
    pub fn answer(&self, outcome: Outcome) -> Response {
        let head_only = matches!(self, Action::Users { head_only: true });
        let response = match outcome {
            Outcome::Unavailable => Response::error(
                503,
                "unavailable",
                "the server has lost its cluster; try again later",
            ),
            Outcome::UnknownUser => {
                let name = match self {
                    Action::Publish {
                        toname: Some(name), ..
                    }
                    | Action::Kick { name, .. } => name.as_str(),
                    _ => "",
                };
                Response::error(
                    404,
                    "unknown_user",
                    &format!("no user named {name} is connected"),
                )
            }
            Outcome::Users(body) => Response::ok(body),
            Outcome::Done { id: Some(id) } => {
                let mut body = b"{\"ok\":true,\"id\":".to_vec();
                push_json_str(&mut body, &id);
                body.push(b'}');
                Response::ok(body)
            }
            Outcome::Done { id: None } => Response::ok(b"{\"ok\":true}".to_vec()),
        };
        response.head(head_only)
    }
}

/// The body of `GET /api/users`: `{"users":[{"name":..,"color":..},...]}`.
pub fn users_body<'a>(users: impl IntoIterator<Item = (&'a str, Color)>) -> Vec<u8> {
    let mut body = b"{\"users\":[".to_vec();
    for (i, (name, color)) in users.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"name\":");
        push_json_str(&mut body, name);
        body.extend_from_slice(b",\"color\":");
        push_json_str(&mut body, color.as_str());
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// The admin API's settings: the token and `--max-chat-chars`.
pub struct Admin {
    /// The token, zero-padded, so that comparing takes the same time
    /// whatever its length.
    token: [u8; MAX_TOKEN_LEN],
    token_len: usize,
    max_chat_chars: usize,
}

impl fmt::Debug for Admin {
    // The token is never logged, not even through a stray `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("token", &"<hidden>")
            .field("max_chat_chars", &self.max_chat_chars)
            .finish()
    }
}

impl Admin {
    /// The admin API for `token`, as the configuration checked it (16 to
    /// 256 printable characters). A longer one would never match: it fails
    /// closed.
    pub fn new(token: &str, max_chat_chars: usize) -> Admin {
        let mut padded = [0u8; MAX_TOKEN_LEN];
        for (dst, src) in padded.iter_mut().zip(token.as_bytes()) {
            *dst = *src;
        }
        // No header value is usize::MAX bytes long.
        let token_len = if token.len() <= MAX_TOKEN_LEN {
            token.len()
        } else {
            usize::MAX
        };
        Admin {
            token: padded,
            token_len,
            max_chat_chars,
        }
    }

    /// Checks 1-5 on the request head.
    pub fn request(&self, req: &Request) -> Step {
        let head_only = req.method == "HEAD";
        let Some(endpoint) = Endpoint::from_path(req.path) else {
            return Step::Respond(
                Response::error(404, "not_found", "no such admin path").head(head_only),
            );
        };
        if !endpoint.allows(req.method) {
            return Step::Respond(
                Response::error(
                    405,
                    "method_not_allowed",
                    "this path does not take that method",
                )
                .with_headers(endpoint.allow_header())
                .head(head_only),
            );
        }
        if !self.authorized(req) {
            return Step::Respond(
                Response::error(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer followed by the admin token",
                )
                .with_headers(&[("WWW-Authenticate", "Bearer")])
                .head(head_only),
            );
        }
        if endpoint == Endpoint::Users {
            return Step::Act(Action::Users { head_only });
        }
        // A body must come with its length: chunked encoding is refused even
        // next to a Content-Length (RFC 9112 section 6.1 would let it
        // override, and request smuggling lives in that gap).
        if req.header("Transfer-Encoding").is_some() {
            return Step::Respond(Response::error(
                411,
                "length_required",
                "send the body with Content-Length (chunked is not accepted)",
            ));
        }
        let len = match content_length(req) {
            None => {
                return Step::Respond(Response::error(
                    411,
                    "length_required",
                    "send the body with Content-Length",
                ));
            }
            Some(Err(())) => return Step::Respond(bad_request("malformed Content-Length")),
            Some(Ok(len)) => len,
        };
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_BODY_BYTES => len,
            _ => {
                return Step::Respond(Response::error(
                    413,
                    "too_large",
                    "the body is limited to 65536 bytes",
                ));
            }
        };
        Step::ReadBody {
            endpoint,
            len,
            expect_continue: req.has_token("Expect", "100-continue"),
        }
    }

    /// Check 7 on a complete body.
    pub fn body(&self, endpoint: Endpoint, body: &[u8]) -> Result<Action, Response> {
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
            return Err(bad_request("the body must be a JSON object"));
        };
        match endpoint {
            // Not reached through `request` (users takes no body).
            Endpoint::Users => Ok(Action::Users { head_only: false }),
            Endpoint::Publish => {
                let message = required_string(&mut object, "message")?;
                let message = message.trim();
                let chars = message.chars().count();
                if chars == 0 {
                    return Err(bad_request("message is empty"));
                }
                if chars > self.max_chat_chars {
                    return Err(bad_request(&format!(
                        "message is over {} characters",
                        self.max_chat_chars
                    )));
                }
                let toname = optional_string(&mut object, "toname")?
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty());
                Ok(Action::Publish {
                    message: message.to_string(),
                    toname,
                })
            }
            Endpoint::Kick => {
                let name = required_string(&mut object, "name")?;
                let reason = optional_string(&mut object, "reason")?;
                let reason = reason.as_deref().map(str::trim).unwrap_or_default();
                if reason.chars().count() > MAX_REASON_CHARS {
                    return Err(bad_request("reason is over 100 characters"));
                }
                Ok(Action::Kick {
                    name: name.trim().to_string(),
                    reason: close_reason(reason),
                })
            }
        }
    }

    /// Check 3: exactly one `Authorization` header, `Bearer` in any case,
    /// one or more spaces, then exactly the token.
    fn authorized(&self, req: &Request) -> bool {
        let mut values = req.headers("Authorization");
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let Some(scheme) = value.get(..6) else {
            return false;
        };
        let Some(rest) = value.get(6..) else {
            return false;
        };
        let given = rest.trim_start_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer") || given.len() == rest.len() {
            return false;
        }
        self.token_matches(given.as_bytes())
    }

    /// Compares in time independent of the token (its bytes and length).
    fn token_matches(&self, given: &[u8]) -> bool {
        let mut padded = [0u8; MAX_TOKEN_LEN];
        for (dst, src) in padded.iter_mut().zip(given) {
            *dst = *src;
        }
        let same_len = (given.len() as u64).ct_eq(&(self.token_len as u64));
        bool::from(padded[..].ct_eq(&self.token[..]) & same_len)
    }
}

/// `Content-Length`: `None` when absent; every value (repeated headers and
/// comma lists included) must be the same run of digits. A number too big
/// for `u64` saturates (and so gets 413, not 400).
fn content_length(req: &Request) -> Option<Result<u64, ()>> {
    let mut found: Option<u64> = None;
    for value in req.headers("Content-Length").flat_map(|v| v.split(',')) {
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Err(()));
        }
        let n = value.bytes().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        match found {
            Some(previous) if previous != n => return Some(Err(())),
            _ => found = Some(n),
        }
    }
    found.map(Ok)
}

fn required_string(object: &mut Map<String, Value>, field: &str) -> Result<String, Response> {
    match object.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad_request(&format!("{field} must be a string"))),
        None => Err(bad_request(&format!("{field} is required"))),
    }
}

/// A string field where `null` counts as absent.
fn optional_string(
    object: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, Response> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_request(&format!("{field} must be a string"))),
    }
}

/// `kicked` or `kicked: REASON`, cut to 123 bytes at a character boundary.
pub fn close_reason(reason: &str) -> String {
    let mut text = if reason.is_empty() {
        "kicked".to_string()
    } else {
        format!("kicked: {reason}")
    };
    let mut cut = text.len().min(MAX_CLOSE_REASON_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}

/// The info line for one admin request: peer, method and path, and the
/// status sent (`None`: closed without a response, check 6). Never the
/// body, the headers or the token; the path is escaped so that a hostile
/// path cannot forge log lines.
pub fn log_line(peer: impl fmt::Display, method: &str, path: &str, status: Option<u16>) -> String {
    let status = match status {
        Some(status) => status.to_string(),
        None => "closed without a response".to_string(),
    };
    format!(
        "admin request from {peer}: {} {} -> {status}",
        method.escape_debug(),
        path.escape_debug()
    )
}

/// Logs [`log_line`] at info.
pub fn log_request(peer: impl fmt::Display, method: &str, path: &str, status: Option<u16>) {
    log::info!("{}", log_line(peer, method, path, status));
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-0123456789";

    fn admin() -> Admin {
        Admin::new(TOKEN, 20)
    }

    fn step(head: &str) -> Step {
        let head = format!("{head}\r\n\r\n");
        let req = Request::parse(head.as_bytes()).unwrap();
        admin().request(&req)
    }

    fn auth() -> String {
        format!("Authorization: Bearer {TOKEN}")
    }

    fn status(step: &Step) -> u16 {
        match step {
            Step::Respond(r) => r.status,
            other => panic!("not decided: {other:?}"),
        }
    }

    fn json(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn body(endpoint: Endpoint, text: &str) -> Result<Action, Response> {
        admin().body(endpoint, text.as_bytes())
    }

    fn bad(endpoint: Endpoint, text: &str) -> String {
        match body(endpoint, text) {
            Err(r) => {
                assert_eq!(r.status, 400, "{text}");
                assert_eq!(json(&r)["error"], "bad_request");
                json(&r)["message"].as_str().unwrap().to_string()
            }
            Ok(a) => panic!("{text} accepted: {a:?}"),
        }
    }

    #[test]
    fn admin_paths() {
        assert!(is_admin_path("/api/users"));
        assert!(is_admin_path("/api/"));
        assert!(is_admin_path("/api/nope"));
        assert!(!is_admin_path("/api"));
        assert!(!is_admin_path("/apiusers"));
        assert!(!is_admin_path("/"));
    }

    /// Each row of the table wins over every later one.
    #[test]
    fn checks_in_table_order() {
        let a = auth();
        // 1: unknown path wins over method, token, length.
        for head in [
            "DELETE /api/nope HTTP/1.1",
            "POST /api/users/ HTTP/1.1\r\nTransfer-Encoding: chunked",
            "GET /api/ HTTP/1.1",
        ] {
            assert_eq!(status(&step(head)), 404, "{head}");
        }
        // 2: 405 before 401 (no token at all), with the path's Allow.
        match step("POST /api/users HTTP/1.1") {
            Step::Respond(r) => {
                assert_eq!(r.status, 405);
                assert_eq!(r.headers, &[("Allow", "GET, HEAD")]);
                assert_eq!(json(&r)["error"], "method_not_allowed");
            }
            other => panic!("{other:?}"),
        }
        for head in [
            "GET /api/publish HTTP/1.1",
            "HEAD /api/kick HTTP/1.1",
            "PUT /api/kick HTTP/1.1\r\nContent-Length: 999999",
            "post /api/publish HTTP/1.1",
        ] {
            match step(head) {
                Step::Respond(r) => {
                    assert_eq!(r.status, 405, "{head}");
                    assert_eq!(r.headers, &[("Allow", "POST")]);
                }
                other => panic!("{other:?}"),
            }
        }
        // 3: 401 before 411 and 413.
        for head in [
            "POST /api/publish HTTP/1.1",
            "POST /api/publish HTTP/1.1\r\nContent-Length: 99999999",
            "POST /api/kick HTTP/1.1\r\nAuthorization: Bearer wrong-token-0123456789",
            "GET /api/users HTTP/1.1\r\nAuthorization: Basic abc",
        ] {
            match step(head) {
                Step::Respond(r) => {
                    assert_eq!(r.status, 401, "{head}");
                    assert_eq!(r.headers, &[("WWW-Authenticate", "Bearer")]);
                    assert_eq!(json(&r)["error"], "unauthorized");
                }
                other => panic!("{other:?}"),
            }
        }
        // 4: 411 before 413 (a huge Content-Length next to chunked).
        for head in [
            format!("POST /api/publish HTTP/1.1\r\n{a}"),
            format!("POST /api/publish HTTP/1.1\r\n{a}\r\nTransfer-Encoding: chunked"),
            format!(
                "POST /api/kick HTTP/1.1\r\n{a}\r\nContent-Length: 99999999\r\nTransfer-Encoding: chunked"
            ),
        ] {
            assert_eq!(status(&step(&head)), 411, "{head}");
        }
        // 5: 413 over 64 KiB, even beyond u64.
        for len in ["65537", "99999999999999999999999999"] {
            let head = format!("POST /api/publish HTTP/1.1\r\n{a}\r\nContent-Length: {len}");
            match step(&head) {
                Step::Respond(r) => {
                    assert_eq!(r.status, 413);
                    assert_eq!(json(&r)["error"], "too_large");
                }
                other => panic!("{other:?}"),
            }
        }
        // Exactly 64 KiB is read.
        let head = format!("POST /api/kick HTTP/1.1\r\n{a}\r\nContent-Length: 65536");
        assert_eq!(
            step(&head),
            Step::ReadBody {
                endpoint: Endpoint::Kick,
                len: 65536,
                expect_continue: false
            }
        );
    }

    #[test]
    fn malformed_content_length_is_400() {
        let a = auth();
        for value in ["", "-1", "1.0", "0x10", "12, 13", "+5", "1 2"] {
            let head = format!("POST /api/publish HTTP/1.1\r\n{a}\r\nContent-Length: {value}");
            assert_eq!(status(&step(&head)), 400, "{value:?}");
        }
        // The same length repeated is one length.
        let head = format!(
            "POST /api/publish HTTP/1.1\r\n{a}\r\nContent-Length: 12\r\nContent-Length: 12, 12"
        );
        assert!(matches!(step(&head), Step::ReadBody { len: 12, .. }));
        let head = format!("POST /api/publish HTTP/1.1\r\n{a}\r\nContent-Length: 0");
        assert!(matches!(step(&head), Step::ReadBody { len: 0, .. }));
    }

    #[test]
    fn expect_continue_is_reported() {
        let head = format!(
            "POST /api/publish HTTP/1.1\r\n{}\r\nContent-Length: 5\r\nExpect: 100-Continue",
            auth()
        );
        assert_eq!(
            step(&head),
            Step::ReadBody {
                endpoint: Endpoint::Publish,
                len: 5,
                expect_continue: true
            }
        );
    }

    #[test]
    fn bearer_rules() {
        let ok = |value: &str| {
            let head = format!("GET /api/users HTTP/1.1\r\nAuthorization: {value}");
            matches!(step(&head), Step::Act(Action::Users { head_only: false }))
        };
        assert!(ok(&format!("Bearer {TOKEN}")));
        assert!(ok(&format!("bearer {TOKEN}")));
        assert!(ok(&format!("BEARER    {TOKEN}")));
        // Trailing whitespace is not part of a header value.
        assert!(ok(&format!("Bearer {TOKEN}  ")));
        assert!(!ok(&format!("Bearer{TOKEN}")));
        assert!(!ok(&format!("Bearer\t{TOKEN}")));
        assert!(!ok(&format!("Bearer {TOKEN}x")));
        assert!(!ok(&format!("Bearer {}", &TOKEN[1..])));
        assert!(!ok(&format!("Bearer {}", TOKEN.to_uppercase())));
        assert!(!ok(&format!("Bearer {TOKEN} {TOKEN}")));
        assert!(!ok(&format!("Token {TOKEN}")));
        assert!(!ok("Bearer "));
        assert!(!ok("Bearer"));
        assert!(!ok("Beäre"));
        assert!(!ok(&format!("Bearer {}", "a".repeat(300))));
        // Two Authorization headers are refused even if one is right.
        let head = format!(
            "GET /api/users HTTP/1.1\r\nAuthorization: Bearer x\r\nAuthorization: Bearer {TOKEN}"
        );
        assert_eq!(status(&step(&head)), 401);
        let head = format!(
            "GET /api/users HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nAuthorization: Bearer {TOKEN}"
        );
        assert_eq!(status(&step(&head)), 401);
    }

    #[test]
    fn head_requests_get_headers_only() {
        match step("HEAD /api/users HTTP/1.1") {
            Step::Respond(r) => {
                assert_eq!(r.status, 401);
                assert!(r.head_only);
                let mut out = Vec::new();
                r.write(&mut out);
                let text = String::from_utf8(out).unwrap();
                assert!(text.ends_with("\r\n\r\n"), "{text}");
                assert!(text.contains(&format!("Content-Length: {}\r\n", r.body.len())));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            step("HEAD /api/nope HTTP/1.1"),
            Step::Respond(Response {
                status: 404,
                head_only: true,
                ..
            })
        ));
        let head = format!("HEAD /api/users HTTP/1.1\r\n{}", auth());
        let Step::Act(action) = step(&head) else {
            panic!("HEAD /api/users not accepted");
        };
        assert_eq!(action, Action::Users { head_only: true });
        let r = action.answer(Outcome::Users(users_body([("a", Color(*b"007AFF"))])));
        assert_eq!((r.status, r.head_only), (200, true));
        let r = action.answer(Outcome::Unavailable);
        assert_eq!((r.status, r.head_only), (503, true));
    }

    #[test]
    fn responses_are_json_and_close() {
        let r = Response::error(404, "not_found", "no \"such\" path");
        let mut out = Vec::new();
        r.write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["message"], "no \"such\" path");
        let mut out = Vec::new();
        Response::error(401, "unauthorized", "x")
            .with_headers(&[("WWW-Authenticate", "Bearer")])
            .write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"));
        for (status, phrase) in [(411, "Length Required"), (413, "Content Too Large")] {
            let mut out = Vec::new();
            Response::error(status, "x", "y").write(&mut out);
            assert!(out.starts_with(format!("HTTP/1.1 {status} {phrase}\r\n").as_bytes()));
        }
    }

    #[test]
    fn publish_bodies() {
        let p = Endpoint::Publish;
        assert_eq!(
            body(p, r#"{"message": "  hello  ", "extra": [1]}"#),
            Ok(Action::Publish {
                message: "hello".into(),
                toname: None
            })
        );
        for toname in ["null", "\"\"", "\"  \\t \""] {
            assert_eq!(
                body(p, &format!(r#"{{"message":"hi","toname":{toname}}}"#)),
                Ok(Action::Publish {
                    message: "hi".into(),
                    toname: None
                }),
                "{toname}"
            );
        }
        assert_eq!(
            body(p, r#"{"message":"hi","toname":" Bob "}"#),
            Ok(Action::Publish {
                message: "hi".into(),
                toname: Some("Bob".into())
            })
        );
        // Exactly the limit (20) in multibyte characters, after trimming.
        let twenty = "é".repeat(20);
        assert!(body(p, &format!(r#"{{"message":" {twenty}\n"}}"#)).is_ok());
        assert!(bad(p, &format!(r#"{{"message":"{twenty}x"}}"#)).contains("over 20"));
        assert!(bad(p, r#"{"message":" \u00a0\t "}"#).contains("empty"));
        assert!(bad(p, r#"{}"#).contains("message is required"));
        assert!(bad(p, r#"{"message":null}"#).contains("must be a string"));
        assert!(bad(p, r#"{"message":5}"#).contains("must be a string"));
        assert!(bad(p, r#"{"message":["a"]}"#).contains("must be a string"));
        assert!(bad(p, r#"{"message":"hi","toname":3}"#).contains("toname"));
        assert!(bad(p, r#"{"message":"hi","toname":{}}"#).contains("toname"));
        assert!(bad(p, r#"{"message":"hi","toname":false}"#).contains("toname"));
    }

    #[test]
    fn bodies_that_are_not_json_objects() {
        for text in [
            "",
            " ",
            "null",
            "[]",
            "\"message\"",
            "42",
            "{\"message\":\"hi\"",
            "{\"message\":\"hi\"} x",
            "{\"message\":\"\\ud800\"}",
            "\u{feff}{\"message\":\"hi\"}",
        ] {
            for endpoint in [Endpoint::Publish, Endpoint::Kick] {
                assert!(bad(endpoint, text).contains("JSON object"), "{text:?}");
            }
        }
        assert!(
            admin()
                .body(Endpoint::Publish, b"{\"message\":\"\xff\"}")
                .is_err()
        );
        // Deep nesting is an error, not a stack overflow.
        let deep = format!(
            "{{\"message\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(body(Endpoint::Publish, &deep).is_err());
    }

    #[test]
    fn kick_bodies_and_reasons() {
        let k = Endpoint::Kick;
        assert_eq!(
            body(k, r#"{"name":" Alice "}"#),
            Ok(Action::Kick {
                name: "Alice".into(),
                reason: "kicked".into()
            })
        );
        for reason in ["null", "\"\"", "\"   \""] {
            assert_eq!(
                body(k, &format!(r#"{{"name":"a","reason":{reason}}}"#)),
                Ok(Action::Kick {
                    name: "a".into(),
                    reason: "kicked".into()
                })
            );
        }
        assert_eq!(
            body(k, r#"{"name":"a","reason":" spam "}"#),
            Ok(Action::Kick {
                name: "a".into(),
                reason: "kicked: spam".into()
            })
        );
        assert!(bad(k, r#"{}"#).contains("name is required"));
        assert!(bad(k, r#"{"name":null}"#).contains("name must be a string"));
        assert!(bad(k, r#"{"name":1}"#).contains("name must be a string"));
        assert!(bad(k, r#"{"name":"a","reason":1}"#).contains("reason must be a string"));
        // 100 characters pass, 101 do not.
        let hundred = "x".repeat(100);
        assert!(body(k, &format!(r#"{{"name":"a","reason":"{hundred}"}}"#)).is_ok());
        assert!(bad(k, &format!(r#"{{"name":"a","reason":"{hundred}y"}}"#)).contains("over 100"));
        // An empty name is not a 400: it names nobody (404 from the chat).
        assert!(
            matches!(body(k, r#"{"name":"  "}"#), Ok(Action::Kick { name, .. }) if name.is_empty())
        );
    }

    #[test]
    fn close_reason_is_cut_at_a_character_boundary() {
        assert_eq!(close_reason(""), "kicked");
        assert_eq!(close_reason("bye"), "kicked: bye");
        // "kicked: " is 8 bytes; 100 three-byte characters would be 308.
        let cut = close_reason(&"€".repeat(100));
        assert_eq!(cut.len(), 122);
        assert_eq!(cut, format!("kicked: {}", "€".repeat(38)));
        // Four-byte characters: 8 + 28 * 4 = 120, the 29th would end at 124.
        let cut = close_reason(&"😀".repeat(100));
        assert_eq!(cut.len(), 120);
        // ASCII fills the 123 bytes exactly.
        let cut = close_reason(&"x".repeat(100));
        assert_eq!(cut.len(), 108);
        let cut = close_reason(&format!("{}é", "x".repeat(114)));
        assert_eq!(cut.len(), 122);
        assert_eq!(close_reason(&"x".repeat(200)).len(), 123);
        // Through the body path with multibyte text.
        match body(
            Endpoint::Kick,
            &format!(r#"{{"name":"a","reason":"{}"}}"#, "ü".repeat(100)),
        ) {
            Ok(Action::Kick { reason, .. }) => {
                assert!(reason.len() <= MAX_CLOSE_REASON_BYTES);
                assert_eq!(reason, format!("kicked: {}", "ü".repeat(57)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_for_each_outcome() {
        let publish = Action::Publish {
            message: "m".into(),
            toname: Some("Bob".into()),
        };
        let r = publish.answer(Outcome::UnknownUser);
        assert_eq!(r.status, 404);
        assert_eq!(json(&r)["error"], "unknown_user");
        assert!(json(&r)["message"].as_str().unwrap().contains("Bob"));
        let r = publish.answer(Outcome::Done { id: None });
        assert_eq!((r.status, json(&r)), (200, serde_json::json!({"ok": true})));
        let r = publish.answer(Outcome::Done {
            id: Some("abc-1".into()),
        });
        assert_eq!(json(&r), serde_json::json!({"ok": true, "id": "abc-1"}));
        let kick = Action::Kick {
            name: "eve".into(),
            reason: "kicked".into(),
        };
        let r = kick.answer(Outcome::UnknownUser);
        assert_eq!(r.status, 404);
        assert!(json(&r)["message"].as_str().unwrap().contains("eve"));
        let r = kick.answer(Outcome::Unavailable);
        assert_eq!(r.status, 503);
        assert_eq!(json(&r)["error"], "unavailable");
        assert!(!r.head_only);
        let users = Action::Users { head_only: false };
        let r = users.answer(Outcome::Users(users_body([
            ("alice", Color(*b"007AFF")),
            ("b\"o\"b", Color(*b"FF7000")),
        ])));
        assert_eq!(
            json(&r),
            serde_json::json!({"users": [
                {"name": "alice", "color": "007AFF"},
                {"name": "b\"o\"b", "color": "FF7000"}
            ]})
        );
        assert_eq!(users_body(std::iter::empty()), b"{\"users\":[]}".to_vec());
    }

    #[test]
    fn the_token_is_never_shown_and_a_longer_one_never_matches() {
        assert!(!format!("{:?}", admin()).contains(TOKEN));
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        let a = Admin::new(&long, 10);
        assert!(!a.token_matches(long.as_bytes()));
        assert!(!a.token_matches(&long.as_bytes()[..MAX_TOKEN_LEN]));
    }

    #[test]
    fn log_lines_hold_no_token_or_body() {
        let line = log_line("127.0.0.1:5000", "POST", "/api/kick", Some(200));
        assert_eq!(
            line,
            "admin request from 127.0.0.1:5000: POST /api/kick -> 200"
        );
        let line = log_line("[::1]:1", "GET", "/api/x\n\u{1b}[31mforged", None);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(line.ends_with("closed without a response"));
    }
}
