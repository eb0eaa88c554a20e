//! The echo application (PROTOCOL section 6): every complete message goes
//! back unchanged, with the same opcode, as one unfragmented frame. It exists
//! so conformance suites can exercise the engine that chat runs on.

use super::{ConnId, Connections};
use crate::engine::frame::Opcode;
use crate::metrics::AppLabel;

/// Sends one complete message back to `id`.
pub fn reply<P>(conns: &mut impl Connections<P>, id: ConnId, binary: bool, payload: &[u8]) {
    let opcode = if binary { Opcode::Binary } else { Opcode::Text };
    if conns.send_frame(id, opcode, payload) {
        conns.metrics().messages_sent[AppLabel::Echo as usize] += 1;
    }
}
