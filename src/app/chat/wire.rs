//! The chat's outgoing JSON (PROTOCOL section 4), written by hand into a
//! reused buffer and framed once: every recipient of a broadcast gets the
//! same bytes, and nothing is serialised per recipient.

use super::event::Color;
use crate::engine::frame::{Opcode, encode_frame};
use std::io::Write;

/// Scratch space for one outgoing message: its JSON, then its frame.
#[derive(Debug, Default)]
pub struct Wire {
    json: Vec<u8>,
    frame: Vec<u8>,
}

impl Wire {
    pub fn new() -> Wire {
        Wire {
            json: Vec::with_capacity(512),
            frame: Vec::with_capacity(512),
        }
    }

    /// The JSON of the message last built (what its frame carries): the
    /// history keeps it exactly as delivered.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    fn seal(&mut self) -> &[u8] {
        self.frame.clear();
        encode_frame(&mut self.frame, Opcode::Text, &self.json);
        &self.frame
    }

    pub fn error(&mut self, code: &str, message: &str) -> &[u8] {
        self.json.clear();
        self.json
            .extend_from_slice(b"{\"type\":\"error\",\"code\":");
        push_str(&mut self.json, code);
        self.json.extend_from_slice(b",\"message\":");
        push_str(&mut self.json, message);
        self.json.push(b'}');
        self.seal()
    }

    /// A `system` event; `color` for join and rename (v2), `from` for rename.
    pub fn system(
        &mut self,
        event: &str,
        name: &str,
        from: Option<&str>,
        color: Option<Color>,
        message: &str,
    ) -> &[u8] {
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"{\"type\":\"system\",\"event\":");
        push_str(json, event);
        json.extend_from_slice(b",\"name\":");
        push_str(json, name);
        if let Some(from) = from {
            json.extend_from_slice(b",\"from\":");
            push_str(json, from);
        }
        if let Some(color) = color {
            json.extend_from_slice(b",\"color\":");
            push_str(json, color.as_str());
        }
        json.extend_from_slice(b",\"message\":");
        push_str(json, message);
        json.push(b'}');
        self.seal()
    }

    /// A chat line; `to` (the recipient's registered name) makes it private.
    #[allow(clippy::too_many_arguments)]
    pub fn usermsg(
        &mut self,
        name: &str,
        text: &str,
        color: Color,
        ts: u64,
        id: Option<&str>,
        to: Option<&str>,
    ) -> &[u8] {
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"{\"type\":\"usermsg\",\"name\":");
        push_str(json, name);
        json.extend_from_slice(b",\"message\":");
        push_str(json, text);
        json.extend_from_slice(b",\"color\":\"");
        json.extend_from_slice(&color.0);
        // Writing a number into a Vec cannot fail.
        let _ = write!(json, "\",\"ts\":{ts}");
        if let Some(id) = id {
            json.extend_from_slice(b",\"id\":");
            push_str(json, id);
        }
        if let Some(to) = to {
            json.extend_from_slice(b",\"toname\":");
            push_str(json, to);
            json.extend_from_slice(b",\"private\":true");
        }
        json.push(b'}');
        self.seal()
    }

    /// An operator's announcement (section 11).
    pub fn announce(&mut self, text: &str, ts: u64, id: Option<&str>) -> &[u8] {
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"{\"type\":\"system\",\"event\":\"announce\",\"message\":");
        push_str(json, text);
        let _ = write!(json, ",\"ts\":{ts}");
        if let Some(id) = id {
            json.extend_from_slice(b",\"id\":");
            push_str(json, id);
        }
        json.push(b'}');
        self.seal()
    }

    /// The user list from `(name, colour)` pairs.
    pub fn users<'n>(&mut self, users: impl Iterator<Item = (&'n str, Color)>) -> &[u8] {
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"{\"type\":\"users\",\"users\":[");
        for (i, (name, color)) in users.enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(b"{\"name\":");
            push_str(json, name);
            json.extend_from_slice(b",\"color\":\"");
            json.extend_from_slice(&color.0);
            json.extend_from_slice(b"\"}");
        }
        json.extend_from_slice(b"]}");
        self.seal()
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
