//! Results: one `Row` per run (or per ramp step), printed for people and
//! appended to `--csv FILE` in one fixed column set shared by all modes, so
//! one file can hold a whole benchmark matrix.

use std::io::Write;
use std::path::Path;

/// Every CSV column, in order. Modes leave the ones that do not apply empty.
pub const COLUMNS: &[&str] = &[
    "unix_time",
    "label",
    "mode",
    "phase",
    "clients",
    "senders",
    "in_flight",
    "rate",
    "duration_s",
    "sent",
    "offered_mps",
    "delivered_fps",
    "expected",
    "delivered",
    "delivery_pct",
    "gaps",
    "reorders",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "disconnects",
    "errors",
    "server_cpu_pct",
    "bench_cpu_pct",
    "server_wait_pct",
    "bench_wait_pct",
    "send_lag_p99_ms",
    "handshakes_per_s",
    "conn_ok",
    "conn_failed",
    "rss_before_kib",
    "rss_after_kib",
    "rss_per_conn_kib",
    "round_trips_per_s",
    "nodes",
    "nodes_cpu_pct",
    "redis_cpu_pct",
    "redis_us_per_event",
    "bottleneck",
    "verdict",
];

#[derive(Default)]
pub struct Row {
    values: Vec<(&'static str, String)>,
}

impl Row {
    pub fn new(label: &str, mode: &str, phase: &str) -> Row {
        let mut r = Row::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        r.set("unix_time", now);
        r.set("label", label);
        r.set("mode", mode);
        r.set("phase", phase);
        r
    }

    pub fn set(&mut self, col: &'static str, v: impl ToString) {
        debug_assert!(COLUMNS.contains(&col), "unknown column {col}");
        let v = v.to_string();
        match self.values.iter_mut().find(|(c, _)| *c == col) {
            Some(slot) => slot.1 = v,
            None => self.values.push((col, v)),
        }
    }

    /// Sets a float with `digits` decimals.
    pub fn setf(&mut self, col: &'static str, v: f64, digits: usize) {
        self.set(col, format!("{v:.digits$}"));
    }

    pub fn get(&self, col: &str) -> &str {
        self.values
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn csv_line(&self) -> String {
        let cells: Vec<String> = COLUMNS.iter().map(|c| csv_escape(self.get(c))).collect();
        cells.join(",")
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Appends `rows` to `path`, writing the header first if the file is new or
/// empty.
pub fn append_csv(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let fresh = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut out = String::new();
    if fresh {
        out.push_str(&COLUMNS.join(","));
        out.push('\n');
    }
    for r in rows {
        out.push_str(&r.csv_line());
        out.push('\n');
    }
    f.write_all(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_follow_columns() {
        let mut r = Row::new("wschat", "fanout", "run");
        r.set("clients", 100);
        r.set("bottleneck", "generator: cpu, \"lag\"");
        let line = r.csv_line();
        assert_eq!(line.matches(',').count(), COLUMNS.len() - 1 + 1);
        assert!(line.contains(",wschat,fanout,run,100,"));
        assert!(line.contains("\"generator: cpu, \"\"lag\"\"\""));
    }
}
