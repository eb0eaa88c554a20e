//! The receive side: recognising the generator's own messages in frames
//! and checking every delivery (completeness, per-sender order).

use super::*;

/// Counters for one step. Messages scheduled before `measure_from_ns` (the
/// warm-up, or an earlier step) update sequence tracking but nothing else.
#[derive(Default)]
pub(super) struct Step {
    pub(super) measure_from_ns: u64,
    pub(super) end_ns: u64,
    /// Messages sent in the measured window.
    pub(super) sent: u64,
    /// Receptions of measured messages (each message counts once per client).
    pub(super) delivered: u64,
    /// Bench frames of any step received inside the measured window.
    pub(super) frames_in_window: u64,
    pub(super) gaps: u64,
    pub(super) reorders: u64,
    pub(super) latency: Histogram,
    /// How late sends were enqueued against their schedule.
    pub(super) lag: Histogram,
    pub(super) disconnects: u64,
    pub(super) server_errors: u64,
    /// The most bytes a sender had queued that the server had not read yet
    /// (server-side backpressure, not the generator's doing).
    pub(super) max_unsent: usize,
}

/// Everything the receive path updates, apart from the connections, so the
/// read callback can borrow it while a connection is borrowed too.
pub(super) struct Rx {
    pub(super) senders: usize,
    pub(super) names: Vec<String>,
    pub(super) joined: Vec<bool>,
    pub(super) joined_count: usize,
    /// Last sequence number seen, per receiver and sender (row = receiver).
    pub(super) last_seq: Vec<u32>,
    pub(super) step: Step,
    /// Error kinds (connection failures, server `error` codes) and counts.
    pub(super) errors: BTreeMap<String, u64>,
    /// Frames that were neither ours nor chat bookkeeping.
    pub(super) unexpected: u64,
    /// Messages scheduled before this session opened are an earlier
    /// session's (a ramp reconnects after losing clients; a cluster may
    /// still be delivering that session's backlog): ignored.
    pub(super) opened_ns: u64,
    pub(super) stale: u64,
    /// When the last frame arrived (generator clock): settling waits for quiet.
    pub(super) last_frame_ns: u64,
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // Only candidates that start with the needle's first byte (a quote) are
    // compared: a chat frame has a few dozen.
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..hay.len() + 1 - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses `<digits>:` from the front; returns the number and the rest.
pub(super) fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 || s.get(n) != Some(&b':') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &s[..n] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, &s[n + 1..]))
}

/// `<sender>:<seq>:<send_ns>:` at the start of a message text.
pub(super) fn parse_text(text: &[u8]) -> Option<(usize, u32, u64)> {
    let (sender, rest) = number(text)?;
    let (seq, rest) = number(rest)?;
    let (sent, _) = number(rest)?;
    Some((
        usize::try_from(sender).ok()?,
        u32::try_from(seq).ok()?,
        sent,
    ))
}

/// The fast path: finds the `"message":"` field of a compact `usermsg`
/// frame. Only a frame that says it is a `usermsg` first: a `history`
/// greeting holds earlier messages (in a cluster, earlier runs' too, kept
/// by Redis), which must not count as deliveries.
pub(super) fn parse_bench_frame(payload: &[u8]) -> Option<(usize, u32, u64)> {
    const USERMSG: &[u8] = b"{\"type\":\"usermsg\",";
    const NEEDLE: &[u8] = b"\"message\":\"";
    if !payload.starts_with(USERMSG) {
        return None;
    }
    let at = find(payload, NEEDLE)?;
    parse_text(&payload[at + NEEDLE.len()..])
}

impl Rx {
    pub(super) fn on_message(&mut self, r: usize, payload: &[u8], now_ns: u64) {
        self.last_frame_ns = now_ns;
        if let Some((s, seq, sent)) = parse_bench_frame(payload) {
            self.on_bench(r, s, seq, sent, now_ns);
            return;
        }
        // The slow path: any other frame, or a server whose JSON is laid out
        // differently (spaces, escapes).
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            self.unexpected += 1;
            return;
        };
        let field = |k: &str| v.get(k).and_then(|x| x.as_str());
        match field("type") {
            Some("usermsg") => match field("message").and_then(|m| parse_text(m.as_bytes())) {
                Some((s, seq, sent)) => self.on_bench(r, s, seq, sent, now_ns),
                None => self.unexpected += 1,
            },
            Some("system") => {
                if field("event") == Some("join")
                    && field("name") == Some(self.names[r].as_str())
                    && !self.joined[r]
                {
                    self.joined[r] = true;
                    self.joined_count += 1;
                }
            }
            // The greeting (and its history, PROTOCOL section 9).
            Some("users" | "history") => {}
            Some("error") => {
                let code = field("code").unwrap_or("?");
                *self
                    .errors
                    .entry(format!("server error {code}"))
                    .or_default() += 1;
                self.step.server_errors += 1;
            }
            _ => self.unexpected += 1,
        }
    }

    pub(super) fn on_bench(&mut self, r: usize, s: usize, seq: u32, sent_ns: u64, now_ns: u64) {
        if s >= self.senders {
            self.unexpected += 1;
            return;
        }
        if sent_ns < self.opened_ns {
            self.stale += 1;
            return;
        }
        let slot = &mut self.last_seq[r * self.senders + s];
        let st = &mut self.step;
        if seq > *slot {
            st.gaps += u64::from(seq - *slot - 1);
            *slot = seq;
        } else {
            st.reorders += 1;
        }
        if now_ns >= st.measure_from_ns && now_ns < st.end_ns {
            st.frames_in_window += 1;
        }
        if sent_ns >= st.measure_from_ns {
            st.delivered += 1;
            st.latency.record(now_ns.saturating_sub(sent_ns));
        }
    }
}
