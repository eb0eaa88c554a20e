//! The byte pipe under a connection: what the loop reads from and writes
//! to. Plain TCP today; TLS is a second variant of the same enum, so that
//! the loop and the engine never learn which one carries their bytes.
//!
//! Output accounting counts every byte not yet taken by the kernel: the
//! engine's output buffer plus [`Transport::pending_bytes`], what the
//! transport itself still holds (TLS records not yet written).

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// One connection's socket, possibly wrapped.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
}

impl Transport {
    /// Reads application bytes; `Ok(0)` is EOF, `WouldBlock` means none now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
        }
    }

    /// Writes application bytes; returns how many were taken.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(data),
        }
    }

    /// Pushes what the transport holds to the kernel; true when it holds
    /// nothing any more.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
        }
    }

    /// Bytes held inside the transport, not yet taken by the kernel.
    pub fn pending_bytes(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
        }
    }

    /// Ends our direction of the stream (the peer reads EOF).
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(socket) => {
                let _ = socket.shutdown(Shutdown::Write);
            }
        }
    }

    /// Makes the eventual close a reset, freeing the kernel's copy of
    /// unsent data at once (for connections dropped for not reading).
    pub fn reset_on_close(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(self.socket(), Some(Duration::ZERO));
    }

    /// The socket, for registering with the poll.
    pub fn source(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(socket) => socket,
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
        }
    }
}
