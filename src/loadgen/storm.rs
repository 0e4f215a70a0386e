//! The join storm in one room: N clients join as fast as the generator can open them, then all
//! drop at once, the way a crowd arrives and an access point reboots. It measures what the
//! storm costs the server in frames and bytes sent and in peak memory, apart for the joining
//! and for the mass disconnect, against the memory it holds with them all idle.
//!
//! The clients are the poller-read receivers, so the generator takes a burst of frames with one
//! `read` and does not fall behind the server it measures.

use super::proc::{peak_kib, reset_peak, rss_kib};
use super::receivers::Receivers;
use super::{healthz, settle, step, wire, LoadGen};
use smol::Timer;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The one room of the storm.
const ROOM: &str = "storm";
/// Frames have stopped arriving once none has for this long.
const QUIET: Duration = Duration::from_millis(500);
/// Longest the storm may take to be over (all welcomed, then quiet), and the mass disconnect.
const STORM_LIMIT: Duration = Duration::from_secs(300);
/// How often the generator looks at the counters or asks `/healthz` while it waits.
const POLL: Duration = Duration::from_millis(10);

/// What a storm run measured. Memory is the server's, in KiB, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    /// Clients that joined the room.
    pub clients: usize,
    /// From the first connection to the last frame of the storm.
    pub storm_seconds: f64,
    /// Frames all clients read from their connection until the storm was over (every kind).
    pub frames: u64,
    /// Bytes all clients read after their handshakes until the storm was over.
    pub bytes: u64,
    /// Whether frames had stopped (for 500 ms) before the memory was read; if not, the wait
    /// hit its bound.
    pub settled: bool,
    /// Clients the server closed or that broke during the storm.
    pub lost: u64,
    /// VmRSS with all of them joined and idle.
    pub rss_idle_kib: u64,
    /// VmHWM over the join storm.
    pub hwm_join_kib: u64,
    /// VmHWM over the mass disconnect, until the server counted no connection.
    pub hwm_drop_kib: u64,
    /// VmRSS once the server counted no connection.
    pub rss_after_kib: u64,
    /// From closing every client to the server counting none.
    pub drop_seconds: f64,
}

impl LoadGen {
    /// Runs a storm of `clients` into one room with at most `in_flight` handshakes at a time.
    /// Needs [`LoadGen::watch`] (the server's memory is read) and the right to reset its peak.
    pub async fn storm(&self, clients: usize, in_flight: usize) -> io::Result<Storm> {
        let pid = *self
            .server_pids
            .first()
            .ok_or_else(|| io::Error::other("a storm needs the server's pid (watch)"))?;
        let readers = Rc::new(Receivers::start(self.epoch, u64::MAX)?);
        reset_peak(pid)?;
        let start = self.micros();
        let next = Rc::new(Cell::new(0usize));
        let mut openers = Vec::new();
        for _ in 0..in_flight.clamp(1, clients.max(1)) {
            let (next, readers, addr) = (next.clone(), readers.clone(), self.addr);
            openers.push(self.executor.spawn(async move {
                while next.get() < clients {
                    let n = next.get();
                    next.set(n + 1);
                    let path = format!("/ws/{ROOM}?name=c{n}");
                    let (stream, early) = step(wire::connect_async(addr, &path))
                        .await?
                        .map_err(|e| io::Error::new(e.kind(), format!("client c{n}: {e}")))?;
                    readers.add(stream, early)?;
                }
                io::Result::Ok(())
            }));
        }
        for opener in openers {
            opener.await?;
        }
        let deadline = Instant::now() + STORM_LIMIT;
        let wanted = clients as u64;
        while readers.welcomed() < wanted && readers.welcomed() + readers.lost() < wanted {
            if Instant::now() >= deadline {
                break;
            }
            Timer::after(POLL).await;
        }
        if readers.welcomed() < wanted {
            return Err(io::Error::other(format!(
                "{} of {clients} clients welcomed ({} lost)",
                readers.welcomed(),
                readers.lost()
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let settled = settle(|| readers.last_frame(), self.epoch, QUIET, left).await;
        let (frames, bytes) = readers.received();
        let storm_seconds = readers.last_frame().saturating_sub(start) as f64 / 1e6;
        let lost = readers.lost();
        let rss_idle_kib = rss_kib(pid)?;
        let hwm_join_kib = peak_kib(pid)?;

        reset_peak(pid)?;
        let dropped = Instant::now();
        Rc::into_inner(readers)
            .ok_or_else(|| io::Error::other("the receivers are still shared"))?
            .finish()?;
        let deadline = dropped + STORM_LIMIT;
        loop {
            let connections = healthz(self.addr).await?["connections"].as_u64();
            if connections == Some(0) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "the server still counts {connections:?} connections after the drop"
                )));
            }
            Timer::after(POLL).await;
        }
        let drop_seconds = dropped.elapsed().as_secs_f64();
        Ok(Storm {
            clients,
            storm_seconds,
            frames,
            bytes,
            settled,
            lost,
            rss_idle_kib,
            hwm_join_kib,
            hwm_drop_kib: peak_kib(pid)?,
            rss_after_kib: rss_kib(pid)?,
            drop_seconds,
        })
    }
}
