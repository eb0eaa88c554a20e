//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! RFC 6455 section 8.1: "When an endpoint is to interpret a byte stream as
//! UTF-8 but finds that the byte stream is not, in fact, a valid UTF-8
//! stream, that endpoint MUST _Fail the WebSocket Connection_." A code point
//! may be split across frames (or TCP reads), so validation carries up to
//! three bytes of an unfinished sequence from one piece to the next, and a
//! byte that can never start or continue a valid sequence fails at once
//! rather than at the end of the message.

/// Validation state carried between pieces of one message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of a code point started at the end of the previous piece.
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes are not UTF-8 (close code 1007).
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. `Err` as soon as the bytes seen so far
    /// cannot be the start of valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        // First complete the code point left over from the previous piece.
        while self.pending_len > 0 {
            let Some((&byte, rest)) = piece.split_first() else {
                return Ok(());
            };
            let held_len = usize::from(self.pending_len);
            if held_len >= self.pending.len() {
                return Err(InvalidUtf8);
            }
            self.pending[held_len] = byte;
            self.pending_len += 1;
            piece = rest;
            let held = &self.pending[..=held_len];
            match std::str::from_utf8(held) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.error_len().is_some() {
                    return Err(InvalidUtf8);
                }
                // Incomplete at the end: keep the (at most 3) bytes for later.
                let tail = piece.get(e.valid_up_to()..).unwrap_or_default();
                if tail.len() > 3 {
                    return Err(InvalidUtf8);
                }
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: an unfinished code point is invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }

    /// Forgets any partial state (a new message begins).
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], at: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in at {
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn code_point_split_across_pieces_is_valid() {
        let text = "κόσμε €𝄞".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(feed_split(text, &[cut]), Ok(()), "cut {cut}");
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..text.len()).collect();
        assert_eq!(feed_split(text, &cuts), Ok(()));
    }

    #[test]
    fn invalid_bytes_fail_before_the_message_ends() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xff"), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        // Surrogate half U+D800 encoded: ED A0 80 — invalid as soon as A0 arrives.
        assert_eq!(v.feed(b"\xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
        // Over the maximum code point.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf4\x90"), Err(InvalidUtf8));
    }

    #[test]
    fn unfinished_code_point_at_the_end_is_invalid() {
        assert_eq!(feed_split(b"ok\xe2\x82", &[]), Err(InvalidUtf8));
        assert_eq!(feed_split(b"\xf0\x9d", &[1]), Err(InvalidUtf8));
    }

    #[test]
    fn empty_message_is_valid() {
        assert_eq!(feed_split(b"", &[]), Ok(()));
    }
}
