//! The wire protocol, defined here and nowhere else (the README documents it).
//!
//! Browser → server: a text frame `{"text": "..."}`, or any other text taken whole as the text
//! (the book's client sends plain text). Server → browser: one JSON object per text frame,
//! tagged by `type`. The server stamps name, time and a per-room id; nothing in an inbound frame
//! can set them.

use crate::meter::{Meter, FRAME_OVERHEAD_BYTES};
use async_tungstenite::tungstenite::Utf8Bytes;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest room or display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The room the page opens when none is named.
pub const DEFAULT_ROOM: &str = "lobby";
/// The name of a client that gives none.
pub const ANONYMOUS: &str = "anonymous";

/// What a browser sends.
#[derive(Deserialize)]
struct Inbound {
    text: String,
}

/// Extracts the chat text from an inbound text frame.
pub fn inbound_text(frame: &str) -> String {
    match serde_json::from_str::<Inbound>(frame) {
        Ok(inbound) => inbound.text,
        Err(_) => frame.to_owned(),
    }
}

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
    },
    /// News from another room for this person (sent to their connections in other rooms
    /// only): a message in one of their direct rooms, a mention of them, or a direct room
    /// just opened with them (`id` 0). Lightweight: the page counts it, it is not kept.
    Notice {
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
        /// What happened, for programs: `slow_down` (messages held back for sending too fast).
        code: &'a str,
        /// What happened, for people.
        text: &'a str,
    },
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

    /// A frame read back from the history store; `None` unless it is UTF-8.
    pub fn from_stored(bytes: Bytes) -> Option<Encoded> {
        Utf8Bytes::try_from(bytes).ok().map(Encoded)
    }
}

/// Checks a room name: 1–32 of `a-z 0-9 - _`.
pub fn valid_room(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Trims a display name and checks it: 1–32 printable characters.
pub fn display_name(raw: &str) -> Result<&str, &'static str> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err("a name needs at least one visible character")
    } else if chars > MAX_NAME_CHARS {
        Err("a name has at most 32 characters")
    } else if name.chars().any(char::is_control) {
        Err("a name cannot contain control characters")
    } else {
        Ok(name)
    }
}

/// The names among `present` that `text` mentions as `@name`, each once, in the order they
/// first appear. Names match case-insensitively, may contain spaces (the longest present name
/// wins: `@Ann Lee` over `@Ann`), and must stand alone: the `@` does not follow a letter or
/// digit (`ann@example.org` mentions nobody) and the name is not followed by one (`@Annie`
/// does not mention Ann).
pub fn mentions<'a>(text: &str, present: impl Iterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<(&str, String)> = present
        .filter(|name| !name.is_empty())
        .map(|name| (name, name.to_lowercase()))
        .collect();
    let mut found: Vec<String> = Vec::new();
    if names.is_empty() {
        return found;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    for (at, _) in text.match_indices('@') {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[at + 1..];
        let best = names
            .iter()
            .filter(|(name, folded)| {
                rest.get(..name.len())
                    .is_some_and(|head| head.to_lowercase() == *folded)
                    && !rest[name.len()..].chars().next().is_some_and(word)
            })
            .max_by_key(|(name, _)| name.len());
        if let Some((name, _)) = best {
            if !found.iter().any(|f| f == name) {
                found.push((*name).to_owned());
            }
        }
    }
    found
}

/// `now` as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T19:21:32.123Z`.
pub fn timestamp(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_and_plain_frames_both_carry_text() {
        assert_eq!(inbound_text(r#"{"text":"hi"}"#), "hi");
        assert_eq!(inbound_text("plain words"), "plain words");
        // JSON that is not our shape is somebody's text, shown as typed.
        assert_eq!(
            inbound_text(r#"{"name":"mallory"}"#),
            r#"{"name":"mallory"}"#
        );
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
        }
        .encode();
        assert_eq!(
            welcome.bytes().as_ref(),
            br#"{"type":"welcome","room":"r","name":"n","last_id":9,"complete":false,"members":["a","n"],"people":2}"#
        );
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
        }
        .encode();
        assert_eq!(
            json.bytes().as_ref(),
            br#"{"type":"message","id":1,"room":"r","name":"ann","text":"hi @bob","when":"t","mentions":["Bob"]}"#
        );
    }

    #[test]
    fn mentions_find_present_names_only() {
        let here = ["Ann", "Ann Lee", "Bob", "Zoë"];
        let m = |text: &str| mentions(text, here.iter().copied());
        assert_eq!(m("hi @bob and @ANN"), ["Bob", "Ann"]);
        assert_eq!(m("@Ann Lee, lunch?"), ["Ann Lee"]);
        assert_eq!(m("@ann lee @Ann Lee"), ["Ann Lee"]);
        assert_eq!(m("@zoë!"), ["Zoë"]);
        assert_eq!(m("(@Bob)"), ["Bob"]);
        // Not a mention: an address, a longer word, a name not present, a bare @.
        assert!(m("mail ann@example.org").is_empty());
        assert!(m("@Annie @Bobby @carol @ @@").is_empty());
        assert!(mentions("@Bob", std::iter::empty()).is_empty());
        // A multi-byte character right after the @ does not split a character.
        assert!(m("@é @").is_empty());
    }

    #[test]
    fn room_names_follow_the_rule() {
        for good in ["lobby", "a", "x-1_y", &"z".repeat(32)] {
            assert!(valid_room(good), "{good}");
        }
        for bad in ["", "Lobby", "a b", "é", "../x", &"z".repeat(33)] {
            assert!(!valid_room(bad), "{bad}");
        }
    }

    #[test]
    fn display_names_are_trimmed_and_checked() {
        assert_eq!(display_name("  Ann Lee "), Ok("Ann Lee"));
        assert_eq!(display_name(&"é".repeat(32)).map(str::len), Ok(64));
        assert!(display_name("   ").is_err());
        assert!(display_name(&"é".repeat(33)).is_err());
        assert!(display_name("a\u{7}b").is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_634_492_123);
        assert_eq!(timestamp(t), "2026-11-25T19:21:32.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
