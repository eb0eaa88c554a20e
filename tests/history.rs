//! Message ids and history (PROTOCOL section 9) against a real server:
//! what is kept and in which order, the limits, `--history 0`, the
//! request, the gauges, and ids that stay unique across a restart.

mod common;

use common::client::{Client, assert_fields};
use common::metrics::scrape;
use common::raw;
use common::server::{BinServer, TestServer, bin};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "history-token-0123456789";

fn valid_id(id: &Value) -> bool {
    id.as_str().is_some_and(|id| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

fn history_of(addr: SocketAddr) -> Vec<Value> {
    let (_, _, history) = Client::greeted(addr, "/");
    history["messages"].as_array().expect("messages").clone()
}

fn publish(addr: SocketAddr, body: &Value) -> raw::Response {
    let body = body.to_string();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let length = format!("Content-Length: {}", body.len());
    let mut text = raw::request(
        "POST /api/publish HTTP/1.1",
        &["Host: 127.0.0.1", &auth, &length],
    );
    text.push_str(&body);
    raw::http(addr, &text)
}

#[test]
fn the_last_n_broadcasts_oldest_first_exactly_as_delivered() {
    let server = TestServer::with(|c| c.history = 3);
    let mut alice = Client::named(server.addr, "alice");
    assert!(history_of(server.addr).is_empty());
    let mut delivered = Vec::new();
    for i in 0..5 {
        alice.send(json!({"message": format!("line {i}"), "color": "#123abc"}));
        let line = alice.recv();
        assert_eq!(line["type"], "usermsg");
        assert!(valid_id(&line["id"]), "{line}");
        delivered.push(line);
    }
    let ids: HashSet<&str> = delivered
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "ids are unique");
    assert_eq!(history_of(server.addr), delivered[2..]);
}

#[test]
fn private_lines_system_events_and_errors_are_not_kept_announcements_are() {
    let server = TestServer::with(|c| c.admin_token = Some(TOKEN.into()));
    let mut alice = Client::named(server.addr, "alice");
    let mut bob = Client::named(server.addr, "bob");
    alice.recv(); // bob's join
    bob.send(json!({"message": "psst", "toname": "alice"}));
    let private = alice.recv();
    assert_eq!(private["private"], true);
    assert!(private.get("id").is_none(), "{private}");
    bob.recv();
    bob.send(json!({"name": "robert", "message": "renamed"}));
    alice.recv(); // rename
    let line = alice.recv();
    bob.recv();
    assert_eq!(bob.recv(), line);
    bob.send(json!({"message": ""}));
    bob.expect_error("bad_request");
    assert_eq!(
        publish(
            server.addr,
            &json!({"message": "to alice", "toname": "alice"})
        )
        .status,
        200
    );
    alice.recv();
    assert_eq!(
        publish(server.addr, &json!({"message": "to all"})).status,
        200
    );
    let announce = alice.recv();
    drop(bob);
    alice.recv(); // leave
    assert_eq!(history_of(server.addr), [line, announce]);
}

#[test]
fn a_history_request_is_answered_with_the_history_as_it_stands() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    alice.send(json!({"type": "history", "name": 5, "extra": true}));
    assert_eq!(alice.recv(), json!({"type": "history", "messages": []}));
    alice.send(json!({"message": "one"}));
    let one = alice.recv();
    alice.send(json!({"type": "history"}));
    assert_eq!(alice.recv(), json!({"type": "history", "messages": [one]}));
    // An unnamed connection may ask too.
    let mut unnamed = Client::chat(server.addr);
    unnamed.send(json!({"type": "history"}));
    assert_eq!(unnamed.recv()["messages"], json!([one]));
}

#[test]
fn history_zero_sends_no_history_message_and_ignores_the_request() {
    let server = TestServer::with(|c| c.history = 0);
    let mut alice = Client::connect(server.addr, "/");
    assert_eq!(alice.recv()["type"], "users");
    alice.expect_quiet();
    alice.join("alice");
    alice.send(json!({"message": "one"}));
    let line = alice.recv();
    assert!(valid_id(&line["id"]), "ids do not need the history: {line}");
    alice.send(json!({"type": "history"}));
    // No answer, no error: the very next message answers the barrier.
    alice.barrier();
    let mut bob = Client::connect(server.addr, "/");
    assert_eq!(bob.recv()["type"], "users");
    bob.expect_quiet();
    let metrics = scrape(server.addr);
    assert_eq!(metrics.get("wschat_history_messages"), 0.0);
    assert_eq!(metrics.get("wschat_history_bytes"), 0.0);
}

#[test]
fn the_history_stays_within_half_the_output_budget() {
    let max_output = 8192;
    let server = TestServer::with(|c| {
        c.max_output_bytes = max_output;
        c.history = 1000;
    });
    let mut alice = Client::named(server.addr, "alice");
    let mut delivered = Vec::new();
    for i in 0..40 {
        alice.send(json!({"message": format!("{i:03} {}", "x".repeat(300))}));
        delivered.push(alice.recv());
    }
    let kept = history_of(server.addr);
    let bytes: usize = kept.iter().map(|m| m.to_string().len()).sum();
    assert!(bytes <= max_output / 2, "{bytes} bytes kept");
    assert!(kept.len() >= 5, "only {} kept", kept.len());
    // The most recent run, without a gap.
    assert_eq!(kept, delivered[delivered.len() - kept.len()..]);
    let metrics = scrape(server.addr);
    assert_eq!(metrics.get("wschat_history_messages"), kept.len() as f64);
    let gauge = metrics.get("wschat_history_bytes");
    assert!(gauge > 0.0 && gauge <= (max_output / 2) as f64, "{gauge}");
    assert_eq!(
        gauge, bytes as f64,
        "serde_json writes what the server wrote"
    );
}

#[test]
fn metrics_count_the_history() {
    let server = TestServer::new();
    let metrics = scrape(server.addr);
    assert!(metrics.mentions("wschat_history_messages"));
    assert_eq!(metrics.get("wschat_history_messages"), 0.0);
    assert_eq!(metrics.get("wschat_history_bytes"), 0.0);
    let mut alice = Client::named(server.addr, "alice");
    alice.send(json!({"message": "counted"}));
    let line = alice.recv();
    let metrics = scrape(server.addr);
    assert_eq!(metrics.get("wschat_history_messages"), 1.0);
    assert_eq!(
        metrics.get("wschat_history_bytes"),
        line.to_string().len() as f64
    );
}

/// Runs the binary, sends `n` broadcast lines, returns their ids.
fn ids_of_one_run(n: usize) -> Vec<String> {
    let mut cmd = bin();
    cmd.args(["0", "--host", "127.0.0.1", "--rate-limit", "0"]);
    let mut server = BinServer::start(cmd);
    let mut alice = Client::named(server.addr, "alice");
    let ids = (0..n)
        .map(|i| {
            alice.send(json!({"message": format!("m{i}")}));
            let line = alice.recv();
            assert_fields(
                &line,
                &json!({"type": "usermsg", "message": format!("m{i}")}),
            );
            assert!(valid_id(&line["id"]), "{line}");
            line["id"].as_str().unwrap().to_string()
        })
        .collect();
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    ids
}

#[test]
fn ids_stay_unique_across_a_restart() {
    let first: HashSet<String> = ids_of_one_run(50).into_iter().collect();
    let second: HashSet<String> = ids_of_one_run(50).into_iter().collect();
    assert_eq!((first.len(), second.len()), (50, 50));
    assert!(first.is_disjoint(&second), "{first:?} / {second:?}");
}
