//! The wire protocol, defined here and nowhere else (the README documents it).
//!
//! Browser → server (`inbound.rs`): chat text, or an `action` for the room. Server → browser
//! (this file): one JSON object per text frame, tagged by `type`. The server stamps name, time
//! and a per-room id; nothing in an inbound frame can set them. `names.rs` says which names are
//! allowed and finds mentions; `time.rs` writes time stamps.

mod inbound;
mod names;
mod time;

#[cfg(feature = "redis")]
pub use inbound::KEY_LIFETIME_SECS;
pub use inbound::{inbound, Action, Inbound};
pub use names::{display_name, mentions, valid_room};
pub use time::timestamp;

use crate::meter::{Meter, FRAME_OVERHEAD_BYTES};
use async_tungstenite::tungstenite::Utf8Bytes;
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;

/// Longest room or display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The room the page opens when none is named.
pub const DEFAULT_ROOM: &str = "lobby";
/// The name of a client that gives none.
pub const ANONYMOUS: &str = "anonymous";

/// What the server sends, one per text frame.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outbound<'a> {
    /// A chat message, stamped by the server.
    Message {
        /// Increasing per room, starting at 1.
        id: u64,
        /// The room it was said in.
        room: &'a str,
        /// Who said it.
        name: &'a str,
        /// What was said, as sent.
        text: &'a str,
        /// When the server received it, RFC 3339 UTC.
        when: &'a str,
        /// The names this message mentions (`@name` of someone present), as the room knows
        /// them; left out of the frame when there are none.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        mentions: &'a [String],
        /// The sender's own key for this message, if it gave one (see `inbound`): its page
        /// knows the message arrived, and does not send it again.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<&'a str>,
    },
    /// Someone entered the room (their first tab; a client also gets its own join).
    Join {
        /// The room.
        room: &'a str,
        /// Who joined.
        name: &'a str,
        /// When, RFC 3339 UTC.
        when: &'a str,
        /// How many people (names) are in the room now.
        people: usize,
    },
    /// Someone left the room (their last tab closed, or they were dropped).
    Leave {
        /// The room.
        room: &'a str,
        /// Who left.
        name: &'a str,
        /// When, RFC 3339 UTC.
        when: &'a str,
        /// How many people (names) are in the room now.
        people: usize,
    },
    /// Who is here now. In a small room (see `room::presence`) it carries the whole list, for a
    /// client that missed some joins or leaves while behind. In a large room joins and leaves
    /// are not sent one by one: this frame sums them up once per interval, naming at most a
    /// few, and says whether it left some out.
    Presence {
        /// The room.
        room: &'a str,
        /// How many people (names) are in the room now.
        people: usize,
        /// Everyone in the room, sorted, each name once; absent in a large room.
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<&'a [String]>,
        /// Who came since the last such frame (large rooms).
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        joined: &'a [String],
        /// Who went since the last such frame (large rooms).
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        left: &'a [String],
        /// More changed than `joined` and `left` name: a client that shows the list must fetch
        /// it again (`GET /rooms/<room>/members`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    /// A photo or file shared into the room; kept in history and replayed like a message.
    File {
        /// Increasing per room, shared with messages.
        id: u64,
        /// The room it was shared in.
        room: &'a str,
        /// Who shared it.
        name: &'a str,
        /// When the server stored it, RFC 3339 UTC.
        when: &'a str,
        /// What was shared.
        file: FileRef<'a>,
    },
    /// The first frame a client gets: who it is, who is here, and what history follows.
    Welcome {
        /// The room.
        room: &'a str,
        /// The client's own name, as the server knows it.
        name: &'a str,
        /// The newest message id in the room (0: none yet). History frames up to it follow.
        last_id: u64,
        /// False if the client asked for messages the room no longer keeps.
        complete: bool,
        /// People in the room, sorted, each name once: everyone in a small room, the first
        /// few in a large one (fewer than `people`; the rest from `GET /rooms/<room>/members`).
        members: &'a [String],
        /// How many people (names) are in the room, the client included.
        people: usize,
        /// Only hosts may write (see the `room` frame).
        locked: bool,
        /// The client signed in as a host: it may act on the room.
        host: bool,
        /// Seconds within which an author may delete their own message (0: never).
        delete_window: u64,
    },
    /// A message is gone (deleted by its author or a host): remove it from the page.
    Delete {
        /// The room.
        room: &'a str,
        /// The removed message's id.
        id: u64,
    },
    /// Every message up to `id` is gone (a host cleared the room).
    Clear {
        /// The room.
        room: &'a str,
        /// The newest id removed.
        id: u64,
    },
    /// A notice shown apart from chat: a host's announcement, or a line about a host action.
    Notice {
        /// The room.
        room: &'a str,
        /// What to show.
        text: &'a str,
        /// When, RFC 3339 UTC.
        when: &'a str,
        /// The room's standing announcement (shown until replaced; empty `text`: taken down),
        /// not a one-off line; left out of the frame when false.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        standing: bool,
        /// For a line about a host action, which one (`removed`, `kicked`, `muted`, `unmuted`,
        /// `banned`, `unbanned`, `locked`, `unlocked`, `taken_down`, `cleared`), so a page can
        /// say it in its own language; `text` says it in English. Absent for announcements.
        #[serde(skip_serializing_if = "str::is_empty")]
        event: &'a str,
        /// Whom the action was about, if anyone.
        #[serde(skip_serializing_if = "str::is_empty")]
        name: &'a str,
        /// The host's reason (kick, ban) or how long (mute, e.g. `10 min`), if any.
        #[serde(skip_serializing_if = "str::is_empty")]
        detail: &'a str,
    },
    /// The room's state changed (and, in the `welcome`, what it is).
    Room {
        /// The room.
        room: &'a str,
        /// Only hosts may write.
        locked: bool,
    },
    /// Rooms shared across boxes only: whether this box reaches the others (through Redis).
    /// While `up` is false, messages are refused (`error` code `unavailable`) and the page
    /// holds its composer shut. Sent when it changes, and after the welcome while it is down.
    Shared {
        /// The room.
        room: &'a str,
        /// The other boxes can be reached.
        up: bool,
    },
    /// The bans and mutes in force, answered to the host who asked.
    Bans {
        /// The room the question came from.
        room: &'a str,
        /// Each ban and mute, oldest first.
        bans: &'a [SanctionRef<'a>],
    },
    /// News from another room for this person (sent to their connections in other rooms
    /// only): a message in one of their direct rooms, a mention of them, or a direct room
    /// just opened with them (`id` 0). Lightweight: the page counts it, it is not kept.
    Activity {
        /// The room the news is from.
        room: &'a str,
        /// The message's id there (0: the direct room was just opened).
        id: u64,
        /// Who said it (or opened the direct room).
        name: &'a str,
        /// The room is a direct room of this person's.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        direct: bool,
        /// The message mentions this person.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        mention: bool,
    },
    /// Something the server refused or holds back, said only to the client concerned.
    Error {
        /// The room.
        room: &'a str,
        /// What happened, for programs: `slow_down` (messages held back for sending too fast),
        /// `forbidden` (hosts only), `muted`, `locked`, `too_late` (past the delete window),
        /// `not_found` (no such message or person), `bad_action` (an unreadable request),
        /// `unavailable` (a shared room's Redis cannot be reached: the message or action was
        /// not sent), `too_fast` (a shared room: the sender's address has spent its budget
        /// across the boxes; the message was not sent).
        code: &'a str,
        /// What happened, for people.
        text: &'a str,
        /// For `unavailable` and `too_fast`: the key of the message not sent, if it had one
        /// (sending it again with that key never shows it twice).
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<&'a str>,
    },
}

/// A ban or a mute as the `bans` frame lists it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SanctionRef<'a> {
    /// `ban` or `mute`.
    pub kind: &'a str,
    /// The name it was given under.
    pub name: &'a str,
    /// Why, as the host said.
    pub reason: &'a str,
    /// The host who gave it.
    pub by: &'a str,
    /// When, RFC 3339 UTC.
    pub when: &'a str,
    /// When it ends, RFC 3339 UTC (`null`: until lifted).
    pub until: Option<&'a str>,
}

/// A shared file as the `file` frame describes it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FileRef<'a> {
    /// Where to fetch it: `/files/<id>/<name>`.
    pub url: &'a str,
    /// Its cleaned name.
    pub name: &'a str,
    /// Bytes.
    pub size: u64,
    /// The type its first bytes show (never the uploader's claim).
    #[serde(rename = "type")]
    pub mime: &'a str,
    /// Pixels, for images (`null` otherwise).
    pub width: Option<u32>,
    /// Pixels, for images (`null` otherwise).
    pub height: Option<u32>,
}

/// An encoded server frame: UTF-8 JSON, reference-counted, so one encoding serves every member.
/// Kept as the WebSocket text payload type, so sending a clone never checks its UTF-8 again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(Utf8Bytes);

impl Outbound<'_> {
    /// Serialises once; clones of the result share the bytes.
    pub fn encode(&self) -> Encoded {
        let json =
            serde_json::to_string(self).expect("serialising plain strings and numbers cannot fail");
        Encoded(Utf8Bytes::from(json))
    }
}

impl Outbound<'_> {
    /// Serialises once, charging the frame to `meter` for as long as any clone of it lives
    /// (in a queue, in a history ring, on its way to a socket).
    pub fn encode_metered(&self, meter: &Arc<Meter>) -> Encoded {
        let json =
            serde_json::to_string(self).expect("serialising plain strings and numbers cannot fail");
        Encoded::metered(json, meter)
    }
}

/// A `message` or `file` frame whose id is not known yet: its JSON before and after the id's
/// digits. With rooms shared over Redis the id is assigned there, in the same step that keeps
/// the message, and put between the two halves (`bus/`); every box then sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unnumbered {
    /// Everything up to and including `"id":`.
    pub head: String,
    /// Everything after the id.
    pub tail: String,
}

impl Outbound<'_> {
    /// Encodes a `message` or `file` frame given with id 0 as its two halves around the id.
    /// `None` for other frames (they carry no id of a kept message).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn encode_unnumbered(&self) -> Option<Unnumbered> {
        match self {
            Outbound::Message { id: 0, .. } | Outbound::File { id: 0, .. } => {}
            _ => return None,
        }
        let json = self.encode();
        let json = json.bytes();
        let json = std::str::from_utf8(json).expect("JSON is UTF-8");
        // The tag comes first and the id second (declaration order), so the first `"id":0` is
        // the id, before any text a person wrote.
        let at = json.find(r#""id":0"#)? + r#""id":"#.len();
        Some(Unnumbered {
            head: json[..at].to_owned(),
            tail: json[at + 1..].to_owned(),
        })
    }
}

/// A frame's bytes that give their charge back when the last clone goes.
struct Metered {
    json: String,
    meter: Arc<Meter>,
}

impl AsRef<[u8]> for Metered {
    fn as_ref(&self) -> &[u8] {
        self.json.as_bytes()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.meter
            .release(self.json.len() as u64 + FRAME_OVERHEAD_BYTES);
    }
}

impl Encoded {
    fn metered(json: String, meter: &Arc<Meter>) -> Encoded {
        meter.charge(json.len() as u64 + FRAME_OVERHEAD_BYTES);
        let bytes = Bytes::from_owner(Metered {
            json,
            meter: meter.clone(),
        });
        Encoded(Utf8Bytes::try_from(bytes).expect("JSON is UTF-8"))
    }

    /// A copy of this frame charged to `meter` (for frames read back from disk).
    pub fn charged_to(&self, meter: &Arc<Meter>) -> Encoded {
        Encoded::metered(self.0.as_str().to_owned(), meter)
    }

    /// The JSON bytes (always valid UTF-8).
    pub fn bytes(&self) -> &Bytes {
        self.0.as_ref()
    }

    /// The frame as a WebSocket text payload (shared, not copied).
    pub fn text(&self) -> Utf8Bytes {
        self.0.clone()
    }

    /// A frame as the bus brings it (from Redis), charged to `meter`; `None` unless UTF-8.
    #[cfg(feature = "redis")]
    pub fn from_bus(bytes: Vec<u8>, meter: &Arc<Meter>) -> Option<Encoded> {
        String::from_utf8(bytes)
            .ok()
            .map(|json| Encoded::metered(json, meter))
    }

    /// Who said a `message` frame and whom it mentions (for news in other rooms); `None` for
    /// other frames.
    pub fn author_and_mentions(&self) -> Option<(String, Vec<String>)> {
        #[derive(serde::Deserialize)]
        struct Said {
            #[serde(rename = "type")]
            kind: String,
            name: String,
            #[serde(default)]
            mentions: Vec<String>,
        }
        let said: Said = serde_json::from_slice(self.bytes()).ok()?;
        (said.kind == "message" || said.kind == "file").then_some((said.name, said.mentions))
    }

    /// A frame read back from the history store; `None` unless it is UTF-8.
    pub fn from_stored(bytes: Bytes) -> Option<Encoded> {
        Utf8Bytes::try_from(bytes).ok().map(Encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unnumbered_frame_takes_its_id_between_its_halves() {
        let message = |id| Outbound::Message {
            id,
            room: "lobby",
            name: "ann",
            text: r#""id":0 is what I typed"#,
            when: "2026-11-25T19:21:32.123Z",
            mentions: &[],
            key: None,
        };
        let halves = message(0).encode_unnumbered().unwrap();
        assert_eq!(halves.head, r#"{"type":"message","id":"#);
        let joined = format!("{}{}{}", halves.head, 4711, halves.tail);
        assert_eq!(joined.as_bytes(), message(4711).encode().bytes().as_ref());
        // Only frames of kept messages, and only while unnumbered.
        assert_eq!(message(3).encode_unnumbered(), None);
        let notice = Outbound::Delete { room: "r", id: 0 };
        assert_eq!(notice.encode_unnumbered(), None);
    }

    #[test]
    fn outbound_messages_have_the_documented_shape() {
        let json = Outbound::Message {
            id: 7,
            room: "lobby",
            name: "ann",
            text: "<b>\"hi\"</b>",
            when: "2026-11-25T19:21:32.123Z",
            mentions: &[],
            key: None,
        }
        .encode();
        let value: serde_json::Value = serde_json::from_slice(json.bytes()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"message","id":7,"room":"lobby","name":"ann",
                "text":"<b>\"hi\"</b>","when":"2026-11-25T19:21:32.123Z"})
        );
        let members = ["a".to_string(), "n".to_string()];
        let join = Outbound::Join {
            room: "r",
            name: "n",
            when: "t",
            people: 2,
        }
        .encode();
        assert_eq!(
            join.bytes().as_ref(),
            br#"{"type":"join","room":"r","name":"n","when":"t","people":2}"#
        );
        let presence = Outbound::Presence {
            room: "r",
            people: 2,
            members: Some(&members),
            joined: &[],
            left: &[],
            partial: false,
        }
        .encode();
        assert_eq!(
            presence.bytes().as_ref(),
            br#"{"type":"presence","room":"r","people":2,"members":["a","n"]}"#
        );
        let delta = Outbound::Presence {
            room: "r",
            people: 900,
            members: None,
            joined: &members[..1],
            left: &members[1..],
            partial: true,
        }
        .encode();
        assert_eq!(
            delta.bytes().as_ref(),
            br#"{"type":"presence","room":"r","people":900,"joined":["a"],"left":["n"],"partial":true}"#
        );
        let error = Outbound::Error {
            room: "r",
            code: "slow_down",
            text: "wait",
            key: None,
        }
        .encode();
        assert_eq!(
            error.bytes().as_ref(),
            br#"{"type":"error","room":"r","code":"slow_down","text":"wait"}"#
        );
        let welcome = Outbound::Welcome {
            room: "r",
            name: "n",
            last_id: 9,
            complete: false,
            members: &members,
            people: 2,
            locked: true,
            host: false,
            delete_window: 600,
        }
        .encode();
        assert_eq!(
            welcome.bytes().as_ref(),
            br#"{"type":"welcome","room":"r","name":"n","last_id":9,"complete":false,"members":["a","n"],"people":2,"locked":true,"host":false,"delete_window":600}"#
        );
        let frames = [
            (
                Outbound::Delete { room: "r", id: 4 }.encode(),
                r#"{"type":"delete","room":"r","id":4}"#,
            ),
            (
                Outbound::Clear { room: "r", id: 9 }.encode(),
                r#"{"type":"clear","room":"r","id":9}"#,
            ),
            (
                Outbound::Notice {
                    room: "r",
                    text: "Bob was muted for 10 min",
                    when: "t",
                    standing: false,
                    event: "muted",
                    name: "Bob",
                    detail: "10 min",
                }
                .encode(),
                r#"{"type":"notice","room":"r","text":"Bob was muted for 10 min","when":"t","event":"muted","name":"Bob","detail":"10 min"}"#,
            ),
            (
                Outbound::Notice {
                    room: "r",
                    text: "Lunch at one",
                    when: "t",
                    standing: true,
                    event: "",
                    name: "",
                    detail: "",
                }
                .encode(),
                r#"{"type":"notice","room":"r","text":"Lunch at one","when":"t","standing":true}"#,
            ),
            (
                Outbound::Room {
                    room: "r",
                    locked: true,
                }
                .encode(),
                r#"{"type":"room","room":"r","locked":true}"#,
            ),
        ];
        for (frame, json) in frames {
            assert_eq!(frame.bytes().as_ref(), json.as_bytes());
        }
    }

    #[test]
    fn metered_frames_are_charged_while_any_clone_lives() {
        let meter = Arc::new(Meter::default());
        let base = meter.used();
        let frame = Outbound::Join {
            room: "r",
            name: "n",
            when: "t",
            people: 1,
        }
        .encode_metered(&meter);
        let clone = frame.clone();
        let charged = frame.bytes().len() as u64 + FRAME_OVERHEAD_BYTES;
        assert_eq!(meter.used(), base + charged);
        drop(frame);
        assert_eq!(meter.used(), base + charged);
        let copy = clone.charged_to(&meter);
        drop(clone);
        assert_eq!(meter.used(), base + charged);
        assert_eq!(
            copy.bytes().as_ref(),
            br#"{"type":"join","room":"r","name":"n","when":"t","people":1}"#
        );
        drop(copy);
        assert_eq!(meter.used(), base);
    }

    #[test]
    fn file_frames_have_the_documented_shape() {
        let frame = Outbound::File {
            id: 8,
            room: "lobby",
            name: "ann",
            when: "2026-11-25T19:21:32.123Z",
            file: FileRef {
                url: "/files/0123/cat.jpg",
                name: "cat.jpg",
                size: 1234,
                mime: "image/jpeg",
                width: Some(1600),
                height: None,
            },
        }
        .encode();
        let value: serde_json::Value = serde_json::from_slice(frame.bytes()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"file","id":8,"room":"lobby","name":"ann",
                "when":"2026-11-25T19:21:32.123Z","file":{"url":"/files/0123/cat.jpg",
                "name":"cat.jpg","size":1234,"type":"image/jpeg","width":1600,"height":null}})
        );
    }

    #[test]
    fn mentions_are_in_the_frame_only_when_there_are_some() {
        let named = ["Bob".to_string()];
        let json = Outbound::Message {
            id: 1,
            room: "r",
            name: "ann",
            text: "hi @bob",
            when: "t",
            mentions: &named,
            key: None,
        }
        .encode();
        assert_eq!(
            json.bytes().as_ref(),
            br#"{"type":"message","id":1,"room":"r","name":"ann","text":"hi @bob","when":"t","mentions":["Bob"]}"#
        );
    }
}
