//! Unit tests of the parent module.

use super::*;

fn by() -> Origin {
    Origin { node: 9, conn: 7 }
}

#[test]
fn a_rename_claims_the_new_name_and_releases_the_old() {
    let chat = Chat::new(100, 0, crate::app::history::History::new(10, 1 << 20));
    let p = Proposal {
        events: vec![ChatEvent::Rename {
            by: by(),
            from: "Al".into(),
            name: "Bo".into(),
            color: Color(*b"00FF00"),
        }],
    };
    let (b, claimed, from) = bridge(&chat, &p, 5, 9);
    let b = b.unwrap();
    assert_eq!(b.ticket, 5);
    assert_eq!(b.claim.unwrap().key, "bo");
    assert_eq!(b.release.unwrap().key, "al");
    assert!(!b.history);
    assert_eq!(claimed.unwrap().0, "Bo");
    assert_eq!(from, Some(by()));
    let back: Vec<ChatEvent> = serde_json::from_str(&b.event).unwrap();
    assert_eq!(back, p.events);
}

#[test]
fn a_line_with_a_claim_is_one_proposal_kept_in_history() {
    let chat = Chat::new(100, 0, crate::app::history::History::new(10, 1 << 20));
    let line = ChatEvent::Message {
        by: by(),
        name: "Al".into(),
        color: Color(*b"00FF00"),
        text: "hi".into(),
        ts: 1,
        id: None,
        to: None,
    };
    let join = ChatEvent::Join {
        by: by(),
        name: "Al".into(),
        color: Color(*b"00FF00"),
    };
    let p = Proposal {
        events: vec![join, line],
    };
    let (b, ..) = bridge(&chat, &p, 1, 9);
    let b = b.unwrap();
    assert!(b.history);
    assert_eq!(b.claim.unwrap().name, "Al");
    let mut events: Vec<ChatEvent> = serde_json::from_str(&b.event).unwrap();
    assert!(!set_id(&mut events[0], "x"));
    assert!(set_id(&mut events[1], "x"));
    assert!(matches!(&events[1], ChatEvent::Message { id: Some(i), .. } if i == "x"));
}

#[test]
fn node_ids_are_numbers() {
    assert_eq!(node_number("00000000000000ff"), 255);
    assert_eq!(node_number("ffffffffffffffff"), u64::MAX);
    assert_eq!(node_number("zz"), 0);
}
