//! Close codes (RFC 6455 section 7.4, PROTOCOL section 7).

/// A close status code the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);

    /// Codes a peer may put in a close frame: 1000-1003, 1007-1014 and
    /// 3000-4999. 1004-1006 and 1015 are reserved for local use ("MUST NOT
    /// be set as a status code in a Close control frame by an endpoint"), the
    /// rest of 1000-2999 is reserved for future RFCs, and 0-999 and 5000 up
    /// are "not used".
    pub fn is_valid_from_peer(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_code_ranges() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1010, 1014, 3000, 4999] {
            assert!(CloseCode::is_valid_from_peer(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!CloseCode::is_valid_from_peer(bad), "{bad}");
        }
    }
}
