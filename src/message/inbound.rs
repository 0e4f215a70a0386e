//! What a browser sends: chat text, or a request to act on the room (`{"action": ...}`).
//!
//! Chat is `{"text": "..."}` (with an optional `"key"`: the page's own id for the message, see
//! [`Inbound::SayOnce`]), or any other text taken whole (the book's client sends plain
//! text; JSON that is not ours is somebody's words, shown as typed). An object with an
//! `action` is a request: the room decides whether the sender may (see `room::moderate`).

use serde::Deserialize;

/// How long a message's key keeps a second sending out, in seconds (Redis remembers it).
#[cfg(feature = "redis")]
pub const KEY_LIFETIME_SECS: u64 = 600;
/// Longest key, in bytes.
const KEY_LIMIT: usize = 64;

/// One inbound text frame, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Something to say in the room.
    Say(String),
    /// Something to say, with the sender's key for it (1-64 of `A-Z a-z 0-9 - _`): in a room
    /// shared across boxes, what is sent again with the same key within [`KEY_LIFETIME_SECS`]
    /// is kept once (a page sends again what it was told was not sent, which may have been
    /// kept after all). The key comes back in the message frame.
    SayOnce {
        /// What to say.
        text: String,
        /// The sender's key.
        key: String,
    },
    /// Something to do to the room.
    Act(Action),
    /// An `action` object we cannot read: why, for the error frame.
    Unreadable(String),
}

/// What a browser may ask the room to do. All but `delete` (of one's own recent message) are
/// for hosts only.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Removes message `id` everywhere: open pages, the history, the disk.
    Delete {
        /// The message's id in this room.
        id: u64,
    },
    /// Closes every connection of that person in this room (4403); they may come back.
    Kick {
        /// Their display name in this room.
        name: String,
        /// Shown to them.
        reason: String,
    },
    /// Refuses what that person sends, in every room, for a while.
    Mute {
        /// Their display name in this room.
        name: String,
        /// How long (fractions allowed).
        minutes: f64,
    },
    /// Lifts a mute early.
    Unmute {
        /// The name the mute was given under.
        name: String,
    },
    /// Shuts that person out of every room, by session and by address, until unbanned.
    Ban {
        /// Their display name in this room.
        name: String,
        /// Shown to them, now and whenever they try again.
        reason: String,
    },
    /// Lifts a ban.
    Unban {
        /// The name the ban was given under.
        name: String,
    },
    /// Asks for the list of bans and mutes (answered to the asker only).
    Bans,
    /// Makes the room read-only for everyone but hosts.
    Lock,
    /// Lets everyone write again.
    Unlock,
    /// A notice shown apart from chat, to everyone in the room and to whoever joins later.
    Announce {
        /// What to announce.
        text: String,
    },
    /// Empties the room's history.
    Clear,
}

impl Action {
    /// The action's name as the wire spells it (for logs and counters).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Delete { .. } => "delete",
            Action::Kick { .. } => "kick",
            Action::Mute { .. } => "mute",
            Action::Unmute { .. } => "unmute",
            Action::Ban { .. } => "ban",
            Action::Unban { .. } => "unban",
            Action::Bans => "bans",
            Action::Lock => "lock",
            Action::Unlock => "unlock",
            Action::Announce { .. } => "announce",
            Action::Clear => "clear",
        }
    }
}

/// An `action` object as it comes, every field optional: read flat and checked by hand, as
/// serde's internally tagged enums bring a large buffering deserializer into the binary.
#[derive(Deserialize)]
struct Request {
    action: String,
    id: Option<u64>,
    name: Option<String>,
    reason: Option<String>,
    minutes: Option<f64>,
    text: Option<String>,
}

impl TryFrom<Request> for Action {
    type Error = String;

    fn try_from(r: Request) -> Result<Action, String> {
        let need = |field: Option<String>, what: &str| {
            field.ok_or_else(|| format!("`{}` needs `{what}`", r.action))
        };
        let reason = r.reason.unwrap_or_default();
        Ok(match r.action.as_str() {
            "delete" => Action::Delete {
                id: r.id.ok_or("`delete` needs `id`")?,
            },
            "kick" => Action::Kick {
                name: need(r.name, "name")?,
                reason,
            },
            "mute" => Action::Mute {
                minutes: r.minutes.ok_or("`mute` needs `minutes`")?,
                name: need(r.name, "name")?,
            },
            "unmute" => Action::Unmute {
                name: need(r.name, "name")?,
            },
            "ban" => Action::Ban {
                name: need(r.name, "name")?,
                reason,
            },
            "unban" => Action::Unban {
                name: need(r.name, "name")?,
            },
            "bans" => Action::Bans,
            "lock" => Action::Lock,
            "unlock" => Action::Unlock,
            "announce" => Action::Announce {
                text: need(r.text, "text")?,
            },
            "clear" => Action::Clear,
            other => return Err(format!("unknown action `{other}`")),
        })
    }
}

/// Reads one inbound text frame.
pub fn inbound(frame: &str) -> Inbound {
    /// Just enough to tell chat from a request without parsing twice.
    #[derive(Deserialize)]
    struct Probe {
        text: Option<String>,
        key: Option<String>,
        action: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_str::<Probe>(frame) {
        Ok(Probe {
            action: Some(_), ..
        }) => match serde_json::from_str::<Request>(frame) {
            Ok(request) => Action::try_from(request).map_or_else(Inbound::Unreadable, Inbound::Act),
            Err(e) => Inbound::Unreadable(e.to_string()),
        },
        Ok(Probe {
            text: Some(text),
            key: Some(key),
            ..
        }) if valid_key(&key) => Inbound::SayOnce { text, key },
        Ok(Probe {
            text: Some(text), ..
        }) => Inbound::Say(text),
        _ => Inbound::Say(frame.to_owned()),
    }
}

/// A key is short and plain: it becomes part of a Redis key name.
fn valid_key(key: &str) -> bool {
    (1..=KEY_LIMIT).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_comes_with_the_text_when_it_is_plain() {
        assert_eq!(
            inbound(r#"{"text":"hi","key":"k-1_Z"}"#),
            Inbound::SayOnce {
                text: "hi".into(),
                key: "k-1_Z".into()
            }
        );
        // A key that is not plain is left out, the text kept.
        for bad in ["", "a:b", "ü", &"k".repeat(65)] {
            let frame = serde_json::json!({ "text": "hi", "key": bad }).to_string();
            assert_eq!(inbound(&frame), Inbound::Say("hi".into()), "{bad}");
        }
    }

    #[test]
    fn json_and_plain_frames_both_carry_text() {
        assert_eq!(inbound(r#"{"text":"hi"}"#), Inbound::Say("hi".into()));
        assert_eq!(inbound("plain words"), Inbound::Say("plain words".into()));
        // JSON that is not our shape is somebody's text, shown as typed.
        assert_eq!(
            inbound(r#"{"name":"mallory"}"#),
            Inbound::Say(r#"{"name":"mallory"}"#.into())
        );
    }

    #[test]
    fn actions_are_read_and_bad_ones_say_why() {
        assert_eq!(
            inbound(r#"{"action":"delete","id":7}"#),
            Inbound::Act(Action::Delete { id: 7 })
        );
        assert_eq!(
            inbound(r#"{"action":"kick","name":"Bob"}"#),
            Inbound::Act(Action::Kick {
                name: "Bob".into(),
                reason: String::new()
            })
        );
        assert_eq!(
            inbound(r#"{"action":"mute","name":"Bob","minutes":0.5}"#),
            Inbound::Act(Action::Mute {
                name: "Bob".into(),
                minutes: 0.5
            })
        );
        assert_eq!(inbound(r#"{"action":"lock"}"#), Inbound::Act(Action::Lock));
        for bad in [
            r#"{"action":"explode"}"#,
            r#"{"action":"delete","id":"seven"}"#,
            r#"{"action":"ban"}"#,
        ] {
            assert!(matches!(inbound(bad), Inbound::Unreadable(_)), "{bad}");
        }
    }
}
