//! Rooms: one task per room owns its members and its message counter; everyone else talks to it
//! over a channel of [`Event`]s (the book's join / leave / forward, in one ordered channel).
//!
//! The room never waits for a client. Each broadcast is encoded once and offered to every
//! member's bounded queue with `try_send`; a member whose queue is full is too slow: it is
//! kicked (its connection is told to close) and removed, and the others carry on.
//!
//! The [`Registry`] maps names to running rooms. It starts a room's task on the first join and
//! the task removes itself when its last member leaves. Joins are sent while the registry lock is
//! held, so a room deciding to end (under the same lock, with an empty channel) never loses one.

use crate::message::{timestamp, Encoded, Outbound};
use crate::stats::Stats;
use crate::trace::Tracer;
use async_channel::{Receiver, Sender, TrySendError};
use smol::lock::Mutex;
use smol::Executor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Events a room's channel holds before senders wait. Forwards beyond it make the sending
/// client's reader wait, which in turn stops reading its socket: backpressure, not memory.
const ROOM_EVENT_QUEUE: usize = 256;

/// Identifies one connection in its room.
pub type ClientId = u64;

/// How a room reaches one member.
pub struct Outbox {
    /// The member's bounded queue of encoded frames.
    pub frames: Sender<Encoded>,
    /// Tells the member's connection to close because it fell too far behind.
    pub kick: Box<dyn Fn() + Send + Sync>,
}

/// What a room's loop receives.
enum Event {
    /// A client enters the room.
    Join {
        id: ClientId,
        name: String,
        outbox: Outbox,
    },
    /// A client leaves the room.
    Leave { id: ClientId },
    /// A client says something; the room stamps it and broadcasts it.
    Forward { id: ClientId, text: String },
}

/// Starts rooms on demand and hands out memberships.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    rooms: Mutex<HashMap<String, Sender<Event>>>,
    next_client: AtomicU64,
    stats: Arc<Stats>,
    tracer: Arc<Tracer>,
    executor: Arc<Executor<'static>>,
}

/// One client's place in one room. Dropping it leaves the room (best effort; call
/// [`Member::leave`] to be sure the room hears it).
pub struct Member {
    id: ClientId,
    room: Sender<Event>,
    left: bool,
}

impl Registry {
    /// A registry whose rooms run on `executor`.
    pub fn new(executor: Arc<Executor<'static>>, stats: Arc<Stats>, tracer: Arc<Tracer>) -> Self {
        Registry {
            shared: Arc::new(Shared {
                rooms: Mutex::new(HashMap::new()),
                next_client: AtomicU64::new(1),
                stats,
                tracer,
                executor,
            }),
        }
    }

    /// Joins `room` (starting it if needed) as `name`; the room delivers to `outbox`.
    pub async fn join(&self, room: &str, name: String, outbox: Outbox) -> Member {
        let id = self.shared.next_client.fetch_add(1, Ordering::Relaxed);
        let mut rooms = self.shared.rooms.lock().await;
        let events = match rooms.get(room) {
            Some(events) => events.clone(),
            None => {
                let (events, inbox) = async_channel::bounded(ROOM_EVENT_QUEUE);
                rooms.insert(room.to_owned(), events.clone());
                self.shared.stats.room_opened();
                let task = Room::new(room.to_owned(), self.shared.clone()).run(inbox);
                self.shared.executor.spawn(task).detach();
                events
            }
        };
        // The room ends only under this lock, so it is alive to receive this join.
        let _ = events.send(Event::Join { id, name, outbox }).await;
        drop(rooms);
        Member {
            id,
            room: events,
            left: false,
        }
    }
}

impl Member {
    /// This member's id in its room.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Forwards `text` to the room. Waits while the room's queue is full.
    pub async fn say(&self, text: String) {
        // A room outlives its members, so this only fails during shutdown, when nothing matters.
        let _ = self.room.send(Event::Forward { id: self.id, text }).await;
    }

    /// Leaves the room, waiting until the room has the news.
    pub async fn leave(mut self) {
        self.left = true;
        let _ = self.room.send(Event::Leave { id: self.id }).await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.left {
            // Best effort when a connection ends abruptly; if the queue is full the room still
            // notices at its next broadcast, because this member's frame queue is closed by then.
            let _ = self.room.try_send(Event::Leave { id: self.id });
        }
    }
}

/// A member as the room sees it.
struct Seat {
    name: String,
    outbox: Outbox,
}

/// Whether a broadcast may be skipped for a member that is falling behind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Chat messages: every member gets every one, or is dropped.
    Every,
    /// Presence (join/leave): skipped for a member whose queue is over half full, keeping the
    /// rest of its queue for messages. A burst of joins (a whole floor reconnecting after a
    /// restart, each join announced to everyone) would otherwise drop clients that are merely
    /// busy.
    Spare,
}

/// The state one room task owns.
struct Room {
    name: String,
    members: HashMap<ClientId, Seat>,
    /// The id of the last message; the next one gets `last_id + 1`.
    last_id: u64,
    shared: Arc<Shared>,
}

impl Room {
    fn new(name: String, shared: Arc<Shared>) -> Self {
        Room {
            name,
            members: HashMap::new(),
            last_id: 0,
            shared,
        }
    }

    /// The room's loop: the only code that touches its members.
    async fn run(mut self, inbox: Receiver<Event>) {
        log::debug!("room {}: started", self.name);
        while let Ok(event) = inbox.recv().await {
            match event {
                Event::Join { id, name, outbox } => self.join(id, name, outbox),
                Event::Leave { id } => self.leave(id),
                Event::Forward { id, text } => self.forward(id, text),
            }
            if self.members.is_empty() && self.try_end(&inbox).await {
                break;
            }
        }
        log::debug!("room {}: ended", self.name);
    }

    /// Removes the room from the registry unless a join is waiting.
    async fn try_end(&self, inbox: &Receiver<Event>) -> bool {
        let mut rooms = self.shared.rooms.lock().await;
        if !inbox.is_empty() {
            return false;
        }
        rooms.remove(&self.name);
        self.shared.stats.room_closed();
        true
    }

    fn join(&mut self, id: ClientId, name: String, outbox: Outbox) {
        self.shared.tracer.trace("New client joined");
        log::debug!("room {}: {name} joined", self.name);
        let when = timestamp(SystemTime::now());
        let frame = Outbound::Join {
            room: &self.name,
            name: &name,
            when: &when,
        }
        .encode();
        self.members.insert(id, Seat { name, outbox });
        self.broadcast(frame, Delivery::Spare);
    }

    fn leave(&mut self, id: ClientId) {
        if let Some(seat) = self.members.remove(&id) {
            self.announce_departures(vec![seat.name]);
        }
    }

    fn forward(&mut self, id: ClientId, text: String) {
        let Some(seat) = self.members.get(&id) else {
            return; // Said just before being dropped; the room has moved on.
        };
        self.shared
            .tracer
            .trace(format_args!("Message received: {text}"));
        self.last_id += 1;
        let when = timestamp(SystemTime::now());
        let frame = Outbound::Message {
            id: self.last_id,
            room: &self.name,
            name: &seat.name,
            text: &text,
            when: &when,
        }
        .encode();
        self.shared.stats.message();
        self.broadcast(frame, Delivery::Every);
    }

    /// Offers `frame` to every member without waiting; drops those that cannot take it.
    fn broadcast(&mut self, frame: Encoded, delivery: Delivery) {
        let departed = self.offer(&frame, delivery);
        self.announce_departures(departed);
    }

    /// Tells the room that these people left, repeating while announcing drops someone else.
    fn announce_departures(&mut self, mut departed: Vec<String>) {
        while let Some(name) = departed.pop() {
            self.shared.tracer.trace("Client left");
            log::debug!("room {}: {name} left", self.name);
            let when = timestamp(SystemTime::now());
            let frame = Outbound::Leave {
                room: &self.name,
                name: &name,
                when: &when,
            }
            .encode();
            departed.extend(self.offer(&frame, Delivery::Spare));
        }
    }

    /// `try_send`s a clone of `frame` to every member; returns the names of those removed.
    fn offer(&mut self, frame: &Encoded, delivery: Delivery) -> Vec<String> {
        let mut departed = Vec::new();
        let (room, stats) = (&self.name, &self.shared.stats);
        self.members.retain(|_, seat| {
            let queue = &seat.outbox.frames;
            if delivery == Delivery::Spare
                && queue.len() * 2 >= queue.capacity().unwrap_or(usize::MAX)
            {
                return true;
            }
            match queue.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::warn!(
                        "room {room}: dropping {}: {} messages queued, too slow",
                        seat.name,
                        seat.outbox.frames.len()
                    );
                    (seat.outbox.kick)();
                    stats.dropped();
                    departed.push(seat.name.clone());
                    false
                }
                Err(TrySendError::Closed(_)) => {
                    // The connection is gone without a Leave reaching us.
                    departed.push(seat.name.clone());
                    false
                }
            }
        });
        departed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct TestClient {
        member: Member,
        frames: Receiver<Encoded>,
        kicked: Arc<AtomicBool>,
    }

    fn registry(executor: &Arc<Executor<'static>>) -> (Registry, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let registry = Registry::new(executor.clone(), stats.clone(), Arc::new(Tracer::off()));
        (registry, stats)
    }

    async fn join(registry: &Registry, room: &str, name: &str, queue: usize) -> TestClient {
        let (tx, frames) = async_channel::bounded(queue);
        let kicked = Arc::new(AtomicBool::new(false));
        let flag = kicked.clone();
        let outbox = Outbox {
            frames: tx,
            kick: Box::new(move || flag.store(true, Ordering::SeqCst)),
        };
        let member = registry.join(room, name.to_owned(), outbox).await;
        TestClient {
            member,
            frames,
            kicked,
        }
    }

    async fn next_json(client: &TestClient) -> serde_json::Value {
        let frame = client.frames.recv().await.expect("room closed the queue");
        serde_json::from_slice(frame.bytes()).unwrap()
    }

    fn with_executor<F, Fut>(f: F)
    where
        F: FnOnce(Arc<Executor<'static>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let executor = Arc::new(Executor::new());
        let test = f(executor.clone());
        smol::block_on(executor.run(test));
    }

    #[test]
    fn members_see_joins_and_each_others_messages_with_stamps() {
        with_executor(|ex| async move {
            let (registry, stats) = registry(&ex);
            let ann = join(&registry, "lobby", "ann", 8).await;
            assert_eq!(next_json(&ann).await["type"], "join");
            let bob = join(&registry, "lobby", "bob", 8).await;
            assert_eq!(next_json(&ann).await["name"], "bob");
            assert_eq!(next_json(&bob).await["type"], "join");

            ann.member.say("hello".into()).await;
            bob.member.say("hi ann".into()).await;
            for client in [&ann, &bob] {
                let first = next_json(client).await;
                assert_eq!(
                    (
                        first["id"].as_u64(),
                        first["name"].as_str(),
                        first["text"].as_str()
                    ),
                    (Some(1), Some("ann"), Some("hello"))
                );
                assert_eq!(first["room"], "lobby");
                assert!(first["when"].as_str().unwrap().ends_with('Z'));
                let second = next_json(client).await;
                assert_eq!(
                    (second["id"].as_u64(), second["name"].as_str()),
                    (Some(2), Some("bob"))
                );
            }
            assert_eq!(stats.snapshot().messages, 2);
        });
    }

    #[test]
    fn rooms_are_separate() {
        with_executor(|ex| async move {
            let (registry, stats) = registry(&ex);
            let ann = join(&registry, "one", "ann", 8).await;
            let bob = join(&registry, "two", "bob", 8).await;
            next_json(&ann).await;
            next_json(&bob).await;
            assert_eq!(stats.snapshot().rooms, 2);
            ann.member.say("only for one".into()).await;
            assert_eq!(next_json(&ann).await["text"], "only for one");
            bob.member.say("only for two".into()).await;
            // Bob's next frame is his own message: nothing from room one came between.
            assert_eq!(next_json(&bob).await["text"], "only for two");
        });
    }

    #[test]
    fn leaving_is_announced_and_ends_delivery() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex);
            let ann = join(&registry, "lobby", "ann", 8).await;
            let bob = join(&registry, "lobby", "bob", 8).await;
            next_json(&ann).await;
            next_json(&ann).await;
            let bob_frames = bob.frames.clone();
            bob.member.leave().await;
            let leave = next_json(&ann).await;
            assert_eq!(
                (leave["type"].as_str(), leave["name"].as_str()),
                (Some("leave"), Some("bob"))
            );
            ann.member.say("still here".into()).await;
            assert_eq!(next_json(&ann).await["text"], "still here");
            // Bob got his own join, then nothing: the room dropped his queue.
            assert_eq!(bob_frames.len(), 1);
            assert!(bob_frames.is_closed());
        });
    }

    #[test]
    fn a_full_queue_kicks_only_that_member() {
        with_executor(|ex| async move {
            let (registry, stats) = registry(&ex);
            let slow = join(&registry, "lobby", "slow", 2).await;
            let fast = join(&registry, "lobby", "fast", 64).await;
            // slow never reads. Its own join fills half its queue, so fast's join (presence)
            // is skipped for it; m0 fills the queue; m1 finds it full and drops slow.
            for n in 0..10 {
                fast.member.say(format!("m{n}")).await;
            }
            assert_eq!(next_json(&fast).await["type"], "join");
            assert_eq!(next_json(&fast).await["text"], "m0");
            assert_eq!(next_json(&fast).await["text"], "m1");
            let leave = next_json(&fast).await;
            assert_eq!(
                (leave["type"].as_str(), leave["name"].as_str()),
                (Some("leave"), Some("slow"))
            );
            for n in 2..10 {
                assert_eq!(next_json(&fast).await["text"], format!("m{n}"));
            }
            let kept: Vec<_> = std::iter::from_fn(|| slow.frames.try_recv().ok())
                .map(|f| {
                    serde_json::from_slice::<serde_json::Value>(f.bytes()).unwrap()["type"].clone()
                })
                .collect();
            assert_eq!(
                kept,
                ["join", "message"],
                "presence was not skipped, or a message was"
            );
            assert!(slow.kicked.load(Ordering::SeqCst));
            assert!(!fast.kicked.load(Ordering::SeqCst));
            assert_eq!(stats.snapshot().dropped, 1);
        });
    }

    #[test]
    fn a_room_emptied_by_its_last_leave_takes_new_joins() {
        with_executor(|ex| async move {
            let (registry, stats) = registry(&ex);
            let ann = join(&registry, "lobby", "ann", 8).await;
            next_json(&ann).await;
            let frames = ann.frames.clone();
            ann.member.leave().await;
            // The room drops ann's queue when she leaves; the room may end right after.
            while frames.recv().await.is_ok() {}
            let again = join(&registry, "lobby", "ann", 8).await;
            assert_eq!(next_json(&again).await["type"], "join");
            assert_eq!(stats.snapshot().rooms, 1);
        });
    }

    #[test]
    fn dropping_a_member_leaves_the_room() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex);
            let ann = join(&registry, "lobby", "ann", 8).await;
            let bob = join(&registry, "lobby", "bob", 8).await;
            next_json(&ann).await;
            next_json(&ann).await;
            drop(bob);
            assert_eq!(next_json(&ann).await["type"], "leave");
        });
    }
}
