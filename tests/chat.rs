//! The JSON chat protocol (PROTOCOL sections 3-5) through a `tungstenite`
//! client.

mod common;

use common::client::{Client, Got, assert_fields, is_server_color, user_color, user_names};
use common::server::TestServer;
use serde_json::{Value, json};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tungstenite::Message;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn usermsg(name: &str, message: &str) -> Value {
    json!({"type": "usermsg", "name": name, "message": message})
}

fn join_event(name: &str) -> Value {
    json!({"type": "system", "event": "join", "name": name, "message": format!("{name} joined")})
}

fn leave_event(name: &str) -> Value {
    json!({"type": "system", "event": "leave", "name": name, "message": format!("{name} left")})
}

fn rename_event(from: &str, to: &str) -> Value {
    json!({"type": "system", "event": "rename", "name": to, "from": from,
           "message": format!("{from} is now {to}")})
}

/// A broadcast `usermsg` carries no private marker.
fn assert_broadcast(msg: &Value) {
    assert!(msg.get("toname").is_none(), "broadcast with toname: {msg}");
    assert!(
        msg.get("private").is_none() || msg["private"] == false,
        "broadcast marked private: {msg}"
    );
}

#[test]
fn users_snapshot_on_connect_lists_named_users_only() {
    let server = TestServer::new();
    let mut alice = Client::chat(server.addr);
    alice.send(json!({"type": "join", "name": "alice", "color": "#ff7000"}));
    assert_fields(&alice.recv(), &join_event("alice"));
    let _bob = Client::named(server.addr, "bob");
    let _unnamed = Client::chat(server.addr);

    let (_dave, users) = Client::chat_at(server.addr, "/");
    assert_eq!(user_names(&users), ["alice", "bob"]);
    assert_eq!(user_color(&users, "alice"), "FF7000");
    assert!(is_server_color(&user_color(&users, "bob")), "{users}");
    assert!(
        !users.to_string().contains("127.0.0.1"),
        "client addresses must never be sent: {users}"
    );
}

#[test]
fn empty_server_snapshot_is_an_empty_list() {
    let server = TestServer::new();
    let (_c, users) = Client::chat_at(server.addr, "/");
    assert_eq!(users["users"], json!([]));
}

#[test]
fn users_command_answers_with_the_list() {
    let server = TestServer::new();
    let mut unnamed = Client::chat(server.addr);
    assert_eq!(user_names(&unnamed.barrier()), Vec::<String>::new());
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&unnamed.recv(), &join_event("alice"));
    assert_eq!(user_names(&unnamed.barrier()), ["alice"]);
    assert_eq!(user_names(&alice.barrier()), ["alice"]);
}

#[test]
fn join_event_reaches_everyone_including_unnamed() {
    let server = TestServer::new();
    let mut unnamed = Client::chat(server.addr);
    let mut bob = Client::named(server.addr, "bob");
    assert_fields(&unnamed.recv(), &join_event("bob"));
    let _alice = Client::named(server.addr, "alice");
    assert_fields(&unnamed.recv(), &join_event("alice"));
    assert_fields(&bob.recv(), &join_event("alice"));
}

#[test]
fn broadcast_reaches_everyone_including_sender_and_unnamed() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    let mut bob = Client::named(server.addr, "bob");
    assert_fields(&alice.recv(), &join_event("bob"));
    let mut unnamed = Client::chat(server.addr);

    let before = now_ms();
    alice.send(json!({"message": "hello"}));
    let mut seen = Vec::new();
    for client in [&mut alice, &mut bob, &mut unnamed] {
        let msg = client.recv();
        assert_fields(&msg, &usermsg("alice", "hello"));
        assert_broadcast(&msg);
        seen.push(msg);
    }
    let after = now_ms();
    // Every recipient gets the same message: same colour, same ts.
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    let color = seen[0]["color"].as_str().expect("color");
    assert!(is_server_color(color), "assigned colour {color:?}");
    let ts = seen[0]["ts"].as_i64().expect("ts is an integer");
    assert!(
        ts >= before - 2000 && ts <= after + 2000,
        "ts {ts} not within [{before}, {after}]"
    );
}

#[test]
fn assigned_colour_is_stable() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    alice.send(json!({"message": "one"}));
    let first = alice.recv();
    alice.send(json!({"message": "two", "color": "not a colour"}));
    let second = alice.recv();
    assert_eq!(first["color"], second["color"]);
    let users = alice.barrier();
    assert_eq!(json!(user_color(&users, "alice")), first["color"]);
}

#[test]
fn ts_is_receive_time_in_ms() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    let before = now_ms();
    alice.send(json!({"message": "a"}));
    let a = alice.recv();
    thread::sleep(Duration::from_millis(50));
    alice.send(json!({"message": "b"}));
    let b = alice.recv();
    let after = now_ms();
    let (ta, tb) = (a["ts"].as_i64().unwrap(), b["ts"].as_i64().unwrap());
    assert!(ta >= before - 1000 && tb <= after + 1000, "{ta} {tb}");
    assert!(tb - ta >= 40, "ts must be milliseconds: {ta} then {tb}");
}

#[test]
fn first_chat_message_claims_the_name_join_before_usermsg() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::chat(server.addr);
    alice.send(json!({"name": "alice", "message": "hi", "color": "007AFF"}));
    for client in [&mut alice, &mut observer] {
        assert_fields(&client.recv(), &join_event("alice"));
        let msg = client.recv();
        assert_fields(&msg, &usermsg("alice", "hi"));
        assert_eq!(msg["color"], "007AFF");
    }
}

#[test]
fn classic_php_client_shape_at_daemon_php() {
    let server = TestServer::new();
    let (mut observer, _) = Client::chat_at(server.addr, "/demo/shout.php");
    let (mut php, users) = Client::chat_at(server.addr, "/daemon.php");
    assert_eq!(users["type"], "users");
    php.send_text(r##"{"name":"phpfan","message":"hello from 2013","color":"#00ff99"}"##);
    for client in [&mut php, &mut observer] {
        assert_fields(&client.recv(), &join_event("phpfan"));
        let msg = client.recv();
        assert_fields(&msg, &usermsg("phpfan", "hello from 2013"));
        assert_eq!(msg["color"], "00FF99");
    }
    // Later messages keep sending the name, as the classic clients do:
    // same name, no event.
    php.send_text(r#"{"name":"phpfan","message":"again","color":"00ff99"}"#);
    assert_fields(&observer.recv(), &usermsg("phpfan", "again"));
}

#[test]
fn rename_through_chat_message_sends_rename_before_usermsg() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&observer.recv(), &join_event("alice"));
    alice.send(json!({"name": "alicia", "message": "new name"}));
    for client in [&mut alice, &mut observer] {
        assert_fields(&client.recv(), &rename_event("alice", "alicia"));
        assert_fields(&client.recv(), &usermsg("alicia", "new name"));
    }
    assert_eq!(user_names(&observer.barrier()), ["alicia"]);
    // The old name is free again.
    let _other = Client::named(server.addr, "alice");
}

#[test]
fn rename_through_join_and_case_only_rename() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&observer.recv(), &join_event("alice"));
    alice.send(json!({"type": "join", "name": "Alice"}));
    assert_fields(&alice.recv(), &rename_event("alice", "Alice"));
    assert_fields(&observer.recv(), &rename_event("alice", "Alice"));
    alice.send(json!({"type": "join", "name": "Bobby"}));
    assert_fields(&alice.recv(), &rename_event("Alice", "Bobby"));
    assert_fields(&observer.recv(), &rename_event("Alice", "Bobby"));
    assert_eq!(user_names(&observer.barrier()), ["Bobby"]);
}

#[test]
fn claiming_the_held_name_changes_nothing() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&observer.recv(), &join_event("alice"));
    alice.send(json!({"type": "join", "name": "alice"}));
    alice.send(json!({"name": "alice", "message": "same"}));
    // The usermsg is the very next thing: no event in between.
    assert_fields(&alice.recv(), &usermsg("alice", "same"));
    assert_fields(&observer.recv(), &usermsg("alice", "same"));
}

#[test]
fn name_taken_is_case_insensitive() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let _alice = Client::named(server.addr, "alice");
    let _elodie = Client::named(server.addr, "élodie");
    assert_fields(&observer.recv(), &join_event("alice"));
    assert_fields(&observer.recv(), &join_event("élodie"));
    let mut bob = Client::named(server.addr, "bob");
    assert_fields(&observer.recv(), &join_event("bob"));
    for name in ["alice", "ALICE", "Alice", "ÉLODIE"] {
        bob.send(json!({"type": "join", "name": name}));
        bob.expect_error("name_taken");
        bob.send(json!({"name": name, "message": "hi"}));
        bob.expect_error("name_taken");
    }
    // A taken name with a colour: the colour does not change either.
    let bob_color = user_color(&observer.barrier(), "bob");
    let other = if bob_color == "123456" {
        "654321"
    } else {
        "123456"
    };
    bob.send(json!({"type": "join", "name": "Alice", "color": other}));
    bob.expect_error("name_taken");
    bob.send(json!({"name": "Alice", "message": "x", "color": other}));
    bob.expect_error("name_taken");
    // Nothing reached anyone else, bob is still bob.
    let users = observer.barrier();
    assert_eq!(user_names(&users), ["alice", "bob", "élodie"]);
    assert_eq!(user_color(&users, "bob"), bob_color);
    bob.send(json!({"message": "still bob"}));
    assert_fields(&observer.recv(), &usermsg("bob", "still bob"));
}

#[test]
fn invalid_names_are_rejected() {
    let server = TestServer::new();
    let mut c = Client::chat(server.addr);
    let long = "x".repeat(33);
    let long_multibyte = "é".repeat(33);
    for name in [
        "",
        "   ",
        "\u{3000}\t",
        long.as_str(),
        long_multibyte.as_str(),
        "a\u{7}b",
        "line\nbreak",
        "tab\u{1b}",
        "del\u{7f}",
    ] {
        c.send(json!({"type": "join", "name": name}));
        c.expect_error("invalid_name");
        c.send(json!({"name": name, "message": "hi"}));
        c.expect_error("invalid_name");
    }
    assert_eq!(user_names(&c.barrier()), Vec::<String>::new());
}

#[test]
fn names_of_32_scalar_values_are_fine() {
    let server = TestServer::new();
    let name = "é".repeat(32);
    let _c = Client::named(server.addr, &name);
    let name = "😀".repeat(32);
    let _d = Client::named(server.addr, &name);
}

#[test]
fn names_are_trimmed() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut c = Client::chat(server.addr);
    // 32 characters plus surrounding whitespace is still a valid name.
    let padded = format!("  {}\t", "z".repeat(32));
    c.send(json!({"type": "join", "name": padded}));
    let event = observer.recv();
    assert_fields(&event, &join_event(&"z".repeat(32)));
    assert_eq!(user_names(&observer.barrier()), ["z".repeat(32)]);
}

#[test]
fn bad_json_keeps_the_connection_open() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&observer.recv(), &join_event("alice"));
    for text in [
        "not json",
        "",
        "[1, 2]",
        "\"a string\"",
        "42",
        "null",
        "{\"message\": \"unterminated\"",
        "{\"message\": \"x\"} trailing",
        r#"{"name":"alice","message":"\ud800"}"#,
        r#"{"message":"lone low \udc00 surrogate"}"#,
    ] {
        alice.send_text(text);
        alice.expect_error("bad_json");
    }
    // A valid surrogate pair is fine.
    alice.send_text(r#"{"message":"pair \ud83d\ude00"}"#);
    let msg = observer.recv();
    assert_fields(&msg, &usermsg("alice", "pair 😀"));
}

#[test]
fn bad_request_variants() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&observer.recv(), &join_event("alice"));
    for message in [
        json!({"name": null, "message": "x"}),
        json!({"name": 5, "message": "x"}),
        json!({"name": ["alice"], "message": "x"}),
        json!({"message": 5}),
        json!({"message": null}),
        json!({"message": ["x"]}),
        json!({}),
        json!({"name": "alice"}),
        json!({"type": "message"}),
        json!({"type": "message", "name": "alice", "color": "FF0000"}),
        json!({"type": "bogus"}),
        json!({"type": "Join", "name": "alice"}),
        json!({"type": 5}),
        json!({"message": "x", "toname": 5}),
        json!({"message": "x", "toname": ["bob"]}),
        json!({"message": "x", "toname": {"name": "bob"}}),
        json!({"message": "x", "toname": true}),
    ] {
        alice.send(message.clone());
        let err = alice.recv();
        assert_fields(&err, &json!({"type": "error", "code": "bad_request"}));
        assert!(err["message"].is_string(), "{message} -> {err}");
    }
    // Nothing reached the observer.
    assert_eq!(user_names(&observer.barrier()), ["alice"]);
}

#[test]
fn unknown_fields_are_ignored() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    alice.send(json!({"type": "message", "message": "x", "foo": 1, "bar": {"baz": []}}));
    assert_fields(&alice.recv(), &usermsg("alice", "x"));
    alice.send(json!({"type": "users", "extra": true}));
    assert_eq!(alice.recv()["type"], "users");
}

#[test]
fn not_joined_without_a_name() {
    let server = TestServer::new();
    let mut observer = Client::named(server.addr, "obs");
    let mut c = Client::chat(server.addr);
    c.send(json!({"message": "hi"}));
    c.expect_error("not_joined");
    c.send(json!({"type": "message", "message": "hi"}));
    c.expect_error("not_joined");
    c.send(json!({"message": "psst", "toname": "obs"}));
    c.expect_error("not_joined");
    // Unnamed connections may still ask for the list.
    assert_eq!(user_names(&c.barrier()), ["obs"]);
    assert_eq!(user_names(&observer.barrier()), ["obs"]);
}

#[test]
fn message_length_in_scalar_values_after_trimming() {
    let server = TestServer::with(|c| c.max_chat_chars = 10);
    let mut alice = Client::named(server.addr, "alice");
    for (sent, delivered) in [
        ("0123456789", "0123456789"),
        ("éééééééééé", "éééééééééé"),
        ("😀😀😀😀😀😀😀😀😀😀", "😀😀😀😀😀😀😀😀😀😀"),
        ("  0123456789\t\n", "0123456789"),
        ("\u{3000}\u{a0}abc def\u{2003}\u{85}", "abc def"),
        ("x", "x"),
    ] {
        alice.send(json!({"message": sent}));
        assert_fields(&alice.recv(), &usermsg("alice", delivered));
    }
    for sent in ["0123456789a", "ééééééééééé", "😀😀😀😀😀😀😀😀😀😀😀"]
    {
        alice.send(json!({"message": sent}));
        alice.expect_error("too_long");
    }
}

#[test]
fn empty_after_trimming_is_bad_request() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    for sent in [
        "",
        " ",
        "\t\r\n",
        "\u{a0}\u{2003}\u{3000}",
        "\u{85}\u{2028}",
    ] {
        alice.send(json!({"message": sent}));
        alice.expect_error("bad_request");
    }
    alice.send(json!({"message": "fine"}));
    assert_fields(&alice.recv(), &usermsg("alice", "fine"));
}

#[test]
fn unknown_user_for_private_message_to_nobody() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    alice.send(json!({"message": "psst", "toname": "nobody"}));
    alice.expect_error("unknown_user");
}

#[test]
fn error_check_order() {
    let server = TestServer::with(|c| c.max_chat_chars = 10);
    let _alice = Client::named(server.addr, "alice");
    let mut c = Client::chat(server.addr);
    let cases = [
        // bad_request (3) before invalid_name (4)
        (json!({"name": "", "message": 5}), "bad_request"),
        (json!({"type": "bogus", "name": ""}), "bad_request"),
        (
            json!({"name": "   ", "toname": 7, "message": "x"}),
            "bad_request",
        ),
        // invalid_name (4) before not_joined (6) and too_long (7)
        (json!({"name": "", "message": "x"}), "invalid_name"),
        (
            json!({"name": "a\u{1}", "message": "01234567890"}),
            "invalid_name",
        ),
        // name_taken (5) before not_joined (6), too_long/empty (7), unknown_user (8)
        (json!({"name": "ALICE", "message": "x"}), "name_taken"),
        (
            json!({"name": "alice", "message": "01234567890"}),
            "name_taken",
        ),
        (json!({"name": "alice", "message": "  "}), "name_taken"),
        (
            json!({"name": "alice", "message": "x", "toname": "nobody"}),
            "name_taken",
        ),
        // not_joined (6) before too_long/empty (7) and unknown_user (8)
        (json!({"message": "01234567890"}), "not_joined"),
        (json!({"message": "   "}), "not_joined"),
        (json!({"message": "x", "toname": "nobody"}), "not_joined"),
    ];
    for (message, code) in &cases {
        c.send(message.clone());
        let err = c.recv();
        assert_fields(&err, &json!({"type": "error", "code": code}));
        assert!(err["message"].is_string(), "{err}");
    }
    c.join("carol");
    let cases = [
        // too_long / empty (7) before unknown_user (8)
        (
            json!({"message": "01234567890", "toname": "nobody"}),
            "too_long",
        ),
        (json!({"message": " ", "toname": "nobody"}), "bad_request"),
        (json!({"message": "x", "toname": "nobody"}), "unknown_user"),
    ];
    for (message, code) in &cases {
        c.send(message.clone());
        let err = c.recv();
        assert_fields(&err, &json!({"type": "error", "code": code}));
    }
}

#[test]
fn rejected_message_changes_nothing() {
    let server = TestServer::with(|c| c.max_chat_chars = 10);
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::chat(server.addr);
    alice.send(json!({"type": "join", "name": "alice", "color": "00AA00"}));
    assert_fields(&alice.recv(), &join_event("alice"));
    assert_fields(&observer.recv(), &join_event("alice"));

    // Each carries a new name and a new colour, and fails a later check.
    for (message, code) in [
        (
            json!({"name": "alicia", "color": "FF0000", "message": "   "}),
            "bad_request",
        ),
        (
            json!({"name": "alicia", "color": "FF0000", "message": "01234567890"}),
            "too_long",
        ),
        (
            json!({"name": "alicia", "color": "FF0000", "message": "x", "toname": "nobody"}),
            "unknown_user",
        ),
        (
            json!({"name": "alicia", "color": "FF0000", "message": 1}),
            "bad_request",
        ),
    ] {
        alice.send(message);
        alice.expect_error(code);
    }
    // The observer got nothing: the barrier's answer is the next message.
    let users = observer.barrier();
    assert_eq!(user_names(&users), ["alice"]);
    assert_eq!(user_color(&users, "alice"), "00AA00");
    alice.send(json!({"message": "ok"}));
    let msg = observer.recv();
    assert_fields(&msg, &usermsg("alice", "ok"));
    assert_eq!(msg["color"], "00AA00");

    // A rejected first claim does not join.
    let mut ghost = Client::chat(server.addr);
    ghost.send(json!({"name": "ghost", "message": ""}));
    ghost.expect_error("bad_request");
    assert_eq!(user_names(&observer.barrier()), ["alice"]);
    ghost.send(json!({"message": "still nobody"}));
    ghost.expect_error("not_joined");
}

#[test]
fn colour_normalisation_and_invalid_colours_ignored() {
    let server = TestServer::new();
    let mut alice = Client::chat(server.addr);
    alice.send(json!({"type": "join", "name": "alice", "color": "#ff7000"}));
    assert_fields(&alice.recv(), &join_event("alice"));
    assert_eq!(user_color(&alice.barrier(), "alice"), "FF7000");
    alice.send(json!({"message": "a"}));
    assert_eq!(alice.recv()["color"], "FF7000");

    // Invalid values are ignored, the message still goes out.
    for bad in [
        json!("red"),
        json!("#fff"),
        json!("ff70001"),
        json!("##ff7000"),
        json!("gg0000"),
        json!(" ff7000 "),
        json!(123456),
        json!(null),
        json!(["ff7000"]),
    ] {
        alice.send(json!({"message": "b", "color": bad}));
        let msg = alice.recv();
        assert_fields(&msg, &usermsg("alice", "b"));
        assert_eq!(msg["color"], "FF7000", "colour {bad} should be ignored");
    }

    // A chat message sets the colour for itself and later messages.
    alice.send(json!({"message": "c", "color": "00ff7a"}));
    assert_eq!(alice.recv()["color"], "00FF7A");
    alice.send(json!({"message": "d"}));
    assert_eq!(alice.recv()["color"], "00FF7A");
    assert_eq!(user_color(&alice.barrier(), "alice"), "00FF7A");
}

#[test]
fn private_message_goes_to_recipient_and_sender_only() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    let mut bob = Client::named(server.addr, "Bob");
    let mut carol = Client::named(server.addr, "carol");
    let mut unnamed = Client::chat(server.addr);
    assert_fields(&alice.recv(), &join_event("Bob"));
    assert_fields(&alice.recv(), &join_event("carol"));
    assert_fields(&bob.recv(), &join_event("carol"));

    alice.send(json!({"message": "psst", "toname": "bOB"}));
    let expected = json!({"type": "usermsg", "name": "alice", "message": "psst", "toname": "Bob", "private": true});
    let to_bob = bob.recv();
    assert_fields(&to_bob, &expected);
    let copy = alice.recv();
    assert_fields(&copy, &expected);
    assert!(copy["ts"].is_i64() && is_server_color(copy["color"].as_str().unwrap()));
    // Carol and the unnamed connection got nothing.
    assert_eq!(carol.barrier()["type"], "users");
    assert_eq!(unnamed.barrier()["type"], "users");
    // Nothing else for bob or alice either.
    bob.barrier();
    alice.barrier();
}

#[test]
fn private_message_to_self_arrives_once() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    let mut bob = Client::named(server.addr, "bob");
    assert_fields(&alice.recv(), &join_event("bob"));
    alice.send(json!({"message": "note to self", "toname": "ALICE"}));
    assert_fields(
        &alice.recv(),
        &json!({"type": "usermsg", "name": "alice", "message": "note to self", "toname": "alice", "private": true}),
    );
    alice.barrier();
    bob.barrier();
}

#[test]
fn empty_or_null_toname_means_broadcast() {
    let server = TestServer::new();
    let mut alice = Client::named(server.addr, "alice");
    let mut bob = Client::named(server.addr, "bob");
    assert_fields(&alice.recv(), &join_event("bob"));
    for toname in [json!(""), json!("   "), json!(null)] {
        alice.send(json!({"message": "all", "toname": toname}));
        let msg = bob.recv();
        assert_fields(&msg, &usermsg("alice", "all"));
        assert_broadcast(&msg);
        assert_fields(&alice.recv(), &usermsg("alice", "all"));
    }
}

#[test]
fn leave_on_close_and_abrupt_disconnect_frees_the_name() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    let bob = Client::named(server.addr, "bob");
    assert_fields(&observer.recv(), &join_event("alice"));
    assert_fields(&observer.recv(), &join_event("bob"));

    // A clean close.
    alice.ws.close(None).unwrap();
    let _ = alice.next_within(Duration::from_secs(1));
    assert_fields(&observer.recv(), &leave_event("alice"));

    // An abrupt drop of the TCP connection.
    drop(bob);
    assert_fields(&observer.recv(), &leave_event("bob"));
    // The name is free at once.
    let _bob2 = Client::named(server.addr, "bob");
    assert_fields(&observer.recv(), &join_event("bob"));

    // Unnamed connections leave silently.
    let unnamed = Client::chat(server.addr);
    drop(unnamed);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(user_names(&observer.barrier()), ["bob"]);
}

#[test]
fn three_concurrent_senders_are_seen_in_one_order_by_all() {
    const PER_SENDER: usize = 40;
    let server = TestServer::new();
    let mut observers: Vec<Client> = (0..2).map(|_| Client::chat(server.addr)).collect();
    let mut senders: Vec<Client> = (0..3)
        .map(|i| Client::named(server.addr, &format!("s{i}")))
        .collect();
    // Drain the join events the earlier connections saw.
    for (i, s) in senders.iter_mut().enumerate() {
        for j in i + 1..3 {
            assert_fields(&s.recv(), &join_event(&format!("s{j}")));
        }
    }
    for o in observers.iter_mut() {
        for j in 0..3 {
            assert_fields(&o.recv(), &join_event(&format!("s{j}")));
        }
    }
    fn collect(client: &mut Client) -> Vec<String> {
        (0..3 * PER_SENDER)
            .map(|_| {
                let msg = client.recv();
                assert_eq!(msg["type"], "usermsg", "{msg}");
                format!(
                    "{}:{}",
                    msg["name"].as_str().unwrap(),
                    msg["message"].as_str().unwrap()
                )
            })
            .collect()
    }
    let handles: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                for n in 0..PER_SENDER {
                    s.send(json!({"message": format!("m{n}")}));
                }
                collect(&mut s)
            })
        })
        .collect();
    let mut sequences: Vec<Vec<String>> = observers.iter_mut().map(collect).collect();
    for h in handles {
        sequences.push(h.join().expect("sender thread"));
    }
    for seq in &sequences[1..] {
        assert_eq!(seq, &sequences[0], "recipients saw different orders");
    }
    for i in 0..3 {
        let own: Vec<&String> = sequences[0]
            .iter()
            .filter(|m| m.starts_with(&format!("s{i}:")))
            .collect();
        let expected: Vec<String> = (0..PER_SENDER).map(|n| format!("s{i}:m{n}")).collect();
        assert_eq!(own.len(), PER_SENDER);
        assert!(
            own.iter().zip(&expected).all(|(a, b)| *a == b),
            "sender s{i} out of order: {own:?}"
        );
    }
}

#[test]
fn binary_message_on_chat_closes_1003() {
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut alice = Client::named(server.addr, "alice");
    assert_fields(&observer.recv(), &join_event("alice"));
    alice.send_binary(b"\x00\x01binary");
    assert_eq!(alice.expect_close(), Some(1003));
    assert_fields(&observer.recv(), &leave_event("alice"));
}

#[test]
fn pings_are_answered_with_the_same_payload() {
    let server = TestServer::new();
    let mut c = Client::chat(server.addr);
    c.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match c.next_within(Duration::from_secs(3)) {
        Got::Msg(Message::Pong(payload)) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[test]
fn private_message_that_claims_a_name_sends_the_join_first() {
    let server = TestServer::new();
    let mut bob = Client::named(server.addr, "bob");
    let mut alice = Client::chat(server.addr);
    alice.send(json!({"name": "alice", "message": "hi bob", "toname": "bob"}));
    for client in [&mut bob, &mut alice] {
        assert_fields(&client.recv(), &join_event("alice"));
        assert_fields(
            &client.recv(),
            &json!({"type": "usermsg", "name": "alice", "message": "hi bob", "toname": "bob", "private": true}),
        );
    }
}

#[test]
fn json_escaping_round_trips_any_text() {
    // The server writes its JSON by hand: every character must survive.
    let server = TestServer::new();
    let mut observer = Client::chat(server.addr);
    let mut c = Client::chat(server.addr);
    let name = "q\"uo\\te</script>\u{1}".replace('\u{1}', "ü");
    let text = "quote\" back\\slash /slash nl\n tab\t nul\u{0} bell\u{7} esc\u{1b} \
                del\u{7f} c1\u{85}x emoji😀 bidi\u{202e} ls\u{2028}ps\u{2029} bom\u{feff} end";
    c.send(json!({"name": name, "message": text}));
    for client in [&mut c, &mut observer] {
        assert_fields(&client.recv(), &join_event(&name));
        assert_fields(&client.recv(), &usermsg(&name, text));
    }
    let users = observer.barrier();
    assert_eq!(user_names(&users), vec![name.clone()]);
    c.send(json!({"type": "join", "name": "plain"}));
    assert_fields(&observer.recv(), &rename_event(&name, "plain"));
}

#[test]
fn deeply_nested_json_does_not_hurt_the_server() {
    let server = TestServer::new();
    let mut c = Client::named(server.addr, "deep");
    let deep = format!(
        r#"{{"x":{}1{},"message":"hi"}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    c.send_text(&deep);
    let reply = c.recv();
    assert!(
        reply["type"] == "error" || reply["type"] == "usermsg",
        "unexpected reply {reply}"
    );
    c.send_text(&"[".repeat(50_000));
    c.expect_error("bad_json");
    c.send(json!({"message": "still here"}));
    assert_fields(&c.recv(), &usermsg("deep", "still here"));
}
