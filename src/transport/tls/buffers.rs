//! The TLS transport's buffers: what one connection keeps of its own (only
//! what could not be finished at once, dropped when empty) and the scratch
//! pair the loop's thread reads ciphertext into and encrypts records into.

use std::cell::RefCell;

use crate::transport::queue::ByteQueue;

/// What a connection keeps of its own: only what could not be finished at
/// once.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    /// Ciphertext from the socket that rustls has not consumed yet: a
    /// partial record (or handshake message) between calls.
    pub(super) incoming: ByteQueue,
    /// Decrypted plaintext not yet handed out by `read`.
    pub(super) plaintext_in: ByteQueue,
    /// Plaintext taken by `write`, not yet encrypted: encrypting at flush
    /// time is what coalesces frames into records.
    pub(super) staged: ByteQueue,
    /// Records (or, in `NotTls` mode, the plain 400) not yet taken by the
    /// kernel.
    pub(super) out: ByteQueue,
}

/// What [`super::TlsTransport`]'s `view` shows of a connection without buffers.
pub(super) static NO_BUFFERS: Buffers = Buffers {
    incoming: ByteQueue::new(),
    plaintext_in: ByteQueue::new(),
    staged: ByteQueue::new(),
    out: ByteQueue::new(),
};

impl Buffers {
    pub(super) fn are_empty(&self) -> bool {
        self.incoming.is_empty()
            && self.plaintext_in.is_empty()
            && self.staged.is_empty()
            && self.out.is_empty()
    }
}

/// Where ciphertext is read into and records are encrypted into before
/// any of it is copied into a connection (usually none is).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub(super) incoming: ByteQueue,
    pub(super) out: ByteQueue,
}

thread_local! {
    /// One loop thread, one scratch pair.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch pair (or a fresh one, should it be
/// in use already).
pub(super) fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}
