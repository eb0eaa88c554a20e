//! Clusters (PROTOCOL section 12): real `wschat` processes joined through a
//! real `redis-server`, each test with its own Redis and nodes on free
//! 127.0.0.1 ports, all stopped by PID.

mod common;

use common::QUIET;
use common::client::{Client, Got, assert_fields, user_color, user_names};
use common::metrics::scrape;
use common::raw::{self, Raw, new_key, upgrade_request};
use common::redis::Redis;
use common::server::{BinServer, bin};
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Node timeout used by these tests (seconds): short, so deaths are quick.
const NODE_TIMEOUT: u64 = 2;

/// A `wschat` node of the cluster `name` on `redis`, on a free port (or
/// `port`), with `extra` flags; waits until it serves (`/healthz` 200).
fn node_on(redis: &Redis, name: &str, port: u16, extra: &[&str]) -> BinServer {
    let mut cmd = bin();
    cmd.arg(port.to_string())
        .args(["--host", "127.0.0.1", "--redis", &redis.url()])
        .args(["--cluster-name", name])
        .args(["--node-timeout", &NODE_TIMEOUT.to_string()])
        .args(["--rate-limit", "0", "--shutdown-timeout", "1"])
        .args(extra);
    let server = BinServer::start(cmd);
    wait_healthy(server.addr, Duration::from_secs(5));
    server
}

fn node(redis: &Redis, name: &str) -> BinServer {
    node_on(redis, name, 0, &[])
}

/// `/healthz` status and body.
fn health(addr: SocketAddr) -> (u16, String) {
    let r = raw::get(addr, "/healthz");
    (r.status, r.body_text())
}

/// Waits for `/healthz` to answer 200; returns how long it took.
fn wait_healthy(addr: SocketAddr, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if health(addr).0 == 200 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{addr} not healthy within {within:?}: {:?}",
            health(addr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next JSON message that is not a `users` snapshot answer nor a
/// history message (tests that want those read them explicitly).
fn next_event(c: &mut Client) -> Value {
    loop {
        let m = c.recv();
        if m["type"] != "history" {
            return m;
        }
    }
}

/// A chat client on `addr` that joined as `name` with `color`; its own join
/// event is consumed.
fn joined(addr: SocketAddr, name: &str, color: &str) -> Client {
    let (mut c, _) = Client::chat_at(addr, "/");
    c.send(json!({"type": "join", "name": name, "color": color}));
    let event = next_event(&mut c);
    assert_fields(
        &event,
        &json!({"type": "system", "event": "join", "name": name, "color": color}),
    );
    c
}

/// Reads until a message satisfying `want`; every message read on the way
/// is returned too (last is the match).
fn until(c: &mut Client, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let m = c.recv();
        let done = want(&m);
        seen.push(m);
        if done {
            return seen;
        }
    }
}

fn is_event(m: &Value, event: &str, name: &str) -> bool {
    m["type"] == "system" && m["event"] == event && m["name"] == name
}

/// Waits (up to the node timeout) for a metric to reach `value`.
fn wait_metric(addr: SocketAddr, key: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(NODE_TIMEOUT + 1);
    loop {
        let m = scrape(addr);
        if m.get(key) == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is not {value}: {}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_nodes_serve_one_chat() {
    let redis = Redis::start();
    let a = node(&redis, "two");
    let b = node(&redis, "two");

    let mut alice = joined(a.addr, "alice", "FF0000");
    // Bob, connecting to the other node, sees alice in his snapshot.
    let (mut bob, users) = Client::chat_at(b.addr, "/");
    assert_eq!(user_names(&users), ["alice"]);
    assert_eq!(user_color(&users, "alice"), "FF0000");
    bob.send(json!({"type": "join", "name": "bob", "color": "00FF00"}));
    assert_fields(
        &next_event(&mut bob),
        &json!({"event": "join", "name": "bob", "color": "00FF00"}),
    );
    assert_fields(
        &alice.recv(),
        &json!({"type": "system", "event": "join", "name": "bob", "color": "00FF00"}),
    );

    // A broadcast reaches both nodes with one id.
    alice.send(json!({"message": "hello from a"}));
    let own = alice.recv();
    let theirs = bob.recv();
    assert_fields(
        &own,
        &json!({"type": "usermsg", "name": "alice", "message": "hello from a", "color": "FF0000"}),
    );
    assert_eq!(own, theirs);
    let id = own["id"].as_str().expect("broadcast id");
    assert!(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{id}"
    );

    // A private message: the recipient on the other node and the sender's
    // copy, nobody else; no id.
    let mut carol = joined(a.addr, "carol", "0000FF");
    assert!(is_event(&alice.recv(), "join", "carol"));
    assert!(is_event(&bob.recv(), "join", "carol"));
    carol.send(json!({"message": "psst", "toname": "BOB"}));
    let copy = carol.recv();
    assert_fields(
        &copy,
        &json!({"type": "usermsg", "name": "carol", "message": "psst", "toname": "bob", "private": true}),
    );
    assert!(copy.get("id").is_none(), "{copy}");
    assert_eq!(bob.recv(), copy);
    alice.expect_quiet();

    // Users on request list everyone of both nodes.
    assert_eq!(user_names(&bob.barrier()), ["alice", "bob", "carol"]);
    assert_eq!(user_names(&alice.barrier()), ["alice", "bob", "carol"]);

    // Rename with a colour change, seen everywhere; the list follows.
    bob.send(json!({"type": "join", "name": "Robert", "color": "#abcdef"}));
    let rename = json!({"type": "system", "event": "rename", "name": "Robert", "from": "bob", "color": "ABCDEF"});
    assert_fields(&bob.recv(), &rename);
    assert_fields(&alice.recv(), &rename);
    assert_fields(&carol.recv(), &rename);
    let users = carol.barrier();
    assert_eq!(user_names(&users), ["Robert", "alice", "carol"]);
    assert_eq!(user_color(&users, "Robert"), "ABCDEF");
    // A name held on the other node is taken here.
    let mut other = Client::chat(a.addr);
    other.send(json!({"type": "join", "name": "robert"}));
    other.expect_error("name_taken");
    // And the freed old name is free everywhere.
    other.send(json!({"type": "join", "name": "Bob"}));
    assert!(is_event(&other.recv(), "join", "Bob"));
    assert!(is_event(&bob.recv(), "join", "Bob"));
    assert!(is_event(&alice.recv(), "join", "Bob"));
    assert!(is_event(&carol.recv(), "join", "Bob"));

    // Leave: closing on one node is seen on the other.
    drop(carol);
    let leave =
        json!({"type": "system", "event": "leave", "name": "carol", "message": "carol left"});
    assert_fields(&bob.recv(), &leave);
    assert_fields(&alice.recv(), &leave);
    assert_eq!(user_names(&bob.barrier()), ["Bob", "Robert", "alice"]);

    // The metrics of section 12.
    let m = scrape(a.addr);
    assert_eq!(m.get("wschat_cluster_connected"), 1.0, "{}", m.text);
    // Each node counts the others at its heartbeat (a quarter of the timeout).
    wait_metric(a.addr, "wschat_cluster_nodes", 2.0);
    assert!(m.get("wschat_cluster_events_published_total") >= 4.0);
    assert!(m.get("wschat_cluster_events_received_total") >= 8.0);
    assert_eq!(m.get("wschat_cluster_reconnects_total"), 0.0);
    assert_eq!(m.get("wschat_users_named"), 3.0, "{}", m.text);
}
