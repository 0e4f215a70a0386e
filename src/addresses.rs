//! Per-address limits: how many WebSockets one address may hold at once, and how often it may
//! do something costly (sign in, start a room, share a file) per minute.
//!
//! One address is one device, or a few people behind one NAT; the limits are set so that
//! several tabs and a household pass, and one misbehaving script cannot take the whole
//! server. Plain bookkeeping, no HTTP: the web layer asks and answers `429`. Tables are
//! bounded: a count exists only while its address holds a socket, and a per-minute table keeps
//! at most [`WINDOW_TABLE`] addresses (expired ones are swept out, then the oldest).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses a per-minute table remembers at once.
pub const WINDOW_TABLE: usize = 4096;
/// The window of the per-minute limits.
pub const MINUTE: Duration = Duration::from_secs(60);

/// Open sockets per address, with a limit.
#[derive(Debug, Clone)]
pub struct Concurrent {
    /// Shared by the clones, so a reload's new limit holds for all of them.
    limit: Arc<AtomicUsize>,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One address's hold on a socket; given back when dropped, however the socket ends.
#[derive(Debug)]
pub struct AddressSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Concurrent {
    /// Allows `limit` sockets per address.
    pub fn new(limit: usize) -> Self {
        Concurrent {
            limit: Arc::new(AtomicUsize::new(limit)),
            counts: Arc::default(),
        }
    }

    /// Takes a slot for `ip`; `None` if it already holds `limit`.
    pub fn try_take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().expect("address counts lock");
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit.load(Relaxed) {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Allows `limit` from now on; sockets already open stay.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Relaxed);
    }

    /// Sockets `ip` holds now.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().expect("address counts lock");
        counts.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("address counts lock");
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Events per address per window (a fixed window that starts with an address's first event).
#[derive(Debug)]
pub struct PerWindow {
    /// Atomic so a reload can change it; the counts stay.
    limit: AtomicU32,
    window: Duration,
    table: Mutex<HashMap<IpAddr, Window>>,
}

/// One address's events in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    count: u32,
    since: Instant,
}

impl PerWindow {
    /// Allows `limit` events per address per [`MINUTE`].
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, MINUTE)
    }

    /// Allows `limit` events per address per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        PerWindow {
            limit: AtomicU32::new(limit),
            window,
            table: Mutex::default(),
        }
    }

    /// Allows `limit` events per window from now on; what was counted stays counted.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Relaxed);
    }

    /// Counts one event for `ip` now; `Err(wait)` if it has used up its allowance, with how
    /// long until its window ends. A refused event is not counted.
    pub fn try_count(&self, ip: IpAddr) -> Result<(), Duration> {
        self.try_count_at(ip, Instant::now())
    }

    /// [`PerWindow::try_count`] at the moment `now`.
    pub fn try_count_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut table = self.table.lock().expect("address window lock");
        if table.len() >= WINDOW_TABLE && !table.contains_key(&ip) {
            let window = self.window;
            table.retain(|_, w| now.saturating_duration_since(w.since) < window);
            if table.len() >= WINDOW_TABLE {
                // Still full of live windows: forget the oldest, the nearest to expiring.
                let oldest = table.iter().min_by_key(|(_, w)| w.since).map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    table.remove(&oldest);
                }
            }
        }
        let entry = table.entry(ip).or_insert(Window {
            count: 0,
            since: now,
        });
        let elapsed = now.saturating_duration_since(entry.since);
        if elapsed >= self.window {
            *entry = Window {
                count: 0,
                since: now,
            };
        }
        if entry.count >= self.limit.load(Relaxed) {
            return Err(self.window - now.saturating_duration_since(entry.since));
        }
        entry.count += 1;
        Ok(())
    }

    /// Addresses remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.table.lock().expect("address window lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn an_address_holds_up_to_its_limit_and_gets_slots_back_on_drop() {
        let sockets = Concurrent::new(2);
        let first = sockets.try_take(ip(1)).unwrap();
        let second = sockets.try_take(ip(1)).unwrap();
        assert!(sockets.try_take(ip(1)).is_none(), "a third socket");
        assert!(
            sockets.try_take(ip(2)).is_some(),
            "another address is not affected"
        );
        assert_eq!(sockets.held(ip(1)), 2);
        drop(first);
        assert_eq!(sockets.held(ip(1)), 1);
        let third = sockets.try_take(ip(1)).expect("the slot came back");
        drop((second, third));
        assert_eq!(sockets.held(ip(1)), 0);
        assert!(
            sockets.counts.lock().unwrap().is_empty(),
            "no entry is kept for an address that holds nothing"
        );
    }

    #[test]
    fn events_are_counted_per_address_per_window() {
        let limit = PerWindow::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.try_count_at(ip(1), start), Ok(()));
        }
        let later = start + Duration::from_secs(20);
        assert_eq!(
            limit.try_count_at(ip(1), later),
            Err(Duration::from_secs(40)),
            "the wait is what is left of the window"
        );
        assert_eq!(limit.try_count_at(ip(2), later), Ok(()), "per address");
        // Refusals do not count: the next window starts fresh with a full allowance.
        let next = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limit.try_count_at(ip(1), next), Ok(()));
        }
        assert!(limit.try_count_at(ip(1), next).is_err());
    }

    #[test]
    fn the_window_table_stays_bounded() {
        let limit = PerWindow::new(1, Duration::from_secs(60));
        let start = Instant::now();
        for n in 0..WINDOW_TABLE as u32 {
            limit.try_count_at(ip(n), start).unwrap();
        }
        assert_eq!(limit.remembered(), WINDOW_TABLE);
        // Full of live windows: a newcomer pushes out the oldest, the table does not grow.
        let soon = start + Duration::from_secs(1);
        limit.try_count_at(ip(1 << 20), soon).unwrap();
        assert_eq!(limit.remembered(), WINDOW_TABLE);
        // Once the windows have expired, they are swept out.
        let much_later = start + Duration::from_secs(120);
        limit.try_count_at(ip(2 << 20), much_later).unwrap();
        assert!(limit.remembered() < 10, "{}", limit.remembered());
    }
}
