//! A client's outgoing queue: frames from its room, and the word to stop.
//!
//! One per connection, so it is built to cost nothing while idle and little per frame: a
//! mutex-guarded [`Batch`] (one frame in place, more in a `VecDeque` only when they pile up)
//! that the writer empties by taking it whole, so an idle queue holds no buffer and a frame that
//! arrives alone, the usual case, costs no allocation; and one slot for the writer's waker,
//! since the writer is the only one who waits. The room is the only producer and keeps the
//! length bound itself ([`Queue::push_within`]); the stop word (a close frame, from the reader or
//! from the room letting the client go) bypasses the frames, so a writer stuck behind a full
//! socket still hears it.
//! Two async-channels did this before at about 3.7 KB per idle client.
//!
//! The queue also carries the room's keepalive: the room asks for pings through it and reads
//! from it when the client was last heard, so no connection needs timers of its own.

use crate::message::Encoded;
use crate::meter::{Meter, SLOT_BYTES};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Frames waiting for one client, and whether it must stop. `S` is the stop word's type.
pub struct Queue<S> {
    state: Mutex<State<S>>,
    /// Gets back the slots the room charged as the writer takes them (see `meter`).
    meter: Option<Arc<Meter>>,
}

struct State<S> {
    frames: Batch,
    stop: Option<S>,
    closed: bool,
    /// The room asked for a ping.
    ping: bool,
    /// When the client last sent anything (a pong included).
    heard: Instant,
    /// The writer, if it is waiting: woken on every push, stop and close.
    waiting: Option<Waker>,
}

/// Frames in order: the first in place, the rest (if any) in a `VecDeque`.
#[derive(Debug, Default)]
pub struct Batch {
    /// `None` only while `more` is empty too.
    first: Option<Encoded>,
    more: VecDeque<Encoded>,
}

impl Batch {
    fn push(&mut self, frame: Encoded) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.more.push_back(frame);
        }
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Whether the batch has no frames.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

impl IntoIterator for Batch {
    type Item = Encoded;
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<Encoded>,
        std::collections::vec_deque::IntoIter<Encoded>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

/// The outcome of [`Queue::push_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; this many frames wait now.
    Queued(usize),
    /// Not queued: `limit` frames already wait.
    Full,
    /// Not queued: the client is gone.
    Closed,
}

/// Why a room lets a member go; the client turns it into a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dismissal {
    /// Its queue was full: it reads too slowly.
    TooSlow,
    /// Nothing heard from it, not even a pong, for the keepalive limit.
    Silent,
    /// The server is stopping.
    ShuttingDown,
    /// Memory is short and it is far behind.
    OverBudget,
    /// A host kicked or banned the person, for this reason.
    ShutOut(std::sync::Arc<str>),
}

/// The room's side of a client's queue, without the client's stop-word type.
pub trait FrameSink: Send + Sync {
    /// See [`Queue::push_within`].
    fn push_within(&self, frame: Encoded, limit: usize) -> Pushed;
    /// See [`Queue::len`].
    fn len(&self) -> usize;
    /// See [`Queue::close`].
    fn close(&self);
    /// See [`Queue::ping`].
    fn ping(&self);
    /// See [`Queue::quiet_for`].
    fn quiet_for(&self) -> Duration;
    /// Tells the client to close, for this reason (see [`Queue::stop`]).
    fn dismiss(&self, why: Dismissal);
}

impl<S: Send + From<Dismissal>> FrameSink for Queue<S> {
    fn push_within(&self, frame: Encoded, limit: usize) -> Pushed {
        Queue::push_within(self, frame, limit)
    }
    fn len(&self) -> usize {
        Queue::len(self)
    }
    fn close(&self) {
        Queue::close(self)
    }
    fn ping(&self) {
        Queue::ping(self)
    }
    fn quiet_for(&self) -> Duration {
        Queue::quiet_for(self)
    }
    fn dismiss(&self, why: Dismissal) {
        Queue::stop(self, S::from(why))
    }
}

/// What the writer gets from [`Queue::next`].
pub enum Next<S> {
    /// Everything queued, oldest first.
    Frames(Batch),
    /// Stop, with this word; queued frames are abandoned.
    Stop(S),
    /// Send a ping (nothing is queued).
    Ping,
    /// The queue was closed without a word.
    Closed,
}

impl<S> Default for Queue<S> {
    fn default() -> Self {
        Queue::with_meter(None)
    }
}

impl<S> Queue<S> {
    fn with_meter(meter: Option<Arc<Meter>>) -> Self {
        Queue {
            state: Mutex::new(State {
                frames: Batch::default(),
                stop: None,
                closed: false,
                ping: false,
                heard: Instant::now(),
                waiting: None,
            }),
            meter,
        }
    }
}

impl<S> Drop for Queue<S> {
    fn drop(&mut self) {
        let left = self.lock().frames.len();
        self.give_back(left);
    }
}

impl<S> Queue<S> {
    /// A queue whose filled slots are charged to `meter` by whoever fills them (the room, in
    /// one charge per broadcast) and given back here as they empty.
    pub fn metered(meter: Arc<Meter>) -> Self {
        Queue::with_meter(Some(meter))
    }

    fn give_back(&self, slots: usize) {
        if let (Some(meter), true) = (&self.meter, slots > 0) {
            meter.release(slots as u64 * SLOT_BYTES);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<S>> {
        // A panic while holding this lock cannot leave the state half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `frame` unless `limit` frames already wait or the queue is closed.
    pub fn push_within(&self, frame: Encoded, limit: usize) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        if state.frames.len() >= limit {
            return Pushed::Full;
        }
        state.frames.push(frame);
        let queued = state.frames.len();
        let waiting = state.waiting.take();
        drop(state);
        if let Some(writer) = waiting {
            writer.wake();
        }
        Pushed::Queued(queued)
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Asks the writer to stop; the first word wins.
    pub fn stop(&self, word: S) {
        let mut state = self.lock();
        if state.stop.is_none() {
            state.stop = Some(word);
        }
        Queue::wake(state);
    }

    /// Asks the writer for a ping, unless it has frames to send first.
    pub fn ping(&self) {
        let mut state = self.lock();
        state.ping = true;
        Queue::wake(state);
    }

    /// Notes that the client said something (any frame, a pong included).
    pub fn heard(&self) {
        self.lock().heard = Instant::now();
    }

    /// How long since the client last said anything (since the queue was made, if nothing).
    pub fn quiet_for(&self) -> Duration {
        self.lock().heard.elapsed()
    }

    /// Closes the queue: pushes fail from now on, and the writer is told once it has nothing
    /// left to say.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        Queue::wake(state);
    }

    /// Wakes the writer, if it waits, after letting go of the lock.
    fn wake(mut state: std::sync::MutexGuard<'_, State<S>>) {
        let waiting = state.waiting.take();
        drop(state);
        if let Some(writer) = waiting {
            writer.wake();
        }
    }

    /// Waits for frames, a stop word, the close or a ping. A stop word comes before frames, and
    /// frames before a ping.
    /// Only the writer waits on a queue (on this or [`Queue::stopped`], from its one task).
    pub async fn next(&self) -> Next<S> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if let Some(word) = state.stop.take() {
                return Poll::Ready(Next::Stop(word));
            }
            if !state.frames.is_empty() {
                // A ping asked for meanwhile stays due: only its pong tells the room the client
                // is still there.
                let batch = std::mem::take(&mut state.frames);
                drop(state);
                self.give_back(batch.len());
                return Poll::Ready(Next::Frames(batch));
            }
            if state.closed {
                return Poll::Ready(Next::Closed);
            }
            if std::mem::take(&mut state.ping) {
                return Poll::Ready(Next::Ping);
            }
            // Registered under the lock, so no push can slip between check and wait.
            state.wait(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Takes what is queued without waiting (for tests that inspect a queue).
    #[cfg(test)]
    pub fn take_now(&self) -> Batch {
        let batch = std::mem::take(&mut self.lock().frames);
        self.give_back(batch.len());
        batch
    }

    /// Whether the queue was closed (for tests).
    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The stop word waiting to be read, if any (for tests).
    #[cfg(test)]
    pub fn stop_word(&self) -> Option<S>
    where
        S: Clone,
    {
        self.lock().stop.clone()
    }

    /// Waits for a stop word only (frames stay queued), or the close (`None`).
    pub async fn stopped(&self) -> Option<S> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if let Some(word) = state.stop.take() {
                return Poll::Ready(Some(word));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            state.wait(cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl<S> State<S> {
    /// Keeps `waker` to wake the writer, cloning it only if it changed.
    fn wait(&mut self, waker: &Waker) {
        match &mut self.waiting {
            Some(kept) if kept.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Outbound;

    fn frame(n: u64) -> Encoded {
        Outbound::Message {
            id: n,
            room: "r",
            name: "n",
            text: "t",
            when: "w",
            mentions: &[],
            key: None,
        }
        .encode()
    }

    #[test]
    fn frames_come_out_in_batches_and_the_bound_holds() {
        let queue: Queue<&str> = Queue::default();
        assert_eq!(queue.push_within(frame(1), 2), Pushed::Queued(1));
        assert_eq!(queue.push_within(frame(2), 2), Pushed::Queued(2));
        assert_eq!(queue.push_within(frame(3), 2), Pushed::Full);
        match smol::block_on(queue.next()) {
            Next::Frames(batch) => {
                assert_eq!(batch.into_iter().collect::<Vec<_>>(), [frame(1), frame(2)])
            }
            _ => panic!("expected frames"),
        }
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.push_within(frame(3), 2), Pushed::Queued(1));
    }

    #[test]
    fn a_stop_word_overtakes_queued_frames_and_the_first_wins() {
        let queue: Queue<&str> = Queue::default();
        queue.push_within(frame(1), 8);
        queue.stop("too slow");
        queue.stop("later");
        assert!(matches!(
            smol::block_on(queue.next()),
            Next::Stop("too slow")
        ));
        // Without a new word, the queued frame is still there.
        assert!(matches!(smol::block_on(queue.next()), Next::Frames(_)));
    }

    #[test]
    fn a_waiting_writer_wakes_on_push_stop_and_close() {
        let queue: std::sync::Arc<Queue<&str>> = Default::default();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    match smol::block_on(queue.next()) {
                        Next::Frames(batch) => seen.push(format!("{}", batch.len())),
                        Next::Stop(word) => seen.push(word.to_string()),
                        Next::Ping => seen.push("ping".into()),
                        Next::Closed => return seen,
                    }
                }
            })
        };
        queue.push_within(frame(1), 8);
        // The frame must be taken before the stop word, which would overtake it.
        while queue.len() > 0 {
            std::thread::yield_now();
        }
        queue.stop("bye");
        queue.close();
        assert_eq!(writer.join().unwrap(), ["1", "bye"]);
        assert!(matches!(queue.push_within(frame(2), 8), Pushed::Closed));
        assert!(smol::block_on(queue.stopped()).is_none());
    }

    #[test]
    fn a_ping_comes_after_queued_frames_and_a_stop_word_before_both() {
        let queue: Queue<&str> = Queue::default();
        queue.ping();
        queue.push_within(frame(1), 8);
        assert!(matches!(smol::block_on(queue.next()), Next::Frames(_)));
        assert!(matches!(smol::block_on(queue.next()), Next::Ping));
        queue.ping();
        queue.stop("bye");
        assert!(matches!(smol::block_on(queue.next()), Next::Stop("bye")));
        assert!(matches!(smol::block_on(queue.next()), Next::Ping));
    }

    #[test]
    fn quiet_time_counts_from_the_last_thing_heard() {
        let queue: Queue<&str> = Queue::default();
        // Time passing, not synchronisation: the queue was made before this.
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(queue.quiet_for() >= std::time::Duration::from_millis(30));
        let before_heard = std::time::Instant::now();
        queue.heard();
        assert!(queue.quiet_for() <= before_heard.elapsed());
    }
}
