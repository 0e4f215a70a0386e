//! Memory by measure: what the server holds for its clients, counted as it is used, against
//! `--memory-budget`.
//!
//! Charged: a fixed share per open connection ([`CONNECTION_BYTES`]: its tasks, buffers and
//! socket while idle, and what tungstenite and the write gatherer may keep for it), the largest
//! message each connection has sent (tungstenite keeps a buffer that size), every encoded frame
//! the rooms made while any queue or history still holds it, and every queue slot while filled.
//! The rooms charge slots once per broadcast and the queues give them back as their writers take
//! them, so the hot path costs two atomic operations per broadcast and per batch, not per frame.
//!
//! New connections are admitted while the total stays below seven eighths of the budget; past
//! fifteen sixteenths, rooms let go of the members holding the largest backlogs. Without a budget
//! the counting still runs, for `/healthz`.

use crate::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// What one open connection is charged, whatever it does: its idle state (about 3.7 KB
/// measured, BENCHMARKS.md), what tungstenite keeps of the largest fragment it wrote (at most
/// `client::FRAGMENT_BYTES`, 256 B), and the write gatherer's buffer while a write waits
/// (at most 4 KiB), rounded up.
pub const CONNECTION_BYTES: u64 = 10 << 10;
/// One filled queue slot: a shared frame handle and its share of the queue's ring.
pub const SLOT_BYTES: u64 = 40;
/// An encoded frame's cost beyond its bytes: its allocation and the shared handle's header.
pub const FRAME_OVERHEAD_BYTES: u64 = 96;
/// What a started server holds before any client arrives (a release build starts at about
/// 1.4 MiB; BENCHMARKS.md), rounded up.
pub const BASE_BYTES: u64 = 2 << 20;

/// The server's accounted memory, and its budget if it has one.
#[derive(Debug)]
pub struct Meter {
    budget: Option<u64>,
    used: AtomicU64,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new(None)
    }
}

impl Meter {
    /// A meter that starts at [`BASE_BYTES`], with `budget` bytes to keep within (if any).
    pub fn new(budget: Option<u64>) -> Meter {
        Meter {
            budget,
            used: AtomicU64::new(BASE_BYTES),
        }
    }

    /// `bytes` more are held.
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Relaxed);
    }

    /// `bytes` are no longer held.
    pub fn release(&self, bytes: u64) {
        // Saturating: a release never makes the count wrap, even if a charge was estimated.
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(bytes)));
    }

    /// The accounted total now.
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// The budget, if there is one.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Whether a new connection fits: the total with it stays under seven eighths of the
    /// budget, leaving the rest for the queues and frames of those already here.
    pub fn admits_connection(&self) -> bool {
        self.budget
            .is_none_or(|budget| self.used() + CONNECTION_BYTES <= budget / 8 * 7)
    }

    /// Whether the total has passed fifteen sixteenths of the budget: members with large
    /// backlogs must go before the rest of the server runs short.
    pub fn is_over(&self) -> bool {
        self.budget
            .is_some_and(|budget| self.used() > budget / 16 * 15)
    }
}

/// Bytes charged to a meter and given back on drop; may grow.
pub struct Charge<'a> {
    meter: &'a Meter,
    bytes: u64,
}

impl<'a> Charge<'a> {
    /// Charges `bytes` now.
    pub fn new(meter: &'a Meter, bytes: u64) -> Self {
        meter.charge(bytes);
        Charge { meter, bytes }
    }

    /// Raises the charge to `bytes` if it is less.
    pub fn at_least(&mut self, bytes: u64) {
        if bytes > self.bytes {
            self.meter.charge(bytes - self.bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.meter.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_and_pressure_follow_the_total() {
        let meter = Meter::new(Some(16 << 20));
        let mut admitted = 0;
        let mut charges = Vec::new();
        while meter.admits_connection() {
            charges.push(Charge::new(&meter, CONNECTION_BYTES));
            admitted += 1;
        }
        // 16 MiB admits well over a thousand idle connections.
        assert!(admitted >= 1000, "{admitted}");
        assert!(!meter.is_over());
        meter.charge(2 << 20);
        assert!(meter.is_over());
        meter.release(2 << 20);
        charges.pop();
        assert!(meter.admits_connection());
        drop(charges);
        assert_eq!(meter.used(), BASE_BYTES);
    }

    #[test]
    fn a_charge_grows_and_is_given_back() {
        let meter = Meter::default();
        {
            let mut charge = Charge::new(&meter, 100);
            charge.at_least(50);
            assert_eq!(meter.used(), BASE_BYTES + 100);
            charge.at_least(4096);
            assert_eq!(meter.used(), BASE_BYTES + 4096);
        }
        assert_eq!(meter.used(), BASE_BYTES);
        assert!(meter.admits_connection() && !meter.is_over());
    }
}
