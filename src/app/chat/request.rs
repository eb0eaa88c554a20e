//! What a client message asks for (PROTOCOL section 3), checked for JSON
//! types, plus the rules that need no chat state: name syntax (section 5)
//! and the rate bucket.

use super::event::Color;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Longest name in Unicode scalar values (after trimming).
pub const MAX_NAME_CHARS: usize = 32;
/// The sliding window of the flood rule.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// A rejected message: the error code and its human-readable text.
#[derive(Debug)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

pub fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// A client message whose fields have the right types.
pub enum Request {
    Chat {
        name: Option<String>,
        message: String,
        color: Option<Color>,
        toname: Option<String>,
    },
    Join {
        name: String,
        color: Option<Color>,
    },
    Users,
    History,
}

/// Parses one text message: `bad_json` (check 2) or `bad_request` (check 3).
pub fn parse(text: &[u8]) -> Result<Request, Rejection> {
    // serde_json refuses lone surrogate escapes such as "\ud800".
    let value: Value = serde_json::from_slice(text)
        .map_err(|_| reject("bad_json", "the message is not a JSON object"))?;
    let Value::Object(object) = value else {
        return Err(reject("bad_json", "the message is not a JSON object"));
    };
    parse_object(object)
}

fn parse_object(mut object: Map<String, Value>) -> Result<Request, Rejection> {
    let kind = match object.get("type") {
        None => "message",
        Some(Value::String(s)) => match s.as_str() {
            "message" => "message",
            "join" => "join",
            // Every other field of these two is ignored (sections 3 and 9).
            "users" => return Ok(Request::Users),
            "history" => return Ok(Request::History),
            _ => return Err(reject("bad_request", "unknown message type")),
        },
        Some(_) => return Err(reject("bad_request", "type must be a string")),
    };
    let color = object
        .get("color")
        .and_then(Value::as_str)
        .and_then(Color::parse);
    let name = match object.remove("name") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(reject("bad_request", "name must be a string")),
    };
    if kind == "join" {
        return match name {
            Some(name) => Ok(Request::Join { name, color }),
            None => Err(reject("bad_request", "join needs a name")),
        };
    }
    let message = match object.remove("message") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(reject("bad_request", "message must be a string")),
        None => return Err(reject("bad_request", "message is required")),
    };
    let toname = match object.remove("toname") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let trimmed = s.trim();
            (!trimmed.is_empty()).then(|| trimmed.to_string())
        }
        Some(_) => return Err(reject("bad_request", "toname must be a string")),
    };
    Ok(Request::Chat {
        name,
        message,
        color,
        toname,
    })
}

/// Check 4: a name is 1-32 scalar values after trimming, no controls.
pub fn valid_name(name: &str) -> Result<&str, Rejection> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(reject(
            "invalid_name",
            format!("a name is 1 to {MAX_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(name)
}

/// One connection's token bucket and record of rejections (section 5).
/// Kept small (it sits in every slab entry): the refill time is in
/// milliseconds on the chat's clock, wrapping after 49 days, which at worst
/// refills one bucket too little once.
#[derive(Debug)]
pub struct RateBucket {
    tokens: f32,
    refilled_ms: u32,
    /// Times of recent rejections (none, unallocated, for clients that
    /// behave). Boxed: 8 bytes in every slab entry instead of 32.
    #[allow(clippy::box_collection)]
    rejections: Option<Box<VecDeque<Instant>>>,
}

impl RateBucket {
    /// A full bucket: capacity twice the rate.
    pub fn new(rate: u32, now_ms: u32) -> RateBucket {
        RateBucket {
            tokens: 2.0 * rate as f32,
            refilled_ms: now_ms,
            rejections: None,
        }
    }

    /// Refills (rate per second, capacity twice that) and takes one token
    /// if there is one.
    pub fn take(&mut self, rate: u32, now_ms: u32) -> bool {
        let rate = f64::from(rate);
        let elapsed = f64::from(now_ms.wrapping_sub(self.refilled_ms)) / 1000.0;
        self.tokens = (f64::from(self.tokens) + elapsed * rate).min(2.0 * rate) as f32;
        self.refilled_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Records a rejection; true when more than ten times the rate were
    /// rejected within the last ten seconds.
    pub fn is_flooding(&mut self, rate: u32, now: Instant) -> bool {
        let rejections = self.rejections.get_or_insert_with(Box::default);
        while rejections
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= FLOOD_WINDOW)
        {
            rejections.pop_front();
        }
        rejections.push_back(now);
        rejections.len() > 10 * rate as usize
    }
}
