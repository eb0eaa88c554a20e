//! Signals into the loop: SIGINT and SIGTERM start a graceful shutdown
//! (a second one exits at once), SIGHUP reloads the TLS certificate.
//! signal-hook writes a byte to a socket pair from the handler, which is
//! async-signal-safe; the loop polls the other end like any connection.

use super::*;

impl<S: Service> Server<S> {
    /// Routes SIGINT and SIGTERM into the loop as a graceful shutdown (a
    /// second signal during shutdown stops at once), and SIGHUP to a TLS
    /// reload, on a pipe of its own: a reload must never be mistaken for a
    /// shutdown, however signals coalesce.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        self.signals = Some(signal_pipe(&self.poll, &[SIGTERM, SIGINT], SIGNALS)?);
        self.reload_signals = Some(signal_pipe(&self.poll, &[SIGHUP], RELOAD)?);
        Ok(())
    }

    /// Returns true when a signal arrived while already shutting down.
    pub(super) fn drain_signals(&mut self) -> bool {
        if !drain(self.signals.as_mut()) {
            return false;
        }
        if self.shutdown_deadline.is_some() {
            return true;
        }
        self.begin_shutdown();
        false
    }

    /// SIGHUP (PROTOCOL section 10): read the certificate and key again.
    /// New connections get the new pair; open ones keep theirs. On error
    /// the old pair stays. Without TLS there is nothing to reload.
    pub(super) fn reload_tls(&mut self) {
        if !drain(self.reload_signals.as_mut()) {
            return;
        }
        let Some(tls) = &mut self.tls else {
            info!("SIGHUP ignored: no TLS certificate to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => {
                self.metrics.tls_reloaded(true);
                info!(
                    "TLS certificate reloaded from {} and {}",
                    tls.cert_path().display(),
                    tls.key_path().display()
                );
            }
            Err(e) => {
                self.metrics.tls_reloaded(false);
                log::error!("TLS reload failed, keeping the previous certificate: {e}");
            }
        }
    }
}

/// A socket pair whose write end the handlers of `signals` write to; the
/// read end is registered with the poll under `token`.
fn signal_pipe(poll: &Poll, signals: &[i32], token: Token) -> io::Result<UnixStream> {
    let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
    read_end.set_nonblocking(true)?;
    write_end.set_nonblocking(true)?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, write_end.try_clone()?)?;
    }
    let mut read_end = UnixStream::from_std(read_end);
    poll.registry()
        .register(&mut read_end, token, Interest::READABLE)?;
    Ok(read_end)
}

/// Empties a signal pipe; true if any signal had arrived.
fn drain(pipe: Option<&mut UnixStream>) -> bool {
    let Some(pipe) = pipe else {
        return false;
    };
    let mut got = false;
    let mut buf = [0u8; 16];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => got = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    got
}
