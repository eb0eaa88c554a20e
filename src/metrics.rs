//! Counters behind `/metrics`, rendered in the Prometheus text format
//! (PROTOCOL section 8). Metric names are part of the contract.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Why a connection was turned away, as the `reason` label.
pub const REJECT_REASONS: [&str; 7] = [
    "limit",
    "timeout",
    "head_too_large",
    "bad_request",
    "version",
    "origin",
    "tls",
];

/// The two applications, as the `app` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppLabel {
    Chat = 0,
    Echo = 1,
}

/// Monotonic counters; gauges are passed in when rendering.
#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted_total: u64,
    rejected: [u64; REJECT_REASONS.len()],
    pub messages_received: [u64; 2],
    pub messages_sent: [u64; 2],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    closes: BTreeMap<u16, u64>,
    pub slow_consumers_dropped: u64,
    /// SIGHUP reloads of the TLS certificate: [ok, failed].
    tls_reloads: [u64; 2],
}

/// Gauges read from the live server at render time.
#[derive(Debug, Default)]
pub struct Gauges {
    pub handshake: usize,
    pub open: usize,
    pub closing: usize,
    pub http: usize,
    pub users_named: usize,
    pub rate_limited_total: u64,
    pub fd_capacity: u64,
    /// Further lines in the exposition format, from the applications.
    pub extra: String,
}

/// What the applications add to the loop's gauges.
#[derive(Debug, Default)]
pub struct AppGauges {
    pub users_named: usize,
    pub rate_limited_total: u64,
    /// Further lines in the exposition format (history, cluster, ...).
    pub extra: String,
}

impl Metrics {
    /// Counts a rejection; `reason` is one of [`REJECT_REASONS`].
    pub fn rejected(&mut self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            self.rejected[i] += 1;
        }
    }

    /// Counts a TLS certificate reload (SIGHUP).
    pub fn tls_reloaded(&mut self, ok: bool) {
        self.tls_reloads[usize::from(!ok)] += 1;
    }

    /// Counts a close frame the server sent.
    pub fn close_sent(&mut self, code: u16) {
        *self.closes.entry(code).or_default() += 1;
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let _ = self.write(&mut out, g);
        out
    }

    fn write(&self, o: &mut String, g: &Gauges) -> std::fmt::Result {
        writeln!(
            o,
            "# HELP wschat_connections_open Open connections by state."
        )?;
        writeln!(o, "# TYPE wschat_connections_open gauge")?;
        for (state, n) in [
            ("handshake", g.handshake),
            ("open", g.open),
            ("closing", g.closing),
            ("http", g.http),
        ] {
            writeln!(o, "wschat_connections_open{{state=\"{state}\"}} {n}")?;
        }
        writeln!(
            o,
            "# HELP wschat_connections_accepted_total TCP connections accepted, 503s included."
        )?;
        writeln!(o, "# TYPE wschat_connections_accepted_total counter")?;
        writeln!(
            o,
            "wschat_connections_accepted_total {}",
            self.accepted_total
        )?;
        writeln!(
            o,
            "# HELP wschat_connections_rejected_total Connections turned away, by reason."
        )?;
        writeln!(o, "# TYPE wschat_connections_rejected_total counter")?;
        for (reason, n) in REJECT_REASONS.iter().zip(self.rejected) {
            writeln!(
                o,
                "wschat_connections_rejected_total{{reason=\"{reason}\"}} {n}"
            )?;
        }
        for (name, help, values) in [
            (
                "wschat_messages_received_total",
                "Complete WebSocket messages received.",
                self.messages_received,
            ),
            (
                "wschat_messages_sent_total",
                "WebSocket messages queued to clients.",
                self.messages_sent,
            ),
        ] {
            writeln!(o, "# HELP {name} {help}")?;
            writeln!(o, "# TYPE {name} counter")?;
            writeln!(
                o,
                "{name}{{app=\"chat\"}} {}",
                values[AppLabel::Chat as usize]
            )?;
            writeln!(
                o,
                "{name}{{app=\"echo\"}} {}",
                values[AppLabel::Echo as usize]
            )?;
        }
        for (name, help, value) in [
            (
                "wschat_bytes_received_total",
                "Bytes read from sockets.",
                self.bytes_received,
            ),
            (
                "wschat_bytes_sent_total",
                "Bytes written to sockets.",
                self.bytes_sent,
            ),
            (
                "wschat_slow_consumers_dropped_total",
                "Connections closed with 1008 for unread output over the cap.",
                self.slow_consumers_dropped,
            ),
            (
                "wschat_rate_limited_total",
                "Chat messages refused with rate_limited.",
                g.rate_limited_total,
            ),
        ] {
            writeln!(o, "# HELP {name} {help}")?;
            writeln!(o, "# TYPE {name} counter")?;
            writeln!(o, "{name} {value}")?;
        }
        writeln!(o, "# HELP wschat_closes_total Close frames sent, by code.")?;
        writeln!(o, "# TYPE wschat_closes_total counter")?;
        for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1011] {
            if !self.closes.contains_key(&code) {
                writeln!(o, "wschat_closes_total{{code=\"{code}\"}} 0")?;
            }
        }
        for (code, n) in &self.closes {
            writeln!(o, "wschat_closes_total{{code=\"{code}\"}} {n}")?;
        }
        writeln!(
            o,
            "# HELP wschat_tls_reloads_total TLS certificate reloads on SIGHUP, by result."
        )?;
        writeln!(o, "# TYPE wschat_tls_reloads_total counter")?;
        for (result, n) in ["ok", "failed"].iter().zip(self.tls_reloads) {
            writeln!(o, "wschat_tls_reloads_total{{result=\"{result}\"}} {n}")?;
        }
        writeln!(
            o,
            "# HELP wschat_users_named Connections holding a chat name."
        )?;
        writeln!(o, "# TYPE wschat_users_named gauge")?;
        writeln!(o, "wschat_users_named {}", g.users_named)?;
        writeln!(
            o,
            "# HELP wschat_fd_capacity File descriptors this process may open."
        )?;
        writeln!(o, "# TYPE wschat_fd_capacity gauge")?;
        writeln!(o, "wschat_fd_capacity {}", g.fd_capacity)?;
        o.push_str(&g.extra);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_contract_name() {
        let mut m = Metrics {
            accepted_total: 3,
            ..Metrics::default()
        };
        m.rejected("origin");
        m.close_sent(4000);
        m.close_sent(1000);
        m.tls_reloaded(false);
        let text = m.render(&Gauges {
            users_named: 2,
            ..Gauges::default()
        });
        for line in [
            "wschat_connections_open{state=\"handshake\"} 0",
            "wschat_connections_open{state=\"http\"} 0",
            "wschat_connections_accepted_total 3",
            "wschat_connections_rejected_total{reason=\"origin\"} 1",
            "wschat_connections_rejected_total{reason=\"limit\"} 0",
            "wschat_messages_received_total{app=\"chat\"} 0",
            "wschat_messages_sent_total{app=\"echo\"} 0",
            "wschat_bytes_received_total 0",
            "wschat_bytes_sent_total 0",
            "wschat_closes_total{code=\"1000\"} 1",
            "wschat_closes_total{code=\"4000\"} 1",
            "wschat_closes_total{code=\"1001\"} 0",
            "wschat_slow_consumers_dropped_total 0",
            "wschat_rate_limited_total 0",
            "wschat_users_named 2",
            "wschat_tls_reloads_total{result=\"ok\"} 0",
            "wschat_tls_reloads_total{result=\"failed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
