//! The HTTP/1.1 request head, parsed by hand, and plain responses.
//!
//! The head is everything up to and including the first `\r\n\r\n`
//! (PROTOCOL section 2). Parsing borrows from the buffer: a request line and
//! up to [`MAX_HEADERS`] header lines, names compared case-insensitively,
//! values trimmed of optional whitespace. Anything malformed is an
//! [`HttpError`], which the caller answers with 400.

/// Largest request head accepted; longer gets 431.
pub const MAX_HEAD_BYTES: usize = 8192;
/// More header lines than this in 8 KiB is not a browser; it is 400.
pub const MAX_HEADERS: usize = 100;

/// Where the head ends (the index just past `\r\n\r\n`), if it is complete.
/// `searched` bytes were already searched by an earlier call, so repeated
/// calls on a growing buffer stay linear.
pub fn find_head_end(buf: &[u8], searched: usize) -> Option<usize> {
    let from = searched.saturating_sub(3);
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

/// The interim answer to `Expect: 100-continue` (RFC 9110 section 10.1.1):
/// clients such as curl wait for it before sending a larger body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A parsed request head.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path without its query string.
    pub path: &'a str,
    /// `(major, minor)` of `HTTP/major.minor`.
    pub version: (u32, u32),
    headers: Vec<(&'a str, &'a str)>,
}

/// The head is not an HTTP request this server can read.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpError(pub &'static str);

impl<'a> Request<'a> {
    /// Parses a complete head (with or without the final blank line).
    pub fn parse(head: &'a [u8]) -> Result<Request<'a>, HttpError> {
        let text = std::str::from_utf8(head).map_err(|_| HttpError("head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let request_line = lines.next().ok_or(HttpError("empty head"))?;
        let mut parts = request_line.split(' ').filter(|p| !p.is_empty());
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HttpError("malformed request line"));
        };
        if !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(HttpError("malformed method"));
        }
        let version = parse_version(version).ok_or(HttpError("malformed HTTP version"))?;
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let mut headers = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or(HttpError("header without colon"))?;
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(HttpError("malformed header name"));
            }
            if headers.len() == MAX_HEADERS {
                return Err(HttpError("too many headers"));
            }
            headers.push((name, value.trim_matches([' ', '\t'])));
        }
        Ok(Request {
            method,
            path,
            version,
            headers,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers(name).next()
    }

    /// Every value of header `name`, in order.
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether any value of header `name`, read as a comma-separated list,
    /// holds `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
    }
}

fn parse_version(version: &str) -> Option<(u32, u32)> {
    let numbers = version.strip_prefix("HTTP/")?;
    let (major, minor) = numbers.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A plain HTTP status line's reason phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a complete plain response that ends the connection. With
/// `head_only` (a HEAD request) the headers announce the body but it is
/// not sent.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// A short plain-text error response.
pub fn write_error(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    head_only: bool,
) {
    let body = format!("{status} {}\n", reason_phrase(status));
    write_response(
        out,
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        head_only,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_across_calls() {
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(find_head_end(buf, 0), Some(27));
        assert_eq!(find_head_end(&buf[..26], 0), None);
        // Resuming with the terminator straddling the previous end.
        assert_eq!(find_head_end(buf, 25), Some(27));
        assert_eq!(find_head_end(b"", 0), None);
        assert_eq!(find_head_end(b"\r\n", 10), None);
    }

    #[test]
    fn parses_request_line_headers_and_query() {
        let req = Request::parse(
            b"GET /healthz?x=1 HTTP/1.1\r\nhost: a\r\nCONNECTION:keep-alive,  Upgrade \r\nUpgrade:\tWebSocket\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/healthz");
        assert_eq!(req.version, (1, 1));
        assert_eq!(req.header("Host"), Some("a"));
        assert!(req.has_token("connection", "upgrade"));
        assert!(req.has_token("Upgrade", "websocket"));
        assert!(!req.has_token("Connection", "close"));
        assert_eq!(req.header("missing"), None);
    }

    #[test]
    fn repeated_headers_are_all_searched() {
        let req = Request::parse(
            b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: upgrade\r\n\r\n",
        )
        .unwrap();
        assert!(req.has_token("Connection", "Upgrade"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTX/1.1\r\n\r\n",
            b"GET / HTTP/1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"G\xffT / HTTP/1.1\r\n\r\n",
            b"G-T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                Request::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("HTTP/1.0"), Some((1, 0)));
        assert_eq!(parse_version("HTTP/2.0"), Some((2, 0)));
        assert_eq!(parse_version("HTTP/1.1000"), None);
    }

    #[test]
    fn head_response_has_no_body() {
        let mut get = Vec::new();
        write_response(&mut get, 200, "text/plain", &[], b"ok\n", false);
        let mut head = Vec::new();
        write_response(&mut head, 200, "text/plain", &[], b"ok\n", true);
        assert!(get.ends_with(b"\r\n\r\nok\n"));
        assert!(head.ends_with(
            b"Content-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
        ));
    }
}
