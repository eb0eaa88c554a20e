//! Chat events: every change to chat state, and every delivery, is one of
//! these, applied in the order of the event path (PROTOCOL section 5's
//! order rule). On one node the path is a local queue; in a cluster the
//! same events travel through Redis, so they are serialisable.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which connection of which node caused an event. `conn` is unique for
/// the life of the node process (a slot number alone is reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub node: u64,
    pub conn: u64,
}

/// A colour: six upper-case hex digits (PROTOCOL section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color(pub [u8; 6]);

impl Color {
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("000000")
    }

    /// Six hex digits, with or without `#`, as upper case.
    pub fn parse(text: &str) -> Option<Color> {
        let digits = text.strip_prefix('#').unwrap_or(text).as_bytes();
        let digits: &[u8; 6] = digits.try_into().ok()?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        Some(Color(digits.map(|d| d.to_ascii_uppercase())))
    }
}

impl Serialize for Color {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Color {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Color, D::Error> {
        let text = String::deserialize(d)?;
        Color::parse(&text).ok_or_else(|| serde::de::Error::custom("not a colour"))
    }
}

/// One change to the chat, as accepted by the event path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatEvent {
    /// A connection without a name claims one.
    Join {
        by: Origin,
        name: String,
        color: Color,
    },
    /// A named connection changes its name (a change of case included).
    Rename {
        by: Origin,
        from: String,
        name: String,
        color: Color,
    },
    /// A named connection changes only its colour: state, no wire event.
    Recolor {
        by: Origin,
        name: String,
        color: Color,
    },
    /// A chat line, to everyone or (`to`) privately.
    Message {
        by: Origin,
        name: String,
        color: Color,
        text: String,
        ts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// A named connection is gone; its name is free.
    Leave { by: Origin, name: String },
    /// An operator's announcement (section 11), to everyone or one user.
    Announce {
        text: String,
        ts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// An operator removes a user (section 11); `reason` is the close reason.
    Kick { name: String, reason: String },
}

impl ChatEvent {
    /// The name this event claims, lower-cased: what a cluster must decide
    /// atomically (section 12 item 2).
    pub fn claimed_name(&self) -> Option<String> {
        match self {
            ChatEvent::Join { name, .. } | ChatEvent::Rename { name, .. } => {
                Some(name.to_lowercase())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let by = Origin {
            node: 7,
            conn: 1 << 32 | 3,
        };
        let events = [
            ChatEvent::Join {
                by,
                name: "Ünï".into(),
                color: Color(*b"00AA00"),
            },
            ChatEvent::Message {
                by,
                name: "a".into(),
                color: Color(*b"ABCDEF"),
                text: "hi \"there\"".into(),
                ts: 1,
                id: Some("x1".into()),
                to: None,
            },
            ChatEvent::Kick {
                name: "b".into(),
                reason: "kicked".into(),
            },
        ];
        for e in events {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<ChatEvent>(&json).unwrap(),
                e,
                "{json}"
            );
        }
        assert!(
            serde_json::from_str::<ChatEvent>(
                r#"{"kind":"recolor","by":{"node":1,"conn":2},"color":"zzzzzz"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn colours() {
        assert_eq!(Color::parse("#a1b2c3"), Some(Color(*b"A1B2C3")));
        assert_eq!(Color::parse("A1B2C3"), Some(Color(*b"A1B2C3")));
        for bad in ["#a1b2c", "ggggggg", "##a1b2c3", "", "a1b2c3d"] {
            assert_eq!(Color::parse(bad), None, "{bad}");
        }
    }
}
