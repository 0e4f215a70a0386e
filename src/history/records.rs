//! The history file format. Each room is one append-only file of records
//! `[len: u32 LE][crc32: u32 LE][frame]`, where `frame` is JSON exactly as sent to browsers.
//!
//! Most records are messages (`message`, `file`), kept by their `id`. Two are tombstones, the
//! frames that announced a removal: `delete` (message `id` is gone) and `clear` (every message
//! up to `id` is gone). Tombstones apply in file order when the file is read, so a deleted
//! message is never replayed again, and a `clear` also carries the last id forward, so ids are
//! never reused after the newest messages were removed and the file compacted.

use super::Entry;
use crate::message::Encoded;
use bytes::Bytes;
use std::io::Read;

/// Bytes of a record header: length and CRC-32.
pub(super) const HEADER_BYTES: usize = 8;
/// Largest record accepted when loading; anything larger is corruption.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// A room's file read back: its messages with tombstones applied, and its last id.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Messages still standing, oldest first.
    pub entries: Vec<Entry>,
    /// The highest id any record named.
    pub last_id: u64,
    /// Records read (messages and tombstones).
    pub records: usize,
    /// Bytes of whole, checked records; anything after is a torn write.
    pub good: usize,
}

/// Appends one record for `frame` to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(frame).to_le_bytes());
    out.extend_from_slice(frame);
}

/// Counts the records in a buffer of whole records.
pub(super) fn count_records(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= HEADER_BYTES {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        bytes = &bytes[(HEADER_BYTES + len).min(bytes.len())..];
        n += 1;
    }
    n
}

/// Decodes records until the first damaged one, applying tombstones as they come.
pub(super) fn decode_records(bytes: &[u8]) -> Decoded {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a str>,
        id: u64,
    }
    let mut decoded = Decoded::default();
    let mut reader = bytes;
    loop {
        let mut header = [0u8; HEADER_BYTES];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES || reader.len() < len {
            break;
        }
        let (frame, rest) = reader.split_at(len);
        if crc32(frame) != crc {
            break;
        }
        let Ok(Head { kind, id }) = serde_json::from_slice::<Head>(frame) else {
            break;
        };
        decoded.last_id = decoded.last_id.max(id);
        match kind {
            Some("delete") => decoded.entries.retain(|e| e.id != id),
            Some("clear") => decoded.entries.retain(|e| e.id > id),
            _ => {
                let Some(frame) = Encoded::from_stored(Bytes::copy_from_slice(frame)) else {
                    break;
                };
                decoded.entries.push(Entry {
                    id,
                    frame,
                    origin: None,
                });
            }
        }
        reader = rest;
        decoded.records += 1;
        decoded.good += HEADER_BYTES + len;
    }
    decoded
}

/// The records a compacted file holds: the newest `capacity` standing messages, after a
/// `clear` marker that keeps the last id when the newest messages were removed.
pub(super) fn compacted(decoded: &Decoded, capacity: usize, room: &str) -> Vec<u8> {
    let keep = &decoded.entries[decoded.entries.len().saturating_sub(capacity)..];
    let mut out = Vec::new();
    if keep.last().map_or(0, |e| e.id) < decoded.last_id {
        let marker = crate::message::Outbound::Clear {
            room,
            id: decoded.last_id,
        }
        .encode();
        // Ahead of the messages kept: a `clear` only removes what comes before it.
        encode_record(&mut out, marker.bytes());
    }
    for entry in keep {
        encode_record(&mut out, entry.frame.bytes());
    }
    out
}

/// CRC-32 (IEEE 802.3, as in zip and PNG), bitwise: records are small and written once a second.
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
