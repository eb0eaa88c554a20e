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
    // Others' joins may come first.
    let seen = until(&mut c, |m| m["name"] == name || m["type"] == "error");
    assert_fields(
        seen.last().unwrap(),
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

/// Reads whatever arrives until the connection is quiet.
fn drain(c: &mut Client) {
    while let Got::Msg(_) = c.next_within(QUIET) {}
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

/// Section 5 in a cluster: a client that does not wait for answers still
/// has its messages handled in order, each against the state the earlier
/// ones left (a join then a line without a name), and an error never
/// overtakes its own earlier line on its way through Redis.
#[test]
fn one_clients_pipelined_messages_keep_their_order_and_meaning() {
    let redis = Redis::start();
    let a = node(&redis, "pipe");
    let b = node(&redis, "pipe");
    let mut watcher = Client::chat(b.addr);
    let mut c = Client::chat(a.addr);
    c.send(json!({"type": "join", "name": "pip", "color": "123456"}));
    c.send(json!({"message": "no name needed"}));
    c.send_text("not json");
    for k in 0..20 {
        // The classic clients send their name with every line.
        c.send(json!({"name": "pip", "message": format!("line {k}"), "color": "123456"}));
    }
    c.send(json!({"type": "join", "name": ""}));
    let mut expected = vec![
        json!({"type": "system", "event": "join", "name": "pip"}),
        json!({"type": "usermsg", "message": "no name needed"}),
        json!({"type": "error", "code": "bad_json"}),
    ];
    for k in 0..20 {
        expected.push(json!({"type": "usermsg", "message": format!("line {k}")}));
    }
    expected.push(json!({"type": "error", "code": "invalid_name"}));
    for want in &expected {
        assert_fields(&c.recv(), want);
        if want["type"] != "error" {
            assert_fields(&watcher.recv(), want);
        }
    }
    c.expect_quiet();
    watcher.expect_quiet();
}

/// Section 12 item 2: two nodes claim one name at the same moment, over
/// and over; exactly one claim wins, the other gets `name_taken`, and
/// nothing of the losing message is delivered anywhere.
#[test]
fn concurrent_claims_of_one_name_have_exactly_one_winner() {
    const ROUNDS: usize = 100;
    let redis = Redis::start();
    let a = node(&redis, "race");
    let b = node(&redis, "race");
    let mut one = Client::chat(a.addr);
    let mut two = Client::chat(b.addr);
    let mut watch_a = Client::chat(a.addr);
    let mut watch_b = Client::chat(b.addr);
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let name = format!("race{round}");
        let texts = [format!("one {round}"), format!("two {round}")];
        one.send(json!({"name": name, "message": texts[0]}));
        two.send(json!({"name": name, "message": texts[1]}));
        let mut won = Vec::new();
        for (i, c) in [&mut one, &mut two].into_iter().enumerate() {
            let (mut line, mut error) = (None, false);
            while line.is_none() || (line.as_deref() != Some(texts[i].as_str()) && !error) {
                let m = c.recv();
                match m["type"].as_str() {
                    Some("usermsg") => {
                        assert_eq!(m["name"], name.as_str(), "round {round}: {m}");
                        assert!(line.is_none(), "round {round}: a second line {m}");
                        line = m["message"].as_str().map(str::to_string);
                    }
                    Some("error") => {
                        assert_eq!(m["code"], "name_taken", "round {round}: {m}");
                        assert!(!error, "round {round}: two errors");
                        error = true;
                    }
                    Some("system") => assert_eq!(m["name"], name.as_str(), "round {round}: {m}"),
                    _ => panic!("round {round}: unexpected {m}"),
                }
            }
            if line.as_deref() == Some(texts[i].as_str()) {
                assert!(!error, "round {round}: the winner got name_taken");
                won.push(i);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
        wins[won[0]] += 1;
        for w in [&mut watch_a, &mut watch_b] {
            let seen = until(w, |m| m["type"] == "usermsg");
            assert_eq!(seen.len(), 2, "round {round}: {seen:?}");
            assert!(
                seen[0]["event"] == "join" || seen[0]["event"] == "rename",
                "{seen:?}"
            );
            assert_eq!(seen[0]["name"], name.as_str());
            assert_eq!(seen[1]["name"], name.as_str());
            assert_eq!(seen[1]["message"], texts[won[0]].as_str());
        }
    }
    // Nothing of any losing message is still on its way.
    for c in [&mut one, &mut two, &mut watch_a, &mut watch_b] {
        c.barrier();
    }
    eprintln!(
        "{ROUNDS} rounds: node A won {}, node B won {}",
        wins[0], wins[1]
    );
}

/// Section 12 item 3: three senders on three nodes, a receiver on every
/// node: everyone sees the same sequence, and each sender's lines in the
/// order sent.
#[test]
fn three_nodes_see_one_order() {
    const LINES: usize = 40;
    let redis = Redis::start();
    let nodes: Vec<BinServer> = (0..3).map(|_| node(&redis, "order")).collect();
    let mut receivers: Vec<Client> = nodes.iter().map(|n| Client::chat(n.addr)).collect();
    let senders: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| joined(n.addr, &format!("s{i}"), "00AA00"))
        .collect();
    // Every receiver saw the three joins, in one order.
    let joins: Vec<Vec<Value>> = receivers
        .iter_mut()
        .map(|r| (0..3).map(|_| r.recv()).collect())
        .collect();
    assert!(joins.iter().all(|j| *j == joins[0]), "{joins:?}");
    let threads: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                for k in 0..LINES {
                    s.send(json!({"message": format!("{i}:{k}")}));
                }
                s
            })
        })
        .collect();
    let mut senders: Vec<Client> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut sequences = Vec::new();
    for c in receivers.iter_mut().chain(senders.iter_mut()) {
        let mut lines = Vec::new();
        while lines.len() < 3 * LINES {
            let m = c.recv();
            if m["type"] == "usermsg" {
                lines.push(m["message"].as_str().unwrap().to_string());
            }
        }
        sequences.push(lines);
    }
    for s in &sequences {
        assert_eq!(s, &sequences[0], "two connections saw different orders");
    }
    for i in 0..3 {
        let mine: Vec<&String> = sequences[0]
            .iter()
            .filter(|l| l.starts_with(&format!("{i}:")))
            .collect();
        let sent: Vec<String> = (0..LINES).map(|k| format!("{i}:{k}")).collect();
        assert_eq!(
            mine,
            sent.iter().collect::<Vec<_>>(),
            "sender {i} reordered"
        );
    }
    // Leaving from the third node reaches the first two.
    drop(senders.pop());
    for r in receivers.iter_mut() {
        let leave = until(r, |m| m["type"] == "system");
        assert!(is_event(leave.last().unwrap(), "leave", "s2"), "{leave:?}");
    }
}

/// Section 12 item 5: SIGTERM publishes the node's leaves before it exits;
/// SIGKILL has its names freed, with leaves, within --node-timeout.
#[test]
fn a_stopped_node_says_goodbye_and_a_dead_one_is_reaped() {
    let redis = Redis::start();
    let a = node(&redis, "stop");
    let mut b = node(&redis, "stop");
    let mut c = node(&redis, "stop");
    let mut alice = joined(a.addr, "alice", "AA0000");
    let mut bob = joined(b.addr, "bob", "BB0000");
    let mut carol = joined(b.addr, "carol", "CC0000");
    let _dave = joined(c.addr, "dave", "DD0000");
    drain(&mut alice);
    assert_eq!(
        user_names(&alice.barrier()),
        ["alice", "bob", "carol", "dave"]
    );

    b.sigterm();
    assert_eq!(bob.expect_close(), Some(1001));
    assert_eq!(carol.expect_close(), Some(1001));
    let status = b.wait_exit(Duration::from_secs(4)).expect("node b exits");
    assert!(status.success(), "{status:?}");
    // Published before the exit: already on its way to alice.
    let mut left: Vec<String> = (0..2)
        .map(|_| {
            let m = alice.recv();
            assert_eq!(m["event"], "leave", "{m}");
            m["name"].as_str().unwrap().to_string()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["bob", "carol"]);

    let killed = Instant::now();
    c.child.kill().expect("SIGKILL node c");
    let _ = c.child.wait();
    let deadline = Duration::from_secs(NODE_TIMEOUT + 1);
    match alice.next_within(deadline) {
        Got::Msg(Message::Text(t)) => {
            let m: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_fields(&m, &json!({"event": "leave", "name": "dave"}));
        }
        other => panic!("no leave for dave within {deadline:?}: {other:?}"),
    }
    eprintln!("dead node reaped after {:?}", killed.elapsed());
    assert_eq!(user_names(&alice.barrier()), ["alice"]);
    // Its name is free again.
    let mut dave = Client::chat(a.addr);
    dave.join("dave");
}

/// Section 12 item 6: Redis goes away and comes back empty.
#[test]
fn losing_redis_keeps_connections_and_recovers_when_it_returns_empty() {
    let mut redis = Redis::start();
    let a = node(&redis, "lost");
    let b = node(&redis, "lost");
    let mut alice = joined(a.addr, "alice", "AA0000");
    let carol = joined(a.addr, "carol", "CC0000");
    let mut bob = joined(b.addr, "bob", "BB0000");
    drain(&mut alice);
    assert_eq!(user_names(&bob.barrier()), ["alice", "bob", "carol"]);

    redis.kill();
    let start = Instant::now();
    while health(a.addr).0 != 503 {
        assert!(start.elapsed() < Duration::from_secs(3), "a still healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(health(a.addr), (503, "redis unavailable\n".to_string()));
    // Handshakes are refused; plain HTTP is served.
    let mut raw = Raw::connect(a.addr);
    raw.send(upgrade_request("/", &new_key(), &[]).as_bytes());
    assert_eq!(raw.read_head().status, 503);
    assert_eq!(raw::get(a.addr, "/").status, 200);
    let m = scrape(a.addr);
    assert_eq!(m.get("wschat_cluster_connected"), 0.0);
    // Every well-formed request gets `unavailable`; malformed ones as usual.
    alice.send(json!({"message": "anyone?"}));
    alice.expect_error("unavailable");
    alice.send(json!({"type": "users"}));
    alice.expect_error("unavailable");
    alice.send_text("{");
    alice.expect_error("bad_json");
    // Carol leaves meanwhile: her name stays reserved until her leave is
    // published.
    drop(carol);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(health(b.addr).0, 503);

    redis.spawn();
    let back = Instant::now();
    let took = [a.addr, b.addr].map(|n| wait_healthy(n, Duration::from_secs(5)));
    eprintln!("recovered in {took:?}");
    assert!(
        back.elapsed() <= Duration::from_secs(2),
        "recovery took {:?}",
        back.elapsed()
    );
    // The held-back leave is published, to both nodes' users.
    for c in [&mut bob, &mut alice] {
        let seen = until(c, |m| m["type"] == "system");
        assert!(is_event(seen.last().unwrap(), "leave", "carol"), "{seen:?}");
    }
    // Names were registered again: alice's is taken on the other node.
    let mut thief = Client::chat(b.addr);
    thief.send(json!({"type": "join", "name": "Alice"}));
    thief.expect_error("name_taken");
    assert_eq!(user_names(&thief.barrier()), ["alice", "bob"]);
    // And chat flows again, no connection was closed.
    alice.send(json!({"message": "back"}));
    assert_fields(&bob.recv(), &json!({"name": "alice", "message": "back"}));
    assert_fields(&alice.recv(), &json!({"name": "alice", "message": "back"}));
    assert!(scrape(a.addr).get("wschat_cluster_reconnects_total") >= 1.0);
}

/// Sockets the process `pid` has open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.to_string_lossy().starts_with("socket:"))
        .count()
}

/// `--reuse-port`: two nodes bind one port; the kernel spreads the
/// connections and they chat as one.
#[test]
fn reuse_port_lets_two_nodes_share_one_port() {
    let redis = Redis::start();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let a = node_on(&redis, "port", port, &["--reuse-port"]);
    let b = node_on(&redis, "port", port, &["--reuse-port"]);
    assert_eq!(a.addr, b.addr);
    std::thread::sleep(Duration::from_millis(200));
    let before = [sockets_of(a.pid()), sockets_of(b.pid())];
    let mut clients: Vec<Client> = (0..16)
        .map(|i| joined(a.addr, &format!("u{i}"), "010203"))
        .collect();
    let after = [sockets_of(a.pid()), sockets_of(b.pid())];
    let got = [after[0] - before[0], after[1] - before[1]];
    assert!(got[0] > 0 && got[1] > 0, "connections per node: {got:?}");
    clients[0].send(json!({"message": "all of you"}));
    for c in clients.iter_mut() {
        let seen = until(c, |m| m["type"] == "usermsg");
        assert_fields(
            seen.last().unwrap(),
            &json!({"name": "u0", "message": "all of you"}),
        );
    }
    assert_eq!(user_names(&clients[15].barrier()).len(), 16);
}

/// A hostile client flooding node A with garbage does not slow the users
/// of node B: garbage never reaches Redis.
#[test]
fn a_flood_on_one_node_does_not_slow_another() {
    use std::io::{Read, Write};
    let redis = Redis::start();
    let a = node(&redis, "flood");
    let b = node(&redis, "flood");
    let mut alice = joined(b.addr, "alice", "AA0000");
    let mut bob = joined(b.addr, "bob", "BB0000");
    assert!(is_event(&alice.recv(), "join", "bob"));

    let round_trips = |alice: &mut Client, bob: &mut Client| {
        let mut times: Vec<Duration> = (0..30)
            .map(|k| {
                let t = Instant::now();
                alice.send(json!({"message": format!("ping {k}")}));
                until(bob, |m| m["message"] == format!("ping {k}").as_str());
                until(alice, |m| m["message"] == format!("ping {k}").as_str());
                t.elapsed()
            })
            .collect();
        times.sort();
        times
    };
    let calm = round_trips(&mut alice, &mut bob);

    let flooder = raw::ws(a.addr, "/");
    let mut reader = flooder.stream.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let mut stream = flooder.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut burst = Vec::new();
            for _ in 0..256 {
                burst.extend(raw::frame(true, 1, b"}{ garbage ]["));
            }
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if stream.write_all(&burst).is_err() {
                    break;
                }
                sent += 256;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let stormy = round_trips(&mut alice, &mut bob);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let _ = flooder.stream.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let received = scrape(a.addr).get("wschat_messages_received_total{app=\"chat\"}");
    eprintln!(
        "median round trip on B: calm {:?}, during the flood {:?} (max {:?}); {sent} garbage frames sent, A received {received}",
        calm[15], stormy[15], stormy[29]
    );
    assert!(received > 10_000.0, "the flood did not happen: {received}");
    assert!(
        stormy[15] < Duration::from_millis(100) && stormy[29] < Duration::from_secs(1),
        "B slowed down: {stormy:?}"
    );
}

/// Sends `signal` (e.g. "STOP") to a process by PID.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Section 12, after Redis restarted empty: a claim that reaches the new
/// Redis before the holder's node registered its names again wins; the old
/// holder gets `name_taken`, its `leave` goes out, and it stays connected,
/// unnamed. (Node A is frozen with SIGSTOP to hold its re-registration
/// back; node C starts after the restart, so it never knew the old name.)
#[test]
fn after_an_empty_restart_the_first_registration_keeps_the_name() {
    let mut redis = Redis::start();
    let a = node(&redis, "again");
    let b = node(&redis, "again");
    let mut alice = joined(a.addr, "alice", "AA0000");
    let mut bob = joined(b.addr, "bob", "BB0000");
    drain(&mut alice);

    signal(a.pid(), "STOP");
    redis.kill();
    let start = Instant::now();
    while health(b.addr).0 != 503 {
        assert!(start.elapsed() < Duration::from_secs(3), "b still healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.spawn();
    wait_healthy(b.addr, Duration::from_secs(3));
    let c = node(&redis, "again");
    let (mut thief, users) = Client::chat_at(c.addr, "/");
    assert_eq!(user_names(&users), ["bob"], "only registered names");
    thief.send(json!({"type": "join", "name": "Alice", "color": "00CC00"}));
    assert!(is_event(&next_event(&mut thief), "join", "Alice"));
    // Bob's node still listed the old alice: her leave comes first.
    assert!(is_event(&bob.recv(), "leave", "alice"));
    assert!(is_event(&bob.recv(), "join", "Alice"));

    signal(a.pid(), "CONT");
    wait_healthy(a.addr, Duration::from_secs(3));
    let (mut error, mut leave, mut join) = (false, false, false);
    while !(error && leave && join) {
        let m = alice.recv();
        error |= m["type"] == "error" && m["code"] == "name_taken";
        leave |= is_event(&m, "leave", "alice");
        join |= is_event(&m, "join", "Alice");
    }
    // Still connected, without a name.
    alice.send(json!({"message": "am I here?"}));
    alice.expect_error("not_joined");
    let users = alice.barrier();
    assert_eq!(user_names(&users), ["Alice", "bob"]);
    assert_eq!(user_color(&users, "Alice"), "00CC00");
    thief.send(json!({"message": "mine now"}));
    assert_fields(
        &alice.recv(),
        &json!({"name": "Alice", "message": "mine now"}),
    );
}

/// A node that dies while Redis is away, and Redis comes back empty: no
/// lease of it is left to lapse, so the survivors give its names up a node
/// timeout after they are back, with leaves.
#[test]
fn a_node_that_died_while_redis_was_away_is_given_up() {
    let mut redis = Redis::start();
    let a = node(&redis, "ghost");
    let b = node(&redis, "ghost");
    let mut c = node(&redis, "ghost");
    let mut alice = joined(a.addr, "alice", "AA0000");
    let mut bob = joined(b.addr, "bob", "BB0000");
    let _dave = joined(c.addr, "dave", "DD0000");
    drain(&mut alice);
    drain(&mut bob);

    redis.kill();
    c.child.kill().expect("SIGKILL node c");
    let _ = c.child.wait();
    for n in [a.addr, b.addr] {
        let start = Instant::now();
        while health(n).0 != 503 {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{n} still healthy"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    redis.spawn();
    let back = Instant::now();
    for n in [a.addr, b.addr] {
        wait_healthy(n, Duration::from_secs(3));
    }
    for user in [&mut alice, &mut bob] {
        let deadline = Duration::from_secs(NODE_TIMEOUT + 3);
        let leave = loop {
            match user.next_within(deadline.saturating_sub(back.elapsed())) {
                Got::Msg(Message::Text(t)) => {
                    let m: Value = serde_json::from_str(t.as_str()).unwrap();
                    if m["type"] == "system" {
                        break m;
                    }
                }
                other => panic!("no leave for dave: {other:?}"),
            }
        };
        assert!(is_event(&leave, "leave", "dave"), "{leave}");
    }
    eprintln!("dave given up {:?} after Redis came back", back.elapsed());
    assert_eq!(user_names(&alice.barrier()), ["alice", "bob"]);
    assert_eq!(user_names(&bob.barrier()), ["alice", "bob"]);
    // Exactly one leave each.
    alice.expect_quiet();
    bob.expect_quiet();
}

/// Section 9 in a cluster: every node serves the same history, with the
/// ids the lines were delivered with, and it outlives the node they were
/// sent to.
#[test]
fn history_is_shared_and_outlives_a_node() {
    let redis = Redis::start();
    let mut a = node(&redis, "hist");
    let b = node(&redis, "hist");
    let mut alice = joined(a.addr, "alice", "AA0000");
    let (mut bob, _) = Client::chat_at(b.addr, "/");
    let mut delivered = Vec::new();
    for k in 0..3 {
        alice.send(json!({"message": format!("line {k}")}));
        let m = until(&mut bob, |m| m["type"] == "usermsg");
        delivered.push(m.last().unwrap().clone());
    }
    // A private line is never kept.
    alice.send(json!({"message": "secret", "toname": "alice"}));
    until(&mut alice, |m| m["message"] == "secret");
    let (_, _, history) = Client::greeted(b.addr, "/");
    assert_eq!(history["messages"], json!(delivered), "history on node b");
    bob.send(json!({"type": "history"}));
    assert_eq!(bob.recv()["messages"], json!(delivered));

    // Node a goes; a node started afterwards serves the same history.
    a.sigterm();
    assert!(a.wait_exit(Duration::from_secs(4)).is_some());
    let c = node(&redis, "hist");
    let (_, _, history) = Client::greeted(c.addr, "/");
    assert_eq!(history["messages"], json!(delivered), "history on node c");
}

const TOKEN: &str = "cluster-admin-token-0123456789";

/// An authorised admin request to `addr`.
fn admin(addr: SocketAddr, method_path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let mut head =
        format!("{method_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n");
    if let Some(body) = &body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.as_deref().unwrap_or_default());
    let response = raw::http(addr, &head);
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, json)
}

/// Section 11 in a cluster: users of every node, announcements and kicks
/// reach the other nodes, and a node without Redis answers 503.
#[test]
fn the_admin_api_acts_on_the_whole_cluster() {
    let mut redis = Redis::start();
    let a = node_on(&redis, "admin", 0, &["--admin-token", TOKEN]);
    let b = node_on(&redis, "admin", 0, &["--admin-token", TOKEN]);
    let mut alice = joined(a.addr, "alice", "AA0000");
    let mut bob = joined(b.addr, "bob", "BB0000");
    drain(&mut alice);

    let (status, users) = admin(a.addr, "GET /api/users", None);
    assert_eq!(status, 200, "{users}");
    assert_eq!(user_names(&users), ["alice", "bob"]);

    let (status, answer) = admin(
        a.addr,
        "POST /api/publish",
        Some(json!({"message": "hi all"})),
    );
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().expect("an id");
    for c in [&mut alice, &mut bob] {
        assert_fields(
            &c.recv(),
            &json!({"type": "system", "event": "announce", "message": "hi all", "id": id}),
        );
    }
    let (status, _) = admin(
        a.addr,
        "POST /api/publish",
        Some(json!({"message": "just you", "toname": "BOB"})),
    );
    assert_eq!(status, 200);
    let private = bob.recv();
    assert_fields(
        &private,
        &json!({"event": "announce", "message": "just you"}),
    );
    assert!(private.get("id").is_none(), "{private}");
    alice.expect_quiet();

    // A kick sent to node a closes bob on node b; everyone sees him leave.
    let (status, _) = admin(
        a.addr,
        "POST /api/kick",
        Some(json!({"name": "bob", "reason": "spam"})),
    );
    assert_eq!(status, 200);
    assert_eq!(bob.expect_close(), Some(1008));
    assert!(is_event(&alice.recv(), "leave", "bob"));
    let (status, body) = admin(a.addr, "POST /api/kick", Some(json!({"name": "bob"})));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_user"))
    );

    // Without Redis: check 8.
    redis.kill();
    let start = Instant::now();
    while health(a.addr).0 != 503 {
        assert!(start.elapsed() < Duration::from_secs(3), "a still healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = admin(a.addr, "POST /api/publish", Some(json!({"message": "x"})));
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
    let (status, body) = admin(a.addr, "GET /api/users", None);
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
    // Checks 1-7 still come first.
    let (status, _) = admin(a.addr, "POST /api/publish", Some(json!({"message": ""})));
    assert_eq!(status, 400);
}
