//! Signals into the loop: SIGINT and SIGTERM start a graceful shutdown
//! (a second one exits at once), SIGHUP reloads the TLS certificate.
//! signal-hook writes a byte to a socket pair from the handler, which is
//! async-signal-safe; the loop polls the other end like any connection.

use super::*;

impl<S: Service> Server<S> {
    /// Routes SIGINT and SIGTERM into the loop as a graceful shutdown (a
    /// second signal during shutdown stops at once). signal-hook writes a
    /// byte to a socket pair from the handler, which is async-signal-safe;
    /// the loop polls the other end like any connection.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        write_end.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(
            signal_hook::consts::SIGTERM,
            write_end.try_clone()?,
        )?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write_end)?;
        let mut read_end = UnixStream::from_std(read_end);
        self.poll
            .registry()
            .register(&mut read_end, SIGNALS, Interest::READABLE)?;
        self.signals = Some(read_end);
        // SIGHUP on a pipe of its own: a reload must never be mistaken for
        // a shutdown, however signals coalesce.
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        write_end.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, write_end)?;
        let mut read_end = UnixStream::from_std(read_end);
        self.poll
            .registry()
            .register(&mut read_end, RELOAD, Interest::READABLE)?;
        self.reload_signals = Some(read_end);
        Ok(())
    }

    /// Returns true when a signal arrived while already shutting down.
    pub(super) fn drain_signals(&mut self) -> bool {
        let mut got = false;
        if let Some(signals) = &mut self.signals {
            let mut buf = [0u8; 16];
            loop {
                match signals.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if !got {
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
        let mut got = false;
        if let Some(signals) = &mut self.reload_signals {
            let mut buf = [0u8; 16];
            loop {
                match signals.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if !got {
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
