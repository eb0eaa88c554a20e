//! RFC 6455 framing: the frame header (section 5.2), a streaming decoder that
//! turns client bytes into messages and control frames, and the encoder for
//! server frames.
//!
//! The decoder never needs a whole frame in memory: it takes whatever a read
//! delivered, unmasks payload bytes as they arrive straight into the message
//! being assembled, validates text as it goes and judges size limits from the
//! header alone. Only an incomplete header (at most 14 bytes) is carried
//! between reads. Returning `Ok(None)` means "need more bytes"; the input is
//! always consumed up to the point reached, and nothing is lost.

use super::close::CloseCode;
use super::mask::unmask;
use super::utf8::Utf8Validator;

/// Frame opcodes (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// "If an unknown opcode is received, the receiving endpoint MUST _Fail
    /// the WebSocket Connection_." Opcodes 3-7 and 11-15 are reserved.
    fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Why the decoder failed the connection, with the close code it calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    pub code: CloseCode,
    pub reason: &'static str,
}

impl FrameError {
    fn protocol(reason: &'static str) -> FrameError {
        FrameError {
            code: CloseCode::PROTOCOL_ERROR,
            reason,
        }
    }
}

/// What a complete frame or message means to the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message; the bytes are valid UTF-8.
    Text(&'a [u8]),
    /// A complete binary message.
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A close frame: its status code (none if the payload was empty) and
    /// its reason text, both already validated.
    Close(Option<u16>, &'a str),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header itself occupies (2 to 14).
    pub header_len: usize,
}

/// A frame header as it stands on the wire, before any rule is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawHeader {
    fin: bool,
    rsv: u8,
    opcode_bits: u8,
    mask: Option<[u8; 4]>,
    payload_len: u64,
    header_len: usize,
}

/// Reads the header fields from the start of `buf`; `None` until all of
/// its 2 to 14 bytes are there.
fn parse_raw_header(buf: &[u8]) -> Option<RawHeader> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let short_len = b1 & 0x7F;
    let ext_len = match short_len {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext_len + if masked { 4 } else { 0 };
    let header = buf.get(..header_len)?;
    let payload_len = match short_len {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        n => u64::from(n),
    };
    let mask = masked.then(|| {
        let k = &header[header_len - 4..header_len];
        [k[0], k[1], k[2], k[3]]
    });
    Some(RawHeader {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode_bits: b0 & 0x0F,
        mask,
        payload_len,
        header_len,
    })
}

impl RawHeader {
    /// Applies the rules every frame must meet on its own.
    fn validate(self) -> Result<FrameHeader, FrameError> {
        // "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated".
        if self.rsv != 0 {
            return Err(FrameError::protocol("reserved bits set"));
        }
        let opcode = Opcode::from_bits(self.opcode_bits)
            .ok_or_else(|| FrameError::protocol("reserved opcode"))?;
        // "the most significant bit MUST be 0".
        if self.payload_len >> 63 != 0 {
            return Err(FrameError::protocol("64-bit length with the top bit set"));
        }
        if opcode.is_control() {
            // "All control frames MUST have a payload length of 125 bytes or
            // less and MUST NOT be fragmented."
            if !self.fin {
                return Err(FrameError::protocol("fragmented control frame"));
            }
            if self.payload_len > 125 {
                return Err(FrameError::protocol("control frame over 125 bytes"));
            }
        }
        Ok(FrameHeader {
            fin: self.fin,
            opcode,
            mask: self.mask,
            payload_len: self.payload_len,
            header_len: self.header_len,
        })
    }
}

/// Parses a frame header from the start of `buf`. `Ok(None)` means more
/// bytes are needed; nothing is consumed either way.
pub fn decode_header(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    match parse_raw_header(buf) {
        Some(raw) => raw.validate().map(Some),
        None => Ok(None),
    }
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct PayloadInProgress {
    opcode: Opcode,
    fin: bool,
    mask: [u8; 4],
    remaining: u64,
    /// Payload bytes of this frame already read (the mask position).
    done: usize,
}

/// Turns a client's byte stream into [`Event`]s.
#[derive(Debug)]
pub struct Decoder {
    /// Largest reassembled data message accepted (1009 beyond it).
    max_message: usize,
    /// Header bytes of a frame whose header is not complete yet.
    header: [u8; 14],
    /// How many of `header` are filled (at most 14).
    header_len: u8,
    payload: Option<PayloadInProgress>,
    /// Opcode of the data message being assembled, if one is started.
    message_opcode: Option<Opcode>,
    /// The data message being assembled, already unmasked.
    message: Vec<u8>,
    /// Payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    utf8: Utf8Validator,
    /// The last event borrowed `message` or `control`; clear them first.
    emitted: bool,
    /// The server has sent its close; see [`Decoder::enter_closing`].
    closing: bool,
}

/// Message buffers that grew past this for one big message are released.
const KEEP_CAPACITY: usize = 16 * 1024;

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            header: [0; 14],
            header_len: 0,
            payload: None,
            message_opcode: None,
            message: Vec::new(),
            control: Vec::new(),
            utf8: Utf8Validator::new(),
            emitted: false,
            closing: false,
        }
    }

    /// True while a message or a frame is only partly received.
    pub fn is_mid_message(&self) -> bool {
        self.message_opcode.is_some() || self.payload.is_some() || self.header_len > 0
    }

    /// Takes the message just returned by [`Decoder::next_event`] out of the
    /// decoder, so that the caller can hand it on while the decoder (and
    /// whatever owns it) is borrowed elsewhere. [`Decoder::give_back`]
    /// returns the buffer for reuse.
    pub fn take_message(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.message)
    }

    /// Returns a buffer taken with [`Decoder::take_message`].
    pub fn give_back(&mut self, mut buffer: Vec<u8>) {
        if self.message.capacity() == 0 && buffer.capacity() <= KEEP_CAPACITY {
            buffer.clear();
            self.message = buffer;
        }
    }

    /// Releases buffer capacity not holding a message in progress.
    pub fn trim(&mut self) {
        self.clear_emitted();
        if self.message.is_empty() {
            self.message = Vec::new();
        }
        if self.control.is_empty() {
            self.control = Vec::new();
        }
    }

    /// Bytes held for a message being assembled (for memory accounting).
    pub fn buffered_bytes(&self) -> usize {
        self.message.capacity() + self.control.capacity()
    }

    fn clear_emitted(&mut self) {
        if !self.emitted {
            return;
        }
        self.emitted = false;
        if self.message_opcode.is_none() {
            if self.message.capacity() > KEEP_CAPACITY {
                self.message = Vec::new();
            } else {
                self.message.clear();
            }
        }
        self.control.clear();
    }

    /// Whether [`Decoder::enter_closing`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// After the server sent its own close: from now on only the peer's
    /// close frame matters. Data is skipped without being stored or
    /// checked, so a message that failed half-way is stepped over and the
    /// close reply behind it is still seen.
    pub fn enter_closing(&mut self) {
        self.closing = true;
        self.message_opcode = None;
        self.message = Vec::new();
        self.utf8.reset();
    }

    /// Consumes bytes from `input` until one event is complete (returned),
    /// the input is exhausted (`Ok(None)`), or the stream is invalid.
    pub fn next_event(&mut self, input: &mut &[u8]) -> Result<Option<Event<'_>>, FrameError> {
        self.clear_emitted();
        loop {
            if self.payload.is_none() && !self.read_header(input)? {
                return Ok(None);
            }
            if !self.read_payload(input)? {
                return Ok(None);
            }
            let Some(frame) = self.payload.take() else {
                continue;
            };
            if self.closing && frame.opcode != Opcode::Close {
                self.control.clear();
                continue;
            }
            match frame.opcode {
                Opcode::Ping => {
                    self.emitted = true;
                    return Ok(Some(Event::Ping(&self.control)));
                }
                Opcode::Pong => {
                    self.emitted = true;
                    return Ok(Some(Event::Pong(&self.control)));
                }
                Opcode::Close => {
                    self.emitted = true;
                    if self.closing {
                        // The reply to our close: its contents no longer matter.
                        return Ok(Some(Event::Close(None, "")));
                    }
                    // "If there is a body, the first two bytes of the body MUST
                    // be a 2-byte unsigned integer" and the rest UTF-8.
                    return match self.control.as_slice() {
                        [] => Ok(Some(Event::Close(None, ""))),
                        [_] => Err(FrameError::protocol("close payload of 1 byte")),
                        [hi, lo, reason @ ..] => {
                            let code = u16::from_be_bytes([*hi, *lo]);
                            if !CloseCode::is_valid_from_peer(code) {
                                return Err(FrameError::protocol("invalid close code"));
                            }
                            let reason = std::str::from_utf8(reason).map_err(|_| FrameError {
                                code: CloseCode::INVALID_PAYLOAD,
                                reason: "close reason is not UTF-8",
                            })?;
                            Ok(Some(Event::Close(Some(code), reason)))
                        }
                    };
                }
                Opcode::Continuation | Opcode::Text | Opcode::Binary => {
                    if !frame.fin {
                        continue;
                    }
                    let opcode = self.message_opcode.take();
                    self.emitted = true;
                    if opcode == Some(Opcode::Text) {
                        self.utf8.finish().map_err(|_| FrameError {
                            code: CloseCode::INVALID_PAYLOAD,
                            reason: "text message is not UTF-8",
                        })?;
                        return Ok(Some(Event::Text(&self.message)));
                    }
                    return Ok(Some(Event::Binary(&self.message)));
                }
            }
        }
    }

    /// Completes the next header and starts its frame. `Ok(false)`: input
    /// ran out first.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<bool, FrameError> {
        let raw = if self.header_len == 0 {
            // Fast path: the whole header is in this read.
            match parse_raw_header(input) {
                Some(h) => {
                    *input = input.get(h.header_len..).unwrap_or_default();
                    h
                }
                None => {
                    let n = input.len().min(self.header.len());
                    self.header[..n].copy_from_slice(&input[..n]);
                    // n is at most the 14 bytes of `header`.
                    self.header_len = n as u8;
                    *input = &input[n..];
                    return Ok(false);
                }
            }
        } else {
            // Top up the carried bytes one at a time until a header parses.
            loop {
                let filled = usize::from(self.header_len);
                if let Some(h) = parse_raw_header(self.header.get(..filled).unwrap_or_default()) {
                    self.header_len = 0;
                    break h;
                }
                let Some((&byte, rest)) = input.split_first() else {
                    return Ok(false);
                };
                if filled >= self.header.len() {
                    return Err(FrameError::protocol("header too long"));
                }
                self.header[filled] = byte;
                self.header_len += 1;
                *input = rest;
            }
        };
        // The frame is recorded before it is judged, so that after an error
        // closing mode knows how much payload to step over. A frame closing
        // mode cannot name (reserved opcode) is stepped over as data.
        self.payload = Some(PayloadInProgress {
            opcode: Opcode::from_bits(raw.opcode_bits).unwrap_or(Opcode::Continuation),
            fin: raw.fin,
            mask: raw.mask.unwrap_or_default(),
            remaining: raw.payload_len,
            done: 0,
        });
        if !self.closing {
            let header = raw.validate()?;
            self.check_frame(&header)?;
        }
        Ok(true)
    }

    /// Applies the rules that depend on what came before this frame.
    fn check_frame(&mut self, header: &FrameHeader) -> Result<(), FrameError> {
        // "The server MUST close the connection upon receiving a frame that
        // is not masked."
        if header.mask.is_none() {
            return Err(FrameError::protocol("unmasked client frame"));
        }
        match header.opcode {
            Opcode::Continuation if self.message_opcode.is_none() => {
                return Err(FrameError::protocol(
                    "continuation without a started message",
                ));
            }
            Opcode::Text | Opcode::Binary if self.message_opcode.is_some() => {
                return Err(FrameError::protocol(
                    "new data frame inside a fragmented message",
                ));
            }
            Opcode::Text | Opcode::Binary => {
                self.message_opcode = Some(header.opcode);
                self.utf8.reset();
                self.message.clear();
            }
            _ => {}
        }
        if !header.opcode.is_control() {
            // Judged from the header, before any of the payload is buffered.
            let total = (self.message.len() as u64).checked_add(header.payload_len);
            if total.is_none_or(|t| t > self.max_message as u64) {
                return Err(FrameError {
                    code: CloseCode::MESSAGE_TOO_BIG,
                    reason: "message larger than the limit",
                });
            }
        }
        Ok(())
    }

    /// Moves as much of the current frame's payload as `input` holds into
    /// the message (or control) buffer, unmasked and, for text, validated.
    /// `Ok(true)` when the frame's payload is complete.
    fn read_payload(&mut self, input: &mut &[u8]) -> Result<bool, FrameError> {
        let Some(frame) = self.payload.as_mut() else {
            return Ok(false);
        };
        let available = usize::try_from(frame.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let (chunk, rest) = input.split_at(available);
        *input = rest;
        let offset = frame.done;
        frame.done = frame.done.wrapping_add(available);
        frame.remaining -= available as u64;
        let complete = frame.remaining == 0;
        let is_control = frame.opcode.is_control();
        let mask = frame.mask;
        if self.closing && (frame.opcode != Opcode::Close || frame.done > 125) {
            // Only a close frame matters now, and only its first 125 bytes
            // are kept: nothing a misbehaving peer sends can grow memory.
            return Ok(complete);
        }
        let target = if is_control {
            &mut self.control
        } else {
            &mut self.message
        };
        let start = target.len();
        target.extend_from_slice(chunk);
        let fresh = &mut target[start..];
        unmask(fresh, mask, offset);
        if !is_control && self.message_opcode == Some(Opcode::Text) {
            self.utf8.feed(fresh).map_err(|_| FrameError {
                code: CloseCode::INVALID_PAYLOAD,
                reason: "text message is not UTF-8",
            })?;
        }
        Ok(complete)
    }
}

/// Bytes a server frame header takes for a payload of `len` bytes.
pub fn header_len_for(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Appends one unmasked, unfragmented server frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.reserve(header_len_for(payload.len()) + payload.len());
    out.push(0x80 | opcode.bits());
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and a reason (cut to fit 125 bytes).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(out, Opcode::Close, &payload[..2 + cut]);
}

#[cfg(test)]
mod tests;
