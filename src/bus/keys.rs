//! What smolchat keeps in Redis, and how it is read back: key and channel names, the posting
//! script, the shape of stream entries, and the connection settings.
//!
//! Per room `R` (room names are `[a-z0-9_-]`, so they never contain a `:`):
//! - `smolchat:room:R:id`: the last id given in the room (a counter; INCR).
//! - `smolchat:room:R:id:key:K`: the id of the message a sender gave key `K` (see
//!   [`POST_SCRIPT`]), for ten minutes.
//! - `smolchat:room:R:log`: the room's history, a stream capped at exactly `--history`
//!   entries. Entry ids are `<message id>-0`, so a range of message ids is a range of the
//!   stream; fields `p` (the author's person id) and `f` (the frame members receive).
//! - channel `smolchat:room:R:said`: each message once more, as `<id> <person> <frame>`; and
//!   presence: `+<box> <person> <name>` (a name came on a box), `-<box> <name>` (it went).
//! - `smolchat:room:R:box:B`: who is in the room on box `B` (a random id per start): a hash
//!   of lowercase name → `<person> <name>`, expiring [`PRESENCE_TTL`] after the box's last
//!   heartbeat, so a box that dies leaves presence by itself.
//! - `smolchat:room:R:boxes`: the boxes that may have people in the room (a set; a box whose
//!   hash is gone is taken out by the next claim or load).
//!
//! Per address `A` (as the boxes see it): `smolchat:budget:A`, what it may still post across
//! every box (see [`POST_SCRIPT`]).
//!
//! Files (`bus::files`): `smolchat:file:F`, the URL of the box holding shared file `F`, for
//! as long as files are kept; `smolchat:boxes:token`, what boxes show each other when
//! fetching a file.
//!
//! For every room, the hosts' book ([`BOOK_KEY`]): a hash of the book's entries
//! (`moderation::entries`: `ban:<name>`, `mute:<name>`, `lock:<room>`, `announce:<room>`),
//! and a field `made` once a box has seeded it; rulings are published on [`BOOK_CHANNEL`] as
//! `<box> <ruling as JSON>`.

use crate::message::Encoded;
use crate::meter::Meter;
use ::redis::{RedisError, RedisResult, Value};
use std::sync::Arc;
use std::time::Duration;

use super::Heard;

/// How long connecting to Redis may take before it counts as unreachable.
pub const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Prefix of every key and channel, so smolchat can share a Redis with others.
const PREFIX: &str = "smolchat:room:";

/// The posting script. KEYS: the id counter, the stream. ARGV:
/// 1. and 2. the frame before and after its id; 3. the author's person id; 4. the history
///    length; 5. the channel (empty: publish nothing; the posting box publishes once a
///    replica has the message); 6. the last id the posting box has seen in the room;
/// 7. and 8. the sender's key for the message (empty: none) and how long a key is kept, in
///    seconds;
/// 9. to 12. the sender's address (empty: none), its budget across the boxes (messages per
///    second, burst) and the prefix of budgets' keys;
/// 13. to 15. the key noting which box holds the file the frame shares (empty: none),
///     this box's URL, and how long files are kept, in seconds.
///
/// A key already kept (`smolchat:room:R:id:key:K`, holding its message's id) means the
/// message was kept before: nothing is done and that id returned, so a message sent again
/// after an answer was lost shows once, and no id is skipped. An address's budget is a token
/// bucket on Redis's clock, [`BUDGET_PREFIX`]`<address>`; a message over it is refused with
/// -1 and takes no id. Redis runs a script alone, so the id, the append and the publish are
/// one step: ids increase by one per room across all boxes, and the stream and the channel
/// carry them in that order. `MAXLEN =` trims exactly: the stream never holds more than the
/// history length. A counter behind what a box has seen (Redis lost its data: restarted
/// without persistence) goes on from there, so ids never repeat. Returns the id.
pub const POST_SCRIPT: &str = r"
local key = nil
if ARGV[7] ~= '' then
  key = KEYS[1] .. ':key:' .. ARGV[7]
  local before = redis.call('GET', key)
  if before then return tonumber(before) end
end
if ARGV[9] ~= '' then
  local bucket = ARGV[12] .. ARGV[9]
  local rate, burst = tonumber(ARGV[10]), tonumber(ARGV[11])
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local held = redis.call('HMGET', bucket, 't', 'at')
  local tokens = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  if tokens < 1 then return -1 end
  redis.call('HSET', bucket, 't', tokens - 1, 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
end
if ARGV[13] ~= '' then
  redis.call('SET', ARGV[13], ARGV[14], 'EX', ARGV[15])
end
local id = redis.call('INCR', KEYS[1])
local seen = tonumber(ARGV[6])
if id <= seen then
  id = seen + 1
  redis.call('SET', KEYS[1], id)
end
local frame = ARGV[1] .. id .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[4], id .. '-0', 'p', ARGV[3], 'f', frame)
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[3] .. ' ' .. frame)
end
if key then
  redis.call('SET', key, id, 'EX', ARGV[8])
end
return id
";

/// How long a box's presence in a room outlives its last heartbeat.
pub const PRESENCE_TTL: Duration = Duration::from_secs(6);

/// Claims a name in a room for a person on this box, unless another person holds it on a
/// live box. KEYS: the room's set of boxes, this box's hash. ARGV: the prefix of boxes'
/// hashes, this box, the lowercase name, the person, the name as shown, the TTL in seconds,
/// the channel. Announces the name on the channel. Returns 1, or 0 if taken.
pub const CLAIM_SCRIPT: &str = r"
for _, b in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if b ~= ARGV[2] then
    local held = redis.call('HGET', ARGV[1] .. b, ARGV[3])
    if held then
      if string.match(held, '^(%d+) ') ~= ARGV[4] then return 0 end
    elseif redis.call('EXISTS', ARGV[1] .. b) == 0 then
      redis.call('SREM', KEYS[1], b)
    end
  end
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. ' ' .. ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[7], '+' .. ARGV[2] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
return 1
";

/// Everyone in a room on other boxes. KEYS: the room's set of boxes. ARGV: the prefix of
/// boxes' hashes, this box. Returns `[box, "<person> <name>", ...]`; forgets boxes whose hash
/// is gone.
pub const HERE_SCRIPT: &str = r"
local out = {}
for _, b in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if b ~= ARGV[2] then
    local all = redis.call('HGETALL', ARGV[1] .. b)
    if #all == 0 then
      redis.call('SREM', KEYS[1], b)
    end
    for i = 2, #all, 2 do
      table.insert(out, b)
      table.insert(out, all[i])
    end
  end
end
return out
";

/// The hosts' book, shared by every box.
pub const BOOK_KEY: &str = "smolchat:book";

/// The channel every ruling is published on.
pub const BOOK_CHANNEL: &str = "smolchat:book:ruled";

/// Carries out a ruling in Redis and publishes it. KEYS: the book, the room's stream. ARGV:
/// the entry (empty: none), `1` to set it or `0` to remove it, its value, what to erase
/// (`message`, `through` or empty) and the id, the channel and the payload. One step, so every
/// box that hears the ruling finds the book and the stream already changed.
pub const RULE_SCRIPT: &str = r"
if ARGV[1] ~= '' then
  if ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], 'made', '1')
  else
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
end
if ARGV[4] == 'message' then
  redis.call('XDEL', KEYS[2], ARGV[5] .. '-0')
elseif ARGV[4] == 'through' then
  redis.call('XTRIM', KEYS[2], 'MINID', (tonumber(ARGV[5]) + 1) .. '-0')
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
";

/// Reads the book, seeding it first with the asking box's own entries (ARGV: name, value,
/// ...) if no box has yet: a box's bans from before it shared rooms are not forgotten, and a
/// book that hosts have emptied since stays empty. KEYS: the book. Returns HGETALL.
pub const BOOK_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'made', '1')
  for i = 1, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return redis.call('HGETALL', KEYS[1])
";

/// The prefix of each address's budget across the boxes (a hash: tokens, when).
pub const BUDGET_PREFIX: &str = "smolchat:budget:";

/// The token boxes fetch each other's files with (random, set by the first box).
pub const TOKEN_KEY: &str = "smolchat:boxes:token";

/// The prefix of each shared file's holder: `smolchat:file:<file id>` holds the URL of the
/// box that holds the file.
pub const FILE_PREFIX: &str = "smolchat:file:";

/// The counter of `room`'s ids.
pub fn id_key(room: &str) -> String {
    format!("{PREFIX}{room}:id")
}

/// The stream of `room`'s history.
pub fn log_key(room: &str) -> String {
    format!("{PREFIX}{room}:log")
}

/// The set of boxes that may have people in `room`.
pub fn boxes_key(room: &str) -> String {
    format!("{PREFIX}{room}:boxes")
}

/// The prefix of `room`'s per-box hashes (a box id follows).
pub fn box_prefix(room: &str) -> String {
    format!("{PREFIX}{room}:box:")
}

/// The channel `room`'s messages are published on.
pub fn channel(room: &str) -> String {
    format!("{PREFIX}{room}:said")
}

/// The room a channel belongs to, if it is one of ours.
pub fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(PREFIX)?.strip_suffix(":said")
}

/// A published message: `<id> <person> <frame>`.
pub fn parse_published(payload: &[u8], meter: &Arc<Meter>) -> Option<Heard> {
    let mut parts = payload.splitn(3, |b| *b == b' ');
    let id = number(parts.next()?)?;
    let person = number(parts.next()?)?;
    let frame = Encoded::from_bus(parts.next()?.to_vec(), meter)?;
    Some(Heard { id, person, frame })
}

/// Presence as published: who came (`+<box> <person> <name>`) or went (`-<box> <name>`).
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// `name` (of `person`) is in the room on `box`.
    Came {
        /// The box.
        on: String,
        /// Who.
        person: u64,
        /// The name as shown.
        name: String,
    },
    /// `name` left the room on `box`.
    Went {
        /// The box.
        on: String,
        /// The name as shown.
        name: String,
    },
}

/// A presence payload, if this is one.
pub fn parse_presence(payload: &[u8]) -> Option<Seen> {
    let text = std::str::from_utf8(payload).ok()?;
    if let Some(rest) = text.strip_prefix('+') {
        let (on, rest) = rest.split_once(' ')?;
        let (person, name) = held(rest)?;
        return Some(Seen::Came {
            on: on.to_owned(),
            person,
            name,
        });
    }
    let (on, name) = text.strip_prefix('-')?.split_once(' ')?;
    Some(Seen::Went {
        on: on.to_owned(),
        name: name.to_owned(),
    })
}

/// A box's hash value: `<person> <name>`.
pub fn held(value: &str) -> Option<(u64, String)> {
    let (person, name) = value.split_once(' ')?;
    Some((person.parse().ok()?, name.to_owned()))
}

/// The entries of an XRANGE or XREVRANGE reply, in the reply's order.
pub fn parse_entries(reply: Value, meter: &Arc<Meter>) -> RedisResult<Vec<Heard>> {
    let bad =
        |what: &str| RedisError::from((::redis::ErrorKind::Parse, "stream entry", what.to_owned()));
    let Value::Array(entries) = reply else {
        return Err(bad("not an array"));
    };
    let mut heard = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(bad("an entry is not an array"));
        };
        let (Some(Value::Array(fields)), Some(id)) = (parts.pop(), parts.pop()) else {
            return Err(bad("an entry is not [id, fields]"));
        };
        let id = bulk(&id)
            .and_then(|id| id.split(|b| *b == b'-').next())
            .and_then(number)
            .ok_or_else(|| bad("an entry id is not <n>-0"))?;
        let (mut person, mut frame) = (None, None);
        for pair in fields.chunks(2) {
            match (bulk(&pair[0]), pair.get(1).and_then(bulk)) {
                (Some(b"p"), Some(value)) => person = number(value),
                (Some(b"f"), Some(value)) => frame = Encoded::from_bus(value.to_vec(), meter),
                _ => {}
            }
        }
        let (Some(person), Some(frame)) = (person, frame) else {
            return Err(bad("an entry lacks its person or frame"));
        };
        heard.push(Heard { id, person, frame });
    }
    Ok(heard)
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn number(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_room() {
        assert_eq!(channel("lobby"), "smolchat:room:lobby:said");
        assert_eq!(room_of(&channel("dm-1-2")), Some("dm-1-2"));
        assert_eq!(room_of("smolchat:room:lobby:log"), None);
        assert_eq!(room_of("other:lobby:said"), None);
    }

    #[test]
    fn presence_payloads_parse() {
        assert_eq!(
            parse_presence(b"+b0x 42 Ann Lee"),
            Some(Seen::Came {
                on: "b0x".into(),
                person: 42,
                name: "Ann Lee".into()
            })
        );
        assert_eq!(
            parse_presence(b"-b0x Ann Lee"),
            Some(Seen::Went {
                on: "b0x".into(),
                name: "Ann Lee".into()
            })
        );
        assert_eq!(parse_presence(b"12 3 {}"), None);
        assert_eq!(parse_presence(b"+b0x x Ann"), None);
    }

    #[test]
    fn published_messages_and_stream_entries_parse() {
        let meter = Arc::new(Meter::new(None));
        let heard = parse_published(br#"12 99 {"type":"message","id":12}"#, &meter).unwrap();
        assert_eq!((heard.id, heard.person), (12, 99));
        assert_eq!(
            heard.frame.bytes().as_ref(),
            br#"{"type":"message","id":12}"#
        );
        assert!(parse_published(b"12 {}", &meter).is_none());

        let field = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            field("7-0"),
            Value::Array(vec![field("p"), field("3"), field("f"), field("{}")]),
        ])]);
        let entries = parse_entries(reply, &meter).unwrap();
        assert_eq!((entries[0].id, entries[0].person), (7, 3));
        assert!(parse_entries(Value::Nil, &meter).is_err());
    }
}
