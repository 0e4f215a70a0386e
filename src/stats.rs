//! Counters shown by `/healthz`. Relaxed atomics: they are read for reporting, never to decide.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Server-wide counters, shared by the rooms, the clients and the web layer.
#[derive(Debug, Default)]
pub struct Stats {
    rooms: AtomicU64,
    connections: AtomicU64,
    messages: AtomicU64,
    dropped: AtomicU64,
    disk_bytes: AtomicU64,
    held_back: AtomicU64,
    flooders_closed: AtomicU64,
    dropped_for_backlog: AtomicU64,
    refused_for_memory: AtomicU64,
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
    /// WebSockets refused (503) because the memory budget was nearly used, since start.
    pub refused_for_memory: u64,
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
    /// A WebSocket was refused for want of memory.
    pub fn refused_for_memory(&self) {
        self.refused_for_memory.fetch_add(1, Relaxed);
    }
    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rooms: self.rooms.load(Relaxed),
            connections: self.connections.load(Relaxed),
            messages: self.messages.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            disk_bytes: self.disk_bytes.load(Relaxed),
            held_back: self.held_back.load(Relaxed),
            flooders_closed: self.flooders_closed.load(Relaxed),
            dropped_for_backlog: self.dropped_for_backlog.load(Relaxed),
            refused_for_memory: self.refused_for_memory.load(Relaxed),
        }
    }
}
