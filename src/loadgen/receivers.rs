//! The fan-out's receivers: many WebSocket clients read by one thread through one
//! level-triggered poller, each message taken with a single `read`.
//!
//! A task per client on an async runtime costs the generator a wake-up, a second `read` that
//! finds nothing, and a re-arming `epoll_ctl` per message; at a thousand receivers that made the
//! generator slower than the server, so the latency it measured was its own. This pool does
//! about what the smallest C reader would (see the floor in `BENCHMARKS.md`).
//!
//! A receiver counts as joined once its `welcome` arrives: every server version sends that
//! first on a join, while a client's own `join` announcement may be batched or left out.
//! Every frame and byte read is counted, and the time of the last one kept, so a join storm can
//! tell how much the server sent and when it stopped.
//!
//! Receivers may be joined to several servers (boxes sharing rooms through Redis); each is
//! given a group, the box it is on, and latencies are kept per group, so that delivery on the
//! sender's box and on the others can be told apart.

use super::wire;
use crate::atomic::AtomicU64;
use polling::{Event, Events, PollMode, Poller};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a join may take to be seen (its welcome).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from a socket at a time.
const READ_BYTES: usize = 64 * 1024;

/// Receivers joined to one server or several, read on their own thread.
pub struct Receivers {
    shared: Arc<Shared>,
    poller: Arc<Poller>,
    handoff: mpsc::Sender<Receiver>,
    joined: mpsc::Receiver<io::Result<()>>,
    thread: Option<JoinHandle<io::Result<Vec<Vec<u32>>>>>,
}

/// What the reading thread and the generator share.
struct Shared {
    /// Messages sent at or after this time (µs since `epoch`) are counted.
    since: AtomicU64,
    /// Messages counted so far.
    delivered: AtomicU64,
    /// Receivers whose welcome has arrived.
    welcomed: AtomicU64,
    /// Receivers that could not be taken in or were closed (by the server, or broken).
    lost: AtomicU64,
    /// WebSocket frames read, of every kind, since the start.
    frames: AtomicU64,
    /// Bytes read after the handshakes (frame headers included), since the start.
    bytes: AtomicU64,
    /// When the last frame was read (µs since `epoch`; 0: none yet).
    last_frame: AtomicU64,
    stop: AtomicBool,
    epoch: Instant,
}

/// One receiving client, owned by the reading thread.
struct Receiver {
    stream: TcpStream,
    /// Bytes of a frame not yet complete.
    pending: Vec<u8>,
    /// Whether its welcome has arrived.
    welcomed: bool,
    /// Whether [`Receivers::join`] waits to hear of its welcome.
    report: bool,
    /// Which group its latencies are kept with (the box it is on).
    group: usize,
}

impl Receivers {
    /// Starts the reading thread. Messages sent at or after `since` (µs since `epoch`) count.
    pub fn start(epoch: Instant, since: u64) -> io::Result<Receivers> {
        let poller = Arc::new(Poller::new()?);
        let shared = Arc::new(Shared {
            since: AtomicU64::new(since),
            delivered: AtomicU64::new(0),
            welcomed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            epoch,
        });
        let (handoff, arrivals) = mpsc::channel();
        let (report_joined, joined) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("receivers".into())
            .spawn({
                let (poller, shared) = (poller.clone(), shared.clone());
                move || read_all(&poller, &shared, &arrivals, &report_joined)
            })?;
        Ok(Receivers {
            shared,
            poller,
            handoff,
            joined,
            thread: Some(thread),
        })
    }

    /// Joins `room` as `name` on the server at `addr`, its latencies kept in `group`, and
    /// returns once its welcome has arrived.
    pub fn join(&self, addr: SocketAddr, group: usize, room: &str, name: &str) -> io::Result<()> {
        let (stream, pending) = wire::connect(addr, &format!("/ws/{room}?name={name}"))?;
        self.hand_over(stream, pending, true, group)?;
        match self.joined.recv_timeout(JOIN_TIMEOUT) {
            Ok(result) => result,
            Err(_) => Err(io::Error::other(format!("{name}: join not seen in time"))),
        }
    }

    /// Takes a client whose handshake is done (`stream`, and the bytes read past its head), its
    /// latencies kept in group 0, and returns at once; [`Receivers::welcomed`] counts it once its welcome has arrived.
    pub fn add(&self, stream: TcpStream, pending: Vec<u8>) -> io::Result<()> {
        self.hand_over(stream, pending, false, 0)
    }

    fn hand_over(
        &self,
        stream: TcpStream,
        pending: Vec<u8>,
        report: bool,
        group: usize,
    ) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let receiver = Receiver {
            stream,
            pending,
            welcomed: false,
            report,
            group,
        };
        self.handoff
            .send(receiver)
            .map_err(|_| io::Error::other("the receiving thread has ended"))?;
        self.poller.notify()
    }

    /// Receivers whose welcome has arrived.
    pub fn welcomed(&self) -> u64 {
        self.shared.welcomed.load(Ordering::Relaxed)
    }

    /// Receivers lost: not taken in, or closed by the server or broken.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Frames and bytes read so far (all receivers, all kinds of frame).
    pub fn received(&self) -> (u64, u64) {
        (
            self.shared.frames.load(Ordering::Relaxed),
            self.shared.bytes.load(Ordering::Relaxed),
        )
    }

    /// When the last frame was read (µs since the epoch; 0: none yet).
    pub fn last_frame(&self) -> u64 {
        self.shared.last_frame.load(Ordering::Relaxed)
    }

    /// Messages counted so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Counts from `since` (µs since the epoch) on, starting again from zero.
    pub fn count_from(&self, since: u64) {
        self.shared.since.store(since, Ordering::Relaxed);
        self.shared.delivered.store(0, Ordering::Relaxed);
    }

    /// Stops reading, closes every client at once (their sockets, with no WebSocket closing
    /// handshake), and returns each counted message's latency (µs), one list per group (as
    /// many lists as the highest group that counted one, plus one).
    pub fn finish(mut self) -> io::Result<Vec<Vec<u32>>> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<Vec<Vec<u32>>> {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.poller.notify()?;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the receiving thread panicked")),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The reading thread: takes new receivers, reads whatever is readable, until told to stop.
fn read_all(
    poller: &Poller,
    shared: &Shared,
    arrivals: &mpsc::Receiver<Receiver>,
    joined: &mpsc::Sender<io::Result<()>>,
) -> io::Result<Vec<Vec<u32>>> {
    let mut receivers: Vec<Option<Receiver>> = Vec::new();
    let mut latencies = Vec::new();
    let mut events = Events::new();
    let mut chunk = vec![0u8; READ_BYTES];
    let result = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break Ok(latencies);
        }
        while let Ok(receiver) = arrivals.try_recv() {
            let key = receivers.len();
            // SAFETY (polling's contract): every socket added here is deleted from the poller
            // below before the receiver holding it is dropped.
            #[allow(unsafe_code)]
            let added = unsafe {
                poller.add_with_mode(&receiver.stream, Event::readable(key), PollMode::Level)
            };
            if let Err(error) = added {
                shared.lost.fetch_add(1, Ordering::Relaxed);
                if receiver.report {
                    let _ = joined.send(Err(error));
                }
                continue;
            }
            let early = receiver.pending.len() as u64;
            shared.bytes.fetch_add(early, Ordering::Relaxed);
            receivers.push(Some(receiver));
            // What arrived with the handshake's answer.
            let outcome = take(&mut receivers[key], &[], shared, &mut latencies, joined);
            if let Err(error) = outcome {
                shared.lost.fetch_add(1, Ordering::Relaxed);
                if let Some(receiver) = receivers[key].take() {
                    let _ = poller.delete(&receiver.stream);
                    if receiver.report && !receiver.welcomed {
                        let _ = joined.send(Err(error));
                    }
                }
            }
        }
        events.clear();
        if let Err(error) = poller.wait(&mut events, None) {
            break Err(error);
        }
        for event in events.iter() {
            let slot = &mut receivers[event.key];
            let Some(receiver) = slot.as_mut() else {
                continue;
            };
            let read = match receiver.stream.read(&mut chunk) {
                Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    Ok(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => Err(e),
            };
            let outcome =
                read.and_then(|n| take(slot, &chunk[..n], shared, &mut latencies, joined));
            if let Err(error) = outcome {
                // Closed by the server (a kick) or broken: it counts no more, which shows
                // as loss in the result.
                shared.lost.fetch_add(1, Ordering::Relaxed);
                if let Some(receiver) = slot.take() {
                    let _ = poller.delete(&receiver.stream);
                    if receiver.report && !receiver.welcomed {
                        let _ = joined.send(Err(error));
                    }
                }
            }
        }
    };
    for receiver in receivers.into_iter().flatten() {
        let _ = poller.delete(&receiver.stream);
    }
    result
}

/// Handles the frames in a receiver's pending bytes plus `fresh`.
fn take(
    slot: &mut Option<Receiver>,
    fresh: &[u8],
    shared: &Shared,
    latencies: &mut Vec<Vec<u32>>,
    joined: &mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    let Some(receiver) = slot.as_mut() else {
        return Ok(());
    };
    receiver.pending.extend_from_slice(fresh);
    let mut buf = std::mem::take(&mut receiver.pending);
    let mut at = 0;
    let mut frames = 0;
    while let Some(frame) = wire::parse(&mut buf[at..])? {
        // A message is counted once, at its last fragment; its first carries what is read.
        frames += u64::from(frame.fin);
        let payload = &buf[at + frame.payload.start..at + frame.payload.end];
        match frame.opcode {
            wire::TEXT => receiver.text(payload, shared, latencies, joined),
            wire::PING => {
                let mut pong = Vec::with_capacity(payload.len() + 8);
                wire::frame(&mut pong, wire::PONG, payload, Some(*b"mask"));
                receiver.stream.write_all(&pong)?;
            }
            wire::CLOSE => return Err(io::Error::other("closed by the server")),
            _ => {}
        }
        at += frame.len;
    }
    if frames > 0 {
        shared.frames.fetch_add(frames, Ordering::Relaxed);
        let now = shared.epoch.elapsed().as_micros() as u64;
        shared.last_frame.store(now.max(1), Ordering::Relaxed);
    }
    buf.drain(..at);
    receiver.pending = buf;
    Ok(())
}

impl Receiver {
    /// One text frame: its welcome, or a message to time.
    fn text(
        &mut self,
        payload: &[u8],
        shared: &Shared,
        latencies: &mut Vec<Vec<u32>>,
        joined: &mpsc::Sender<io::Result<()>>,
    ) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        if !self.welcomed {
            if text.contains(r#""type":"welcome""#) {
                self.welcomed = true;
                shared.welcomed.fetch_add(1, Ordering::Relaxed);
                if self.report {
                    let _ = joined.send(Ok(()));
                }
            }
            return;
        }
        let Some(sent) = super::sent_at(text) else {
            return;
        };
        if sent < shared.since.load(Ordering::Relaxed) {
            return;
        }
        let now = shared.epoch.elapsed().as_micros() as u64;
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        if latencies.len() <= self.group {
            latencies.resize_with(self.group + 1, Vec::new);
        }
        latencies[self.group].push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
    }
}
