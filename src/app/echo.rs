//! The echo application (PROTOCOL section 6): every complete message goes
//! back unchanged, with the same opcode, as one unfragmented frame. It exists
//! so conformance suites can exercise the engine that chat runs on.

use crate::engine::frame::{Opcode, encode_frame};

/// Appends the echo of one complete message to `out`.
pub fn reply(out: &mut Vec<u8>, binary: bool, payload: &[u8]) {
    let opcode = if binary { Opcode::Binary } else { Opcode::Text };
    encode_frame(out, opcode, payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_opcode_same_bytes() {
        let mut out = Vec::new();
        reply(&mut out, false, b"hi");
        assert_eq!(out, b"\x81\x02hi");
        out.clear();
        reply(&mut out, true, &[0, 255]);
        assert_eq!(out, b"\x82\x02\x00\xff");
    }
}
