//! A host's ruling as it travels from the box it was given on to every other box (`--redis`):
//! the book entry it sets, whom it lets go of, which messages it removes, and the notice line
//! the room's members see. The giving box has already carried it out for its own members; the
//! others carry it out when it reaches them. Kept without the `redis` feature, like the rest
//! of the bus's shape.

use serde::{Deserialize, Serialize};

/// What one host action changes on every box.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruling {
    /// The room it was given in.
    pub room: String,
    /// The book entry it sets (see `moderation::entries`), if any...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// ...and the entry's new value (`None`: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Guests seated under this name in the room are let go of (kicked or banned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shut_out: Option<ShutOut>,
    /// Messages it removes from the room's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<Erase>,
    /// The line everyone in the room is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
    /// The whole book was read anew (after a lost connection): every room checks its
    /// members, lock and announcement against it. Never sent between boxes.
    #[serde(skip)]
    pub anew: bool,
}

/// Whom a ruling lets go of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutOut {
    /// The name they are seated under.
    pub name: String,
    /// The close reason (`kicked: ...`, `banned: ...`).
    pub reason: String,
}

/// Messages a ruling removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Erase {
    /// One message, by id.
    Message(u64),
    /// Every message up to this id (a cleared history).
    Through(u64),
}

/// A `notice` line: the English text, and the event with whom it was about and its detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub text: String,
    pub event: String,
    pub name: String,
    pub detail: String,
}

impl Ruling {
    /// The name a ban or mute entry was given under, and whether it is a ban.
    pub fn sanctioned(&self) -> Option<(bool, &str)> {
        let entry = self.entry.as_deref()?;
        if let Some(name) = entry.strip_prefix("ban:") {
            return Some((true, name));
        }
        entry.strip_prefix("mute:").map(|name| (false, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ruling_travels_as_json_and_names_its_sanction() {
        let ruling = Ruling {
            room: "lobby".into(),
            entry: Some("ban:Bob".into()),
            value: Some("{}".into()),
            shut_out: Some(ShutOut {
                name: "Bob".into(),
                reason: "banned: spam".into(),
            }),
            erase: Some(Erase::Through(9)),
            notice: None,
            anew: true,
        };
        let json = serde_json::to_string(&ruling).unwrap();
        assert!(json.contains(r#""erase":{"through":9}"#), "{json}");
        let back: Ruling = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            Ruling {
                anew: false,
                ..ruling
            }
        );
        assert_eq!(back.sanctioned(), Some((true, "Bob")));
        let lock = Ruling {
            entry: Some("lock:lobby".into()),
            ..Ruling::default()
        };
        assert_eq!(lock.sanctioned(), None);
    }
}
