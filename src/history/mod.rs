//! Room history: the last messages of a room in memory ([`Ring`]), and optionally on disk
//! ([`Store`]), so a newcomer sees the conversation and a restart loses nothing but the last
//! flush interval. Deleted messages are gone from both: the ring forgets them, and the room's
//! file gets a tombstone, on disk before anyone is told of the deletion.
//!
//! Files: this one holds the ring; `records` the file format (records, checksums, tombstones);
//! `store` the disk thread that appends, erases and compacts.

mod records;
mod store;
#[cfg(test)]
mod tests;

pub use store::{Loaded, Store};

use crate::message::Encoded;
use std::collections::VecDeque;
use std::time::Instant;

/// One stored message: its id and the frame browsers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The message id.
    pub id: u64,
    /// The encoded `message` (or `file`) frame.
    pub frame: Encoded,
    /// Who said it and when, for messages said since this server started (the frame names
    /// the author but not the person behind the name). `None` for history read from disk.
    pub origin: Option<Origin>,
}

/// Who said a message, and when: what an author's own deletion is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The author's person id (see `room::JoinRequest::person`).
    pub person: u64,
    /// When the room stamped it.
    pub at: Instant,
}

/// The newest messages of one room, oldest first, and the room's last id.
#[derive(Debug, Clone)]
pub struct Ring {
    entries: VecDeque<Entry>,
    capacity: usize,
    last_id: u64,
    /// Messages up to this id are no longer kept (pushed out by newer ones); deleted messages
    /// do not count: they are gone on purpose, and a catch-up over them is still complete.
    forgotten_up_to: u64,
}

/// What a client asked to catch up on, answered.
pub struct Replay<'a> {
    /// The entries to send, oldest first.
    pub entries: Vec<&'a Entry>,
    /// False when the ring no longer reaches back to what was asked for.
    pub complete: bool,
}

impl Ring {
    /// An empty ring keeping `capacity` messages.
    pub fn new(capacity: usize) -> Ring {
        Ring {
            // Grows as messages arrive: most rooms never fill their ring.
            entries: VecDeque::new(),
            capacity,
            last_id: 0,
            forgotten_up_to: 0,
        }
    }

    /// A ring holding the newest of `entries` (oldest first) after messages up to `last_id`.
    /// Whatever came before the first entry counts as forgotten.
    pub fn from_entries(capacity: usize, entries: Vec<Entry>, last_id: u64) -> Ring {
        let mut ring = Ring::new(capacity);
        ring.forgotten_up_to = entries.first().map_or(last_id, |e| e.id - 1);
        for entry in entries {
            ring.push(entry);
        }
        ring.last_id = ring.last_id.max(last_id);
        ring
    }

    /// The id of the newest message ever stored (0 if none). Ids are never reused, not even
    /// after the newest message is deleted.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Adds a message, forgetting the oldest if full.
    pub fn push(&mut self, entry: Entry) {
        self.last_id = self.last_id.max(entry.id);
        if self.entries.len() == self.capacity {
            if let Some(oldest) = self.entries.pop_front() {
                self.forgotten_up_to = oldest.id;
            }
        }
        self.entries.push_back(entry);
    }

    /// The kept message `id`, if there is one.
    pub fn get(&self, id: u64) -> Option<&Entry> {
        let at = self.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        self.entries.get(at)
    }

    /// Forgets message `id`; returns it if it was kept.
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let at = self.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        self.entries.remove(at)
    }

    /// Forgets every message up to id `through`; returns them. The last id stays.
    pub fn clear(&mut self, through: u64) -> Vec<Entry> {
        let end = self.entries.partition_point(|e| e.id <= through);
        self.entries.drain(..end).collect()
    }

    /// Messages newer than `after` (all kept ones if `None`).
    pub fn since(&self, after: Option<u64>) -> Replay<'_> {
        let after = after.unwrap_or(0);
        let entries: Vec<&Entry> = self.entries.iter().filter(|e| e.id > after).collect();
        // Complete if nothing is newer, or nothing after `after` was pushed out.
        let complete = after >= self.last_id || self.forgotten_up_to <= after;
        Replay { entries, complete }
    }
}
