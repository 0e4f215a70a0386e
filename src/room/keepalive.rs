//! Keeping members alive: one timer per room pings every member through its queue and lets
//! go of those not heard from within the limit; at shutdown the room tells everyone to close.
//! No connection has a timer of its own, which keeps an idle connection small.

use super::Room;
use crate::queue::Dismissal;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How rooms keep their members' connections alive.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// How often every member is pinged.
    pub ping_interval: Duration,
    /// A member not heard from (no frame, no pong) for this long is let go; it is noticed at
    /// the next ping, so within `pong_wait + ping_interval`.
    pub pong_wait: Duration,
}

impl Room {
    /// Pings every member, and lets go of those not heard from within the keepalive limit.
    pub(super) fn keep_alive(&mut self) {
        let pong_wait = self.shared.keepalive.pong_wait;
        let mut departed = Vec::new();
        let room = &self.name;
        self.members.retain(|_, seat| {
            let quiet = seat.outbox.frames.quiet_for();
            if quiet < pong_wait {
                seat.outbox.frames.ping();
                return true;
            }
            log::info!(
                "room {room}: dropping {}: nothing heard for {} ms, not even a pong",
                seat.name,
                quiet.as_millis()
            );
            seat.outbox.frames.dismiss(Dismissal::Silent);
            departed.push(seat.name.clone());
            false
        });
        self.announce_departures(departed);
    }

    /// The server is stopping: tells every member to close, and forgets them at once (nobody
    /// is told who left, as everyone is leaving).
    pub(super) fn dismiss_everyone(&mut self) {
        self.shutting_down = true;
        for seat in self.members.values() {
            seat.outbox.frames.dismiss(Dismissal::ShuttingDown);
        }
        self.members.clear();
        self.presence.clear();
        // Shared rooms: other boxes hear these names go now, not when this box's presence
        // expires (best effort: the bus may stop first).
        if let Some(link) = &self.link {
            for (_, (name, _)) in self.here.drain() {
                link.release(&name);
            }
        }
        self.elsewhere.clear();
        self.people.store(0, Ordering::Relaxed);
    }
}
