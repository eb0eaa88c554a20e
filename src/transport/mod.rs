//! The byte pipe under a connection: what the loop reads from and writes
//! to. Plain TCP today; TLS is a second variant of the same enum, so that
//! the loop and the engine never learn which one carries their bytes.
//!
//! Output accounting counts every byte not yet taken by the kernel: the
//! engine's output buffer plus [`Transport::pending_bytes`], what the
//! transport itself still holds (TLS records not yet written).

mod queue;
pub mod tls;

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;
use tls::TlsTransport;

/// One connection's socket, possibly wrapped.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and idle plain connections should
    /// not pay for it in every slab entry.
    Tls(Box<TlsTransport>),
}

impl Transport {
    /// Reads application bytes; `Ok(0)` is EOF, `WouldBlock` means none now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    /// Writes application bytes; returns how many were taken.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(data),
            Transport::Tls(tls) => tls.write(data),
        }
    }

    /// Pushes what the transport holds to the kernel; true when it holds
    /// nothing any more.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(tls) => tls.flush_pending(),
        }
    }

    /// Bytes held inside the transport, not yet taken by the kernel.
    pub fn pending_bytes(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
            Transport::Tls(tls) => tls.pending_bytes(),
        }
    }

    /// Ends our direction of the stream (the peer reads EOF).
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(socket) => {
                let _ = socket.shutdown(Shutdown::Write);
            }
            // close_notify first; the FIN follows once it is flushed.
            Transport::Tls(tls) => tls.shutdown_write(),
        }
    }

    /// Makes the eventual close a reset, freeing the kernel's copy of
    /// unsent data at once (for connections dropped for not reading).
    pub fn reset_on_close(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(self.socket(), Some(Duration::ZERO));
    }

    /// Gives back the transport's own buffers while the connection idles.
    pub fn trim_idle(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.trim_idle();
        }
    }

    /// Whether [`Transport::trim_idle`] would have anything to give back.
    pub fn holds_buffers(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.holds_buffers(),
        }
    }

    /// The peer started a TLS handshake and hung up before finishing it
    /// (counted as `reason="tls"`).
    pub fn abandoned_handshake(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.abandoned_handshake(),
        }
    }

    /// The socket, for registering with the poll.
    pub fn source(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => tls.socket(),
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => tls.socket_ref(),
        }
    }
}
