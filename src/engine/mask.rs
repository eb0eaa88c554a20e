//! Client-to-server masking (RFC 6455 section 5.3), applied a word at a time.
//!
//! "The masking key is a 32-bit value chosen at random by the client ...
//! octet i of the transformed data is the XOR of octet i of the original data
//! with octet at index i modulo 4 of the masking key."
//!
//! Payloads arrive in pieces, so the caller passes the position of the first
//! byte within the payload; the key is rotated to start there. The bulk runs
//! over 8-byte words in safe code (`chunks_exact_mut` + `u64` XOR), which the
//! compiler turns into vector instructions: no alignment tricks, no `unsafe`.

/// XORs `data` with `key`, where `data[0]` is byte number `offset` of the
/// payload. Applying it twice restores the input.
pub fn unmask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let rotated = rotate(key, offset);
    let word = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2],
        rotated[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let value = u64::from_ne_bytes(bytes) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // Each chunk above is 8 bytes, a multiple of 4, so the tail starts at key index 0.
    for (byte, k) in chunks
        .into_remainder()
        .iter_mut()
        .zip(rotated.iter().cycle())
    {
        *byte ^= k;
    }
}

fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut rotated = key;
    rotated.rotate_left(offset % 4);
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn matches_the_byte_at_a_time_definition_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                unmask(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 section 5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn split_payload_unmasks_like_a_whole_one() {
        let key = [1, 2, 3, 4];
        let mut whole: Vec<u8> = (0..29).collect();
        let mut split = whole.clone();
        unmask(&mut whole, key, 0);
        let (a, b) = split.split_at_mut(11);
        unmask(a, key, 0);
        unmask(b, key, 11);
        assert_eq!(whole, split);
    }
}
