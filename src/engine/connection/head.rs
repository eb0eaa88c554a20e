//! Collecting a request head (PROTOCOL section 2: everything up to the
//! first blank line, at most 8192 bytes).

use super::Step;
use crate::engine::http::{self, MAX_HEAD_BYTES};
use std::borrow::Cow;

/// Collects a request head. The usual case, a whole head in one read, is
/// answered from the input itself, so a handshake allocates no head buffer.
pub(super) fn read_head<'i>(head: &mut Vec<u8>, input: &mut &'i [u8]) -> Step<'i> {
    let data: &'i [u8] = input;
    if head.is_empty() {
        return match http::find_head_end(data, 0) {
            Some(end) if end <= MAX_HEAD_BYTES => {
                let (complete, rest) = data.split_at(end);
                *input = rest;
                Step::Head(Cow::Borrowed(complete))
            }
            None if data.len() <= MAX_HEAD_BYTES => {
                head.extend_from_slice(data);
                *input = &[];
                Step::NeedMore
            }
            _ => {
                *input = &[];
                Step::Refused {
                    status: 431,
                    reason: "request head over 8192 bytes",
                }
            }
        };
    }
    let searched = head.len();
    // Never hold more than one byte past the limit: that already decides.
    let room = (MAX_HEAD_BYTES + 1).saturating_sub(searched);
    let take = data.len().min(room);
    head.extend_from_slice(&data[..take]);
    match http::find_head_end(head, searched) {
        Some(end) if end <= MAX_HEAD_BYTES => {
            let consumed_here = end.saturating_sub(searched);
            *input = data.get(consumed_here..).unwrap_or_default();
            head.truncate(end);
            Step::Head(Cow::Owned(std::mem::take(head)))
        }
        None if head.len() <= MAX_HEAD_BYTES => {
            *input = &[];
            Step::NeedMore
        }
        _ => {
            *input = &[];
            Step::Refused {
                status: 431,
                reason: "request head over 8192 bytes",
            }
        }
    }
}
