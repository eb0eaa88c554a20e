//! The cluster bridge against a real `redis-server`: two or three
//! `ClusterLink`s in this process act as nodes. Each test starts its own
//! Redis on a free 127.0.0.1 port and stops it by PID.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::redis::Redis;
use mio::{Events, Poll, Token, Waker};
use wschat::cluster::{Claim, ClusterLink, Notice, Proposal, Reject, Release, User};

/// One node: a link, the poll its waker belongs to, and what it was told.
struct Node {
    link: ClusterLink,
    poll: Poll,
    seen: Vec<Notice>,
}

impl Node {
    fn start(redis: &Redis, timeout: Duration, history: usize) -> Node {
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let link = ClusterLink::start(&redis.url(), "t", timeout, history, waker);
        Node {
            link,
            poll,
            seen: Vec::new(),
        }
    }

    /// Waits on the real poll (woken by the bridge) until `done` holds for
    /// everything seen so far, or `limit` passes. Returns whether it held.
    fn wait(&mut self, limit: Duration, done: impl Fn(&[Notice]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut events = Events::with_capacity(8);
        loop {
            while let Some(n) = self.link.poll() {
                self.seen.push(n);
            }
            if done(&self.seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.poll
                .poll(&mut events, Some(left.min(Duration::from_millis(100))))
                .expect("poll");
        }
    }

    fn connected(&mut self) {
        assert!(
            self.wait(Duration::from_secs(5), |s| s.contains(&Notice::Connected)),
            "no Connected: {:?}",
            self.seen
        );
    }

    fn events(&self) -> Vec<(String, String)> {
        self.seen
            .iter()
            .filter_map(|n| match n {
                Notice::Event { id, json, .. } => Some((id.clone(), json.clone())),
                _ => None,
            })
            .collect()
    }
}

fn count_events(s: &[Notice]) -> usize {
    s.iter()
        .filter(|n| matches!(n, Notice::Event { .. }))
        .count()
}

fn event(ticket: u64, json: &str) -> Proposal {
    Proposal {
        ticket,
        event: json.to_string(),
        history: false,
        claim: None,
        release: None,
    }
}

fn claim(ticket: u64, name: &str, conn: u64) -> Proposal {
    Proposal {
        ticket,
        event: format!(r#"{{"type":"system","event":"join","name":"{name}"}}"#),
        history: false,
        claim: Some(Claim {
            key: name.to_lowercase(),
            name: name.to_string(),
            color: "00AA00".to_string(),
            conn,
        }),
        release: None,
    }
}

fn leave(ticket: u64, name: &str, conn: u64) -> Proposal {
    Proposal {
        ticket,
        event: format!(r#"{{"type":"system","event":"leave","name":"{name}"}}"#),
        history: false,
        claim: None,
        release: Some(Release {
            key: name.to_lowercase(),
            conn,
        }),
    }
}

fn names(users: &[User]) -> BTreeSet<String> {
    users.iter().map(|u| u.name.clone()).collect()
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn answered(s: &[Notice], ticket: u64) -> Option<bool> {
    s.iter().find_map(|n| match n {
        Notice::Event {
            ticket: Some(t), ..
        } if *t == ticket => Some(true),
        Notice::Rejected { ticket: t, reason } if *t == ticket => {
            assert_eq!(*reason, Reject::NameTaken);
            Some(false)
        }
        _ => None,
    })
}

#[test]
fn events_of_both_nodes_reach_both_in_one_order_with_history() {
    let redis = Redis::start();
    let mut a = Node::start(&redis, Duration::from_secs(4), 5);
    let mut b = Node::start(&redis, Duration::from_secs(4), 5);
    a.connected();
    b.connected();
    for i in 0..50u64 {
        let mut pa = event(i, &format!("a{i}"));
        pa.history = i % 2 == 0;
        a.link.propose(pa);
        b.link.propose(event(1000 + i, &format!("b{i}")));
    }
    for n in [&mut a, &mut b] {
        assert!(
            n.wait(Duration::from_secs(5), |s| count_events(s) >= 100),
            "not all events arrived: {}",
            count_events(&n.seen)
        );
    }
    let (ea, eb) = (a.events(), b.events());
    assert_eq!(ea.len(), 100);
    assert_eq!(ea, eb, "both nodes see one order");
    assert!(ea.iter().all(|(id, _)| valid_id(id)), "ids: {ea:?}");
    let ids: BTreeSet<_> = ea.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 100, "ids are unique");
    // Each sender's events keep the order they were proposed in.
    for prefix in ["a", "b"] {
        let mine: Vec<_> = ea
            .iter()
            .filter(|(_, j)| j.starts_with(prefix))
            .map(|(_, j)| j.clone())
            .collect();
        let want: Vec<_> = (0..50).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(mine, want);
    }
    // Own events carry their ticket back, the other node's none.
    for n in &a.seen {
        if let Notice::Event { json, ticket, .. } = n {
            assert_eq!(ticket.is_some(), json.starts_with('a'), "{json} {ticket:?}");
        }
    }
    // History: the last five broadcast-marked events, same on both nodes,
    // with the ids they were delivered with.
    let ha = a.link.history();
    let hjson: Vec<_> = ha.iter().map(|h| h.json.as_str()).collect();
    assert_eq!(hjson, ["a40", "a42", "a44", "a46", "a48"]);
    assert_eq!(ha, b.link.history());
    for h in &ha {
        assert!(ea.contains(&(h.id.clone(), h.json.clone())));
    }
    // A node started later gets the history from Redis.
    let c = Node::start(&redis, Duration::from_secs(4), 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.link.history() != ha {
        assert!(Instant::now() < deadline, "late node has no history");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = a.link.stats();
    assert!(s.connected);
    assert_eq!(s.events_published, 50);
    assert_eq!(s.events_received, 100);
    // Nodes are counted at each heartbeat (a quarter of the node timeout).
    assert!(a.wait(Duration::from_secs(2), |s| {
        s.iter()
            .any(|n| matches!(n, Notice::NodesAlive(k) if *k >= 2))
    }));
}

#[test]
fn concurrent_claims_of_one_name_have_exactly_one_winner() {
    let redis = Redis::start();
    let mut a = Node::start(&redis, Duration::from_secs(4), 0);
    let mut b = Node::start(&redis, Duration::from_secs(4), 0);
    a.connected();
    b.connected();
    let mut wins = [0u32; 2];
    for round in 0..100u64 {
        let name = format!("Name{round}");
        // Same name, different case: one uniqueness key.
        a.link.propose(claim(round, &name, round));
        b.link.propose(claim(round, &name.to_uppercase(), round));
        let ok_a = a.wait(Duration::from_secs(3), |s| answered(s, round).is_some());
        let ok_b = b.wait(Duration::from_secs(3), |s| answered(s, round).is_some());
        assert!(ok_a && ok_b, "round {round} unanswered");
        let (wa, wb) = (
            answered(&a.seen, round) == Some(true),
            answered(&b.seen, round) == Some(true),
        );
        assert!(wa ^ wb, "round {round}: a won {wa}, b won {wb}");
        wins[usize::from(wb)] += 1;
    }
    // Both nodes list all 100 names once, with the winners' colour.
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.link.users().len() < 100 || b.link.users().len() < 100 {
        assert!(Instant::now() < deadline, "users incomplete");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.link.users(), b.link.users());
    assert_eq!(a.link.users().len(), 100);
    assert!(a.link.users().iter().all(|u| u.color == "00AA00"));
    eprintln!("wins a/b: {wins:?}");
    // A taken name stays taken until released; then it can be claimed.
    let loser_is_b = answered(&b.seen, 0) == Some(false);
    let (winner, loser) = if loser_is_b {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    winner.link.propose(leave(500, "Name0", 0));
    assert!(winner.wait(Duration::from_secs(3), |s| answered(s, 500) == Some(true)));
    loser.link.propose(claim(501, "name0", 77));
    assert!(loser.wait(Duration::from_secs(3), |s| answered(s, 501) == Some(true)));
}

#[test]
fn a_dead_nodes_names_are_freed_by_a_survivor_within_the_timeout() {
    let redis = Redis::start();
    let timeout = Duration::from_secs(2);
    let mut a = Node::start(&redis, timeout, 0);
    let mut b = Node::start(&redis, timeout, 0);
    a.connected();
    b.connected();
    a.link.propose(claim(1, "Alice", 1));
    a.link.propose(claim(2, "Ann", 2));
    b.link.propose(claim(3, "Bob", 3));
    assert!(b.wait(Duration::from_secs(3), |s| count_events(s) >= 3));
    assert!(b.wait(Duration::from_secs(3), |s| {
        s.contains(&Notice::NodesAlive(2))
    }));
    assert_eq!(
        names(&b.link.users()),
        ["Alice", "Ann", "Bob"].map(String::from).into()
    );
    // Dropping without shutdown: the node goes silent like a killed one.
    drop(a);
    let died = Instant::now();
    let freed = |s: &[Notice]| {
        s.iter()
            .filter(|n| matches!(n, Notice::Freed { conn: None, .. }))
            .count()
            == 2
    };
    assert!(
        b.wait(timeout + Duration::from_secs(1), freed),
        "no leaves: {:?}",
        b.seen
    );
    let took = died.elapsed();
    assert!(took <= timeout, "freed after {took:?}");
    eprintln!("dead node's names freed after {took:?}");
    let freed_names: BTreeSet<_> = b
        .seen
        .iter()
        .filter_map(|n| match n {
            Notice::Freed { id, name, .. } => {
                assert!(valid_id(id));
                Some(name.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(freed_names, ["Alice", "Ann"].map(String::from).into());
    assert_eq!(names(&b.link.users()), ["Bob".to_string()].into());
    assert!(b.wait(Duration::from_secs(2), |s| s.last()
        == Some(&Notice::NodesAlive(1))
        || s.contains(&Notice::NodesAlive(1))));
    // Freed exactly once: nothing more comes.
    std::thread::sleep(timeout);
    assert!(!b.wait(Duration::from_millis(10), |s| {
        s.iter()
            .filter(|n| matches!(n, Notice::Freed { .. }))
            .count()
            > 2
    }));
}

#[test]
fn an_orderly_shutdown_publishes_leaves_before_returning() {
    let redis = Redis::start();
    let mut a = Node::start(&redis, Duration::from_secs(10), 0);
    let mut b = Node::start(&redis, Duration::from_secs(10), 0);
    a.connected();
    b.connected();
    a.link.propose(claim(1, "Carol", 1));
    a.link.propose(claim(2, "Dave", 2));
    assert!(b.wait(Duration::from_secs(3), |s| count_events(s) >= 2));
    let started = Instant::now();
    // The loop passes Carol's leave; Dave's name is freed by the link itself.
    a.link
        .shutdown(vec![leave(3, "Carol", 1)], Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(b.wait(Duration::from_secs(1), |s| {
        s.iter()
            .any(|n| matches!(n, Notice::Event { json, .. } if json.contains("leave")))
            && s.iter()
                .any(|n| matches!(n, Notice::Freed { name, .. } if name == "Dave"))
    }));
    assert!(b.link.users().is_empty());
}

#[test]
fn losing_redis_holds_events_and_recovers_after_an_empty_restart() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut redis = Redis::start();
    let timeout = Duration::from_secs(4);
    let mut a = Node::start(&redis, timeout, 10);
    let mut b = Node::start(&redis, timeout, 10);
    a.connected();
    b.connected();
    a.link.propose(claim(1, "Alice", 1));
    a.link.propose(claim(2, "Carol", 2));
    b.link.propose(claim(3, "Bob", 3));
    for n in [&mut a, &mut b] {
        assert!(n.wait(Duration::from_secs(3), |s| count_events(s) >= 3));
    }
    // The writers have their acknowledgements (else a claim in flight is
    // retried after the restart and answered Rejected, not NameLost).
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.link.stats().events_published < 2 || b.link.stats().events_published < 1 {
        assert!(Instant::now() < deadline, "claims not acknowledged");
        std::thread::sleep(Duration::from_millis(10));
    }

    redis.kill();
    for n in [&mut a, &mut b] {
        assert!(
            n.wait(Duration::from_secs(3), |s| s.last()
                == Some(&Notice::Disconnected)),
            "no Disconnected: {:?}",
            n.seen
        );
        n.seen.clear();
    }
    assert!(!a.link.is_connected());
    // Held back while Redis is away: Alice's connection closed (her name stays
    // reserved until this leave is published) and one event from each node.
    a.link.propose(leave(4, "Alice", 1));
    let mut held = event(5, "held-a");
    held.history = true;
    a.link.propose(held);
    b.link.propose(event(6, "held-b"));
    std::thread::sleep(Duration::from_millis(1500));

    // Redis comes back empty, but locked until another node's claim of
    // Carol is in, so that claim reaches it first whatever the back-off.
    redis.spawn_with(&["--requirepass", "sesame"]);
    let mut admin = redis.client(Some("sesame"));
    redis::cmd("HSET")
        .arg("{t}:names")
        .arg("carol")
        .arg("feedfacefeedface:9|0000FF|CAROL")
        .query::<()>(&mut admin)
        .expect("hset");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query::<()>(&mut admin)
        .expect("unlock");
    let back = Instant::now();
    for n in [&mut a, &mut b] {
        n.connected();
    }
    let took = back.elapsed();
    assert!(took <= Duration::from_secs(2), "recovered after {took:?}");
    eprintln!("both nodes serving again {took:?} after redis answered");
    assert!(
        a.wait(Duration::from_secs(1), |s| s.contains(&Notice::NameLost {
            conn: 2,
            name: "Carol".into()
        })),
        "no NameLost: {:?}",
        a.seen
    );
    // Both nodes see all three held-back events, in one order.
    for n in [&mut a, &mut b] {
        assert!(
            n.wait(Duration::from_secs(2), |s| count_events(s) >= 3),
            "held-back events missing: {:?}",
            n.seen
        );
    }
    let (ea, eb) = (a.events(), b.events());
    assert_eq!(ea, eb);
    let jsons: Vec<_> = ea.iter().map(|(_, j)| j.as_str()).collect();
    let pos = |x: &str| jsons.iter().position(|j| j.contains(x)).expect(x);
    assert!(pos("leave") < pos("held-a"), "{jsons:?}");
    assert!(jsons.contains(&"held-b"));
    // Names: Alice released, Carol kept by the other claim, Bob registered again.
    let want: BTreeSet<String> = ["Bob", "CAROL"].map(String::from).into();
    let deadline = Instant::now() + Duration::from_secs(2);
    while names(&a.link.users()) != want || names(&b.link.users()) != want {
        assert!(
            Instant::now() < deadline,
            "users: {:?} {:?}",
            a.link.users(),
            b.link.users()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let history: Vec<_> = a.link.history().into_iter().map(|h| h.json).collect();
    assert_eq!(history, ["held-a"]);
    assert!(a.link.stats().reconnects >= 1);
    // The message ids of the new epoch differ from every earlier one.
    let ids: BTreeSet<_> = ea.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), ea.len());
}

#[test]
fn renames_and_colour_changes_update_every_nodes_users() {
    let redis = Redis::start();
    let mut a = Node::start(&redis, Duration::from_secs(4), 0);
    let mut b = Node::start(&redis, Duration::from_secs(4), 0);
    a.connected();
    b.connected();
    a.link.propose(claim(1, "Al", 1));
    // A rename: the new name claimed and the old released in one step.
    let mut rename = claim(2, "Alan", 1);
    rename.release = Some(Release {
        key: "al".into(),
        conn: 1,
    });
    a.link.propose(rename);
    // A change of case and colour: the same key, claimed again by its holder.
    let mut recolour = claim(3, "ALAN", 1);
    if let Some(c) = recolour.claim.as_mut() {
        c.color = "FF0000".into();
    }
    a.link.propose(recolour);
    assert!(b.wait(Duration::from_secs(3), |s| count_events(s) >= 3));
    let want = vec![User {
        name: "ALAN".into(),
        color: "FF0000".into(),
    }];
    assert_eq!(b.link.users(), want);
    // The old name is free again; the new one is not.
    b.link.propose(claim(4, "al", 2));
    b.link.propose(claim(5, "alan", 3));
    assert!(b.wait(Duration::from_secs(3), |s| answered(s, 4).is_some()
        && answered(s, 5).is_some()));
    assert_eq!(answered(&b.seen, 4), Some(true));
    assert_eq!(answered(&b.seen, 5), Some(false));
    // A release by a connection that does not hold the name changes nothing.
    b.link.propose(leave(6, "Alan", 99));
    assert!(a.wait(Duration::from_secs(3), |s| count_events(s) >= 5));
    assert_eq!(
        names(&a.link.users()),
        ["ALAN", "al"].map(String::from).into()
    );
}

#[test]
fn data_lost_under_live_connections_is_repaired_within_a_tick() {
    let redis = Redis::start();
    let timeout = Duration::from_secs(2);
    let mut a = Node::start(&redis, timeout, 10);
    let mut b = Node::start(&redis, timeout, 10);
    a.connected();
    b.connected();
    a.link.propose(claim(1, "Alice", 1));
    assert!(b.wait(Duration::from_secs(3), |s| count_events(s) >= 1));
    let old_id = b.events()[0].0.clone();
    redis::cmd("FLUSHALL")
        .query::<()>(&mut redis.client(None))
        .expect("flushall");
    // Neither node lost its connection; within a heartbeat (T/4) Alice is
    // registered again, so B's claim of her name loses.
    std::thread::sleep(timeout / 4 + Duration::from_millis(300));
    b.link.propose(claim(2, "ALICE", 2));
    assert!(b.wait(Duration::from_secs(3), |s| answered(s, 2).is_some()));
    assert_eq!(answered(&b.seen, 2), Some(false), "{:?}", b.seen);
    a.link.propose(event(3, "after"));
    for n in [&mut a, &mut b] {
        assert!(n.wait(Duration::from_secs(3), |s| count_events(s) >= 2));
        assert_eq!(names(&n.link.users()), ["Alice".to_string()].into());
    }
    let (id, json) = b.events()[1].clone();
    assert_eq!(json, "after");
    let epoch = |id: &str| id.split('-').next().map(String::from);
    assert_ne!(epoch(&id), epoch(&old_id), "a new epoch gives new ids");
    assert!(!b.seen.contains(&Notice::Disconnected));
}
