//! Counters shown by `/healthz` and `/metrics`. Relaxed atomics: they are read for reporting, never to decide.

use crate::atomic::AtomicU64;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

/// Server-wide counters, shared by the rooms, the clients and the web layer.
#[derive(Debug, Default)]
pub struct Stats {
    rooms: AtomicU64,
    connections: AtomicU64,
    messages: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    disk_bytes: AtomicU64,
    held_back: AtomicU64,
    flooders_closed: AtomicU64,
    dropped_for_backlog: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    moderated: [AtomicU64; MODERATED.len()],
}

/// Host actions counted for `/healthz`, in the order of [`Moderated`]'s fields (`own_delete`:
/// an author deleting their own message).
pub const MODERATED: [&str; 11] = [
    "delete",
    "own_delete",
    "kick",
    "mute",
    "unmute",
    "ban",
    "unban",
    "lock",
    "unlock",
    "announce",
    "clear",
];

/// Host actions since start, per kind (`/healthz` shows them as the object `moderated`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Moderated {
    /// Messages a host deleted.
    pub delete: u64,
    /// Messages their authors deleted.
    pub own_delete: u64,
    /// People kicked.
    pub kick: u64,
    /// Mutes given.
    pub mute: u64,
    /// Mutes lifted.
    pub unmute: u64,
    /// Bans given.
    pub ban: u64,
    /// Bans lifted.
    pub unban: u64,
    /// Rooms locked.
    pub lock: u64,
    /// Rooms unlocked.
    pub unlock: u64,
    /// Announcements made or taken down.
    pub announce: u64,
    /// Histories cleared.
    pub clear: u64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Rooms with a running task.
    pub rooms: u64,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Chat messages broadcast since start.
    pub messages: u64,
    /// Frames the rooms queued for their members since start, one per recipient.
    pub delivered: u64,
    /// Clients dropped for being too slow since start.
    pub dropped: u64,
    /// Bytes of history written to disk since start.
    pub disk_bytes: u64,
    /// Times a sender began to be held back for posting too fast, since start.
    pub held_back: u64,
    /// Senders closed for flooding (held back too long), since start.
    pub flooders_closed: u64,
    /// Members let go, furthest behind first, because memory ran short, since start.
    pub dropped_for_backlog: u64,
    /// Requests refused by a limit since start, per reason.
    pub refused: Refused,
    /// Host actions since start, per kind.
    pub moderated: Moderated,
}

/// Why a request was refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A WebSocket over `--max-connections` (503).
    Connections,
    /// A WebSocket over `--max-sockets-per-address` (429).
    PerAddress,
    /// A WebSocket that would start a room over `--new-rooms-per-minute` (429).
    NewRoom,
    /// A sign-in or name change over `--sign-ins-per-minute` (429).
    SignIn,
    /// A sign-in from an address locked out for wrong passcodes (429).
    Passcode,
    /// A WebSocket from a page of another origin (403).
    Origin,
    /// A WebSocket while the accounted memory is near `--memory-budget` (503).
    Memory,
    /// An upload over `--uploads-per-minute` (429).
    Upload,
    /// A banned session or address at the door: sign-in, page or WebSocket (403).
    Banned,
}

impl Refusal {
    /// Every reason, in the order of [`Refused`]'s fields.
    pub const ALL: [Refusal; 9] = [
        Refusal::Connections,
        Refusal::PerAddress,
        Refusal::NewRoom,
        Refusal::SignIn,
        Refusal::Passcode,
        Refusal::Origin,
        Refusal::Memory,
        Refusal::Upload,
        Refusal::Banned,
    ];
}

/// Refusals since start, per reason (`/healthz` shows them as the object `refused`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// Over the connection cap.
    pub connections: u64,
    /// Over the per-address socket cap.
    pub per_address: u64,
    /// Over the new-room rate.
    pub new_rooms: u64,
    /// Over the sign-in rate.
    pub sign_ins: u64,
    /// Locked out after wrong passcodes.
    pub passcode: u64,
    /// From another origin.
    pub origin: u64,
    /// Near the memory budget.
    pub memory: u64,
    /// Over the upload rate.
    pub uploads: u64,
    /// Banned.
    pub banned: u64,
}

impl Stats {
    /// A room task started.
    pub fn room_opened(&self) {
        self.rooms.fetch_add(1, Relaxed);
    }
    /// A room task ended.
    pub fn room_closed(&self) {
        self.rooms.fetch_sub(1, Relaxed);
    }
    /// Takes a connection slot if fewer than `limit` are open.
    pub fn try_open_connection(&self, limit: usize) -> bool {
        let limit = limit as u64;
        self.connections
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }
    /// Gives a connection slot back.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }
    /// A chat message was broadcast.
    pub fn message(&self) {
        self.messages.fetch_add(1, Relaxed);
    }
    /// A room queued `frames` for its members (counted once per broadcast, not per recipient).
    pub fn delivered(&self, frames: u64) {
        self.delivered.fetch_add(frames, Relaxed);
    }
    /// A slow client was dropped.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }
    /// History bytes reached the disk.
    pub fn disk_written(&self, bytes: u64) {
        self.disk_bytes.fetch_add(bytes, Relaxed);
    }
    /// A sender began to be held back.
    pub fn sender_held_back(&self) {
        self.held_back.fetch_add(1, Relaxed);
    }
    /// A flooding sender was closed.
    pub fn flooder_closed(&self) {
        self.flooders_closed.fetch_add(1, Relaxed);
    }
    /// A member far behind was let go because memory ran short.
    pub fn dropped_for_backlog(&self) {
        self.dropped_for_backlog.fetch_add(1, Relaxed);
    }
    /// Counts a host action (one of [`MODERATED`]; others are ignored).
    pub fn moderated(&self, kind: &str) {
        if let Some(at) = MODERATED.iter().position(|k| *k == kind) {
            self.moderated[at].fetch_add(1, Relaxed);
        }
    }
    /// Counts a refusal. True when it deserves a warning in the log: the 1st, 2nd, 4th, 8th...
    /// of its reason, so a flood costs a few lines (each line gives the count so far, and
    /// `/healthz` the exact figures).
    pub fn refused(&self, why: Refusal) -> (u64, bool) {
        let n = self.refused[why as usize].fetch_add(1, Relaxed) + 1;
        (n, n.is_power_of_two())
    }
    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rooms: self.rooms.load(Relaxed),
            connections: self.connections.load(Relaxed),
            messages: self.messages.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            disk_bytes: self.disk_bytes.load(Relaxed),
            held_back: self.held_back.load(Relaxed),
            flooders_closed: self.flooders_closed.load(Relaxed),
            dropped_for_backlog: self.dropped_for_backlog.load(Relaxed),
            refused: {
                let count = |why: Refusal| self.refused[why as usize].load(Relaxed);
                Refused {
                    connections: count(Refusal::Connections),
                    per_address: count(Refusal::PerAddress),
                    new_rooms: count(Refusal::NewRoom),
                    sign_ins: count(Refusal::SignIn),
                    passcode: count(Refusal::Passcode),
                    origin: count(Refusal::Origin),
                    memory: count(Refusal::Memory),
                    uploads: count(Refusal::Upload),
                    banned: count(Refusal::Banned),
                }
            },
            moderated: {
                let count = |kind: usize| self.moderated[kind].load(Relaxed);
                Moderated {
                    delete: count(0),
                    own_delete: count(1),
                    kick: count(2),
                    mute: count(3),
                    unmute: count(4),
                    ban: count(5),
                    unban: count(6),
                    lock: count(7),
                    unlock: count(8),
                    announce: count(9),
                    clear: count(10),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_reason_and_logged_ever_more_rarely() {
        let stats = Stats::default();
        let logged: Vec<bool> = (0..9).map(|_| stats.refused(Refusal::NewRoom).1).collect();
        assert_eq!(
            logged,
            [true, true, false, true, false, false, false, true, false]
        );
        stats.refused(Refusal::Origin);
        let refused = stats.snapshot().refused;
        assert_eq!((refused.new_rooms, refused.origin), (9, 1));
        assert_eq!(
            refused.connections + refused.per_address + refused.sign_ins,
            0
        );
    }
}
