//! One pass over rustls' unbuffered session for the TLS transport: the
//! complete records received are processed (handshake answers and alerts
//! out, application data in), then staged plaintext is encrypted, and
//! close_notify after it. Everything rustls writes goes into a
//! [`ByteQueue`]'s room, grown to the size rustls asks for.

use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use super::{Buffers, MAX_RECORD_PLAINTEXT, READ_CHUNK, TlsTransport};
use crate::transport::queue::ByteQueue;

/// Record overhead reserved per record when encrypting (TLS 1.2 GCM has the
/// largest: 5 header + 8 explicit nonce + 16 tag); rustls says if it needs
/// more.
const RECORD_OVERHEAD: usize = 64;

/// The most `process_tls_records` rounds spent emitting a refusal's alert.
const ALERT_ROUNDS: usize = 8;

impl TlsTransport {
    /// One pass over the session: processes every complete record in
    /// `input` (handshake answers go to `out`, application data to
    /// `plaintext_in`), then, once the keys exist, encrypts `encrypt`
    /// staged bytes into `out`, and close_notify after the last staged byte
    /// if `shutdown_write` asked for it. Returns when rustls needs more
    /// ciphertext or has nothing more to do; `input` keeps what rustls has
    /// not consumed.
    pub(super) fn process(
        &mut self,
        input: &mut ByteQueue,
        out: &mut ByteQueue,
        encrypt: usize,
    ) -> Result<(), rustls::Error> {
        let TlsTransport {
            session,
            buffers,
            fin_wanted,
            close_notify_sent,
            peer_eof,
            ..
        } = self;
        let Buffers {
            plaintext_in,
            staged,
            ..
        } = &mut **buffers.get_or_insert_with(Box::default);
        let mut encrypt = encrypt.min(staged.len());
        loop {
            let UnbufferedStatus { mut discard, state } =
                session.process_tls_records(input.bytes_mut());
            let mut finished = false;
            let outcome = match state {
                Err(err) => Err(err),
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append_to(out, READ_CHUNK, |room| Ok(data.encode(room)?))
                }
                // `out` goes to the socket in order; nothing else to do.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(())
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut result = Ok(());
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard = discard.saturating_add(record.discard);
                                plaintext_in.extend(record.payload);
                            }
                            Err(err) => {
                                result = Err(err);
                                break;
                            }
                        }
                    }
                    result
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_eof = true;
                    Ok(())
                }
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    finished = true;
                    let mut result = Ok(());
                    if encrypt > 0 {
                        let plaintext = staged.bytes().get(..encrypt).unwrap_or_default();
                        result = append_to(out, encrypted_size(plaintext), |room| {
                            Ok(writer.encrypt(plaintext, room)?)
                        });
                        if result.is_ok() {
                            staged.consume(encrypt);
                            encrypt = 0;
                        }
                    }
                    if result.is_ok() && *fin_wanted && !*close_notify_sent && staged.is_empty() {
                        result = append_to(out, encrypted_size(&[]), |room| {
                            Ok(writer.queue_close_notify(room)?)
                        });
                        *close_notify_sent = true;
                    }
                    result
                }
                // Early data is never accepted (rustls' default); if some
                // came, it is not plaintext of this connection's stream.
                Ok(ConnectionState::ReadEarlyData(mut early)) => {
                    while early.next_record().is_some() {}
                    Ok(())
                }
                // Waiting for the peer, or closed both ways.
                Ok(_) => {
                    finished = true;
                    Ok(())
                }
            };
            input.consume(discard);
            outcome?;
            if finished {
                return Ok(());
            }
        }
    }

    /// After a refusal: lets rustls emit the alert it queued into `out`.
    pub(super) fn encode_alerts(&mut self, input: &mut ByteQueue, out: &mut ByteQueue) {
        for _ in 0..ALERT_ROUNDS {
            let UnbufferedStatus { discard, state } =
                self.session.process_tls_records(input.bytes_mut());
            let more = match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append_to(out, READ_CHUNK, |room| Ok(data.encode(room)?)).is_ok()
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    true
                }
                _ => false,
            };
            input.consume(discard);
            if !more {
                return;
            }
        }
    }
}

/// Why rustls could not write into the room it was given.
enum Unwritten {
    /// The room must hold at least this many bytes.
    Needs(usize),
    Failed(String),
}

impl From<EncodeError> for Unwritten {
    fn from(err: EncodeError) -> Unwritten {
        match err {
            EncodeError::InsufficientSize(size) => Unwritten::Needs(size.required_size),
            other => Unwritten::Failed(format!("encoding a record: {other}")),
        }
    }
}

impl From<EncryptError> for Unwritten {
    fn from(err: EncryptError) -> Unwritten {
        match err {
            EncryptError::InsufficientSize(size) => Unwritten::Needs(size.required_size),
            other => Unwritten::Failed(format!("encrypting: {other}")),
        }
    }
}

/// Appends what `write` puts into `out`'s spare room, starting with `room`
/// bytes of it and growing it once to what rustls says it needs.
fn append_to(
    out: &mut ByteQueue,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Unwritten>,
) -> Result<(), rustls::Error> {
    loop {
        match write(out.room(room)) {
            Ok(n) => {
                out.commit(n);
                return Ok(());
            }
            Err(Unwritten::Needs(size)) if size > room => room = size,
            Err(Unwritten::Needs(size)) => {
                return Err(rustls::Error::General(format!(
                    "rustls wants {size} bytes of a room of {room}"
                )));
            }
            Err(Unwritten::Failed(why)) => return Err(rustls::Error::General(why)),
        }
    }
}

/// Room for `plaintext` encrypted: its length plus the overhead of every
/// record it becomes.
fn encrypted_size(plaintext: &[u8]) -> usize {
    let records = plaintext.len() / MAX_RECORD_PLAINTEXT + 1;
    plaintext
        .len()
        .saturating_add(records.saturating_mul(RECORD_OVERHEAD))
}
