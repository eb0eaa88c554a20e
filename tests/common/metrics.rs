//! Fetching and reading `/metrics` (Prometheus text exposition).

use std::collections::HashMap;
use std::net::SocketAddr;

use super::raw;

/// One scrape: series (name with labels, spaces removed) → value.
pub struct Metrics {
    pub text: String,
    series: HashMap<String, f64>,
}

impl Metrics {
    /// A series value; a series not exposed yet counts as 0.
    /// `key` is written like `wschat_closes_total{code="1000"}`.
    pub fn get(&self, key: &str) -> f64 {
        self.series.get(&normalise(key)).copied().unwrap_or(0.0)
    }

    /// Whether a metric name appears at all (as a sample or in HELP/TYPE).
    pub fn mentions(&self, name: &str) -> bool {
        self.text.lines().any(|line| {
            let line = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            line.starts_with(name) && matches!(line[name.len()..].chars().next(), Some(' ' | '{'))
        })
    }
}

/// Normalises a series key: no spaces, labels sorted.
fn normalise(key: &str) -> String {
    let key: String = key.chars().filter(|c| !c.is_whitespace()).collect();
    match key.split_once('{') {
        Some((name, labels)) => {
            let labels = labels.trim_end_matches('}');
            let mut parts: Vec<&str> = labels.split(',').filter(|s| !s.is_empty()).collect();
            parts.sort();
            format!("{name}{{{}}}", parts.join(","))
        }
        None => key,
    }
}

pub fn parse(text: &str) -> Metrics {
    let mut series = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad metrics value in {line:?}"));
        series.insert(normalise(key), value);
    }
    Metrics {
        text: text.to_string(),
        series,
    }
}

/// Scrapes `/metrics`.
pub fn scrape(addr: SocketAddr) -> Metrics {
    let response = raw::get(addr, "/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    parse(&response.body_text())
}
