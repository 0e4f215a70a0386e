//! Rooms: one task per room owns its members, its history and its message counter; everyone
//! else talks to it over a channel of [`Event`]s (the book's join / leave / forward, in one
//! ordered channel).
//!
//! The room never waits for a client. Each broadcast is encoded once and offered to every
//! member's queue without waiting, within the queue's bound; a member whose queue is full is
//! too slow: it is kicked (its connection is told to close) and removed, and the others go on.
//!
//! Rooms also keep their members alive: one timer per room asks every member's writer for a
//! ping and lets go of members not heard from within the limit, and at shutdown the room tells
//! every member to close. A connection has no timer or shutdown listener of its own.
//!
//! The [`Registry`] maps names to running rooms. It starts a room's task on the first join and
//! the task removes itself when its last member leaves. Joins are sent while the registry lock is
//! held, so a room deciding to end (under the same lock, with an empty channel) never loses one.
//! A room that ends leaves its history behind: in the store on disk, or (memory only) with the
//! registry, so whoever comes back sees the conversation and ids go on increasing.

use crate::history::{Entry, Ring, Store};
use crate::message::{timestamp, Encoded, Outbound};
use crate::queue::{Dismissal, FrameSink, Pushed};
use crate::shutdown;
use crate::stats::Stats;
use crate::trace::Tracer;
use async_channel::{Receiver, Sender};
use smol::future::or;
use smol::lock::Mutex;
use smol::stream::StreamExt;
use smol::{Executor, Timer};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Events a room's channel holds before senders wait. Forwards beyond it make the sending
/// client's reader wait, which in turn stops reading its socket: backpressure, not memory.
/// The channel allocates every slot up front, so this is also a per-room memory cost.
const ROOM_EVENT_QUEUE: usize = 64;
/// Histories of ended rooms kept in memory, the longest-ended forgotten first. With a store,
/// a forgotten history is read back from disk (long flushed by then); without, it is gone.
const DORMANT_ROOMS: usize = 256;

/// Identifies one connection in its room.
pub type ClientId = u64;

/// How a room reaches one member. Dropping it (the member left or was dropped) closes the
/// member's queue, which tells its writer.
pub struct Outbox {
    /// The member's queue of encoded frames; the room alone pushes to it.
    pub frames: Arc<dyn FrameSink>,
    /// Frames queued before the member counts as too slow.
    pub limit: usize,
}

/// How rooms keep their members' connections alive.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// How often every member is pinged.
    pub ping_interval: Duration,
    /// A member not heard from (no frame, no pong) for this long is let go; it is noticed at
    /// the next ping, so within `pong_wait + ping_interval`.
    pub pong_wait: Duration,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.frames.close();
    }
}

/// Who wants to join, and what they already have.
pub struct JoinRequest {
    /// The room.
    pub room: String,
    /// The display name, already checked.
    pub name: String,
    /// Identifies a person across tabs: the same person may hold a name twice, nobody else may.
    pub person: u64,
    /// The newest message id the client has; it gets what came after. `None`: all history.
    pub since: Option<u64>,
    /// Where the room delivers.
    pub outbox: Outbox,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// Somebody else holds that name in the room.
    NameTaken,
}

/// What woke a room's loop.
enum Wake {
    Event(Event),
    /// Time to ping everyone.
    Tick,
    /// The server is stopping.
    Shutdown,
    /// Nobody can send to the room any more.
    Closed,
}

/// What a room's loop receives.
enum Event {
    /// A client enters the room; the room answers on `reply`. Boxed: it is far larger than
    /// the other events, and every slot of the room's channel is the size of the largest.
    Join(Box<Joining>),
    /// A client leaves the room.
    Leave { id: ClientId },
    /// A client says something; the room stamps it and broadcasts it.
    Forward { id: ClientId, text: String },
}

/// A join on its way to the room.
struct Joining {
    id: ClientId,
    request: JoinRequest,
    reply: Sender<Result<(), JoinError>>,
}

/// Starts rooms on demand and hands out memberships.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

/// A running room as the registry sees it.
struct RoomEntry {
    events: Sender<Event>,
    /// People in the room (names counted once), published by the room for `/rooms`.
    people: Arc<AtomicUsize>,
}

struct Shared {
    rooms: Mutex<HashMap<String, RoomEntry>>,
    /// Histories of ended rooms, in the order they ended. Kept even with a store: the disk may
    /// still be a flush behind when someone comes back a moment later.
    dormant: std::sync::Mutex<VecDeque<(String, Ring)>>,
    next_client: AtomicU64,
    history: usize,
    store: Option<Arc<Store>>,
    stats: Arc<Stats>,
    tracer: Arc<Tracer>,
    executor: Arc<Executor<'static>>,
    keepalive: Keepalive,
    shutdown: shutdown::Signal,
}

/// One client's place in one room. Dropping it leaves the room (best effort; call
/// [`Member::leave`] to be sure the room hears it).
pub struct Member {
    id: ClientId,
    room: Sender<Event>,
    left: bool,
}

impl Registry {
    /// A registry whose rooms run on `executor`, keep `history` messages, save them to
    /// `store` if there is one, keep members alive as `keepalive` says, and let everyone go
    /// when `shutdown` fires.
    pub fn new(
        executor: Arc<Executor<'static>>,
        stats: Arc<Stats>,
        tracer: Arc<Tracer>,
        history: usize,
        store: Option<Arc<Store>>,
        keepalive: Keepalive,
        shutdown: shutdown::Signal,
    ) -> Self {
        Registry {
            shared: Arc::new(Shared {
                rooms: Mutex::new(HashMap::new()),
                dormant: std::sync::Mutex::new(VecDeque::new()),
                next_client: AtomicU64::new(1),
                history,
                store,
                stats,
                tracer,
                executor,
                keepalive,
                shutdown,
            }),
        }
    }

    /// Joins a room (starting it if needed). The room first sends a `welcome` and the history
    /// asked for, then everything said from then on.
    pub async fn join(&self, request: JoinRequest) -> Result<Member, JoinError> {
        let id = self.shared.next_client.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply) = async_channel::bounded(1);
        let mut rooms = self.shared.rooms.lock().await;
        let events = match rooms.get(&request.room) {
            Some(entry) => entry.events.clone(),
            None => {
                let (events, inbox) = async_channel::bounded(ROOM_EVENT_QUEUE);
                let people = Arc::new(AtomicUsize::new(0));
                rooms.insert(
                    request.room.clone(),
                    RoomEntry {
                        events: events.clone(),
                        people: people.clone(),
                    },
                );
                self.shared.stats.room_opened();
                let room = Room::new(request.room.clone(), self.shared.clone(), people);
                self.shared.executor.spawn(room.run(inbox)).detach();
                events
            }
        };
        // The room ends only under this lock, so it is alive to receive this join.
        let joining = Joining {
            id,
            request,
            reply: reply_tx,
        };
        let _ = events.send(Event::Join(Box::new(joining))).await;
        drop(rooms);
        match reply.recv().await {
            Ok(Ok(())) => Ok(Member {
                id,
                room: events,
                left: false,
            }),
            Ok(Err(error)) => Err(error),
            // The room stopped without answering: only at shutdown.
            Err(_) => Err(JoinError::NameTaken),
        }
    }

    /// Running rooms and how many people are in each, by name.
    pub async fn list(&self) -> Vec<(String, usize)> {
        let rooms = self.shared.rooms.lock().await;
        let mut list: Vec<(String, usize)> = rooms
            .iter()
            .map(|(name, entry)| (name.clone(), entry.people.load(Ordering::Relaxed)))
            .filter(|(_, people)| *people > 0)
            .collect();
        list.sort();
        list
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
    person: u64,
    outbox: Outbox,
    /// A presence frame was skipped for this member; it is owed the whole list.
    stale: bool,
}

/// Whether a broadcast may be skipped for a member that is falling behind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Chat messages: every member gets every one, or is dropped.
    Every,
    /// Presence (join/leave): skipped for a member whose queue is over half full, keeping the
    /// rest of its queue for messages. A burst of joins (a whole floor reconnecting after a
    /// restart, each join announced to everyone) would otherwise drop clients that are merely
    /// busy. A member that missed one is sent the whole list once its queue has room again.
    Spare,
}

/// The state one room task owns.
struct Room {
    name: String,
    members: HashMap<ClientId, Seat>,
    /// Connections per name: a person with two tabs is one name here, announced once.
    present: BTreeMap<String, usize>,
    /// The newest messages and the last id.
    history: Ring,
    /// Some member's queue was over half full after the last broadcast.
    pressed: bool,
    /// The server is stopping: everyone has been told to go.
    shutting_down: bool,
    /// Where the room publishes its head count for `/rooms`.
    people: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Room {
    fn new(name: String, shared: Arc<Shared>, people: Arc<AtomicUsize>) -> Self {
        let history = Room::recall(&name, &shared);
        Room {
            name,
            members: HashMap::new(),
            present: BTreeMap::new(),
            history,
            pressed: false,
            shutting_down: false,
            people,
            shared,
        }
    }

    /// The room's history from before: kept in memory, or read from the store.
    fn recall(name: &str, shared: &Shared) -> Ring {
        let mut dormant = shared.dormant.lock().expect("dormant lock");
        if let Some(at) = dormant.iter().position(|(room, _)| room == name) {
            return dormant.remove(at).expect("found just now").1;
        }
        drop(dormant);
        let entries: Vec<Entry> = match &shared.store {
            Some(store) => store.load(name).unwrap_or_else(|e| {
                log::error!("room {name}: history not loaded: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        };
        Ring::from_entries(shared.history, entries)
    }

    /// The room's loop: the only code that touches its members.
    async fn run(mut self, inbox: Receiver<Event>) {
        log::debug!(
            "room {}: started at id {}",
            self.name,
            self.history.last_id()
        );
        let mut tick = Timer::interval(self.shared.keepalive.ping_interval);
        let shutdown = self.shared.shutdown.clone();
        // Made once: a fresh wait per event would register (and allocate) a listener each time.
        let mut stopping = std::pin::pin!(shutdown.wait());
        loop {
            let listen_for_shutdown = !self.shutting_down;
            let wake = or(
                async { inbox.recv().await.map_or(Wake::Closed, Wake::Event) },
                or(
                    async {
                        tick.next().await;
                        Wake::Tick
                    },
                    async {
                        if listen_for_shutdown {
                            stopping.as_mut().await;
                            Wake::Shutdown
                        } else {
                            std::future::pending().await
                        }
                    },
                ),
            )
            .await;
            match wake {
                Wake::Event(Event::Join(joining)) => {
                    let Joining { id, request, reply } = *joining;
                    let _ = reply.try_send(self.join(id, request));
                    if self.shutting_down {
                        self.dismiss_everyone(); // Joined as the server stops.
                    }
                }
                Wake::Event(Event::Leave { id }) => self.leave(id),
                Wake::Event(Event::Forward { id, text }) => self.forward(id, text),
                Wake::Tick => self.keep_alive(),
                Wake::Shutdown => self.dismiss_everyone(),
                Wake::Closed => break,
            }
            if self.members.is_empty() && self.try_end(&inbox).await {
                break;
            }
            if self.pressed {
                // Queues are filling: let the writers run before the next event. Without this a
                // burst (500 browsers reconnecting, each join announced to all) is handled in one
                // go and fills queues of clients that are not slow at all, only not yet scheduled.
                smol::future::yield_now().await;
            }
        }
        log::debug!("room {}: ended", self.name);
    }

    /// Pings every member, and lets go of those not heard from within the keepalive limit.
    fn keep_alive(&mut self) {
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
    fn dismiss_everyone(&mut self) {
        self.shutting_down = true;
        for seat in self.members.values() {
            seat.outbox.frames.dismiss(Dismissal::ShuttingDown);
        }
        self.members.clear();
        self.present.clear();
        self.people.store(0, Ordering::Relaxed);
    }

    /// Removes the room from the registry unless a join is waiting; leaves the history behind.
    async fn try_end(&mut self, inbox: &Receiver<Event>) -> bool {
        let mut rooms = self.shared.rooms.lock().await;
        if !inbox.is_empty() {
            return false;
        }
        rooms.remove(&self.name);
        self.shared.stats.room_closed();
        if self.history.last_id() > 0 {
            // Still under the registry lock: a room started for this name after us finds it.
            let history = std::mem::replace(&mut self.history, Ring::new(0));
            let mut dormant = self.shared.dormant.lock().expect("dormant lock");
            dormant.push_back((self.name.clone(), history));
            if dormant.len() > DORMANT_ROOMS {
                dormant.pop_front();
            }
        }
        true
    }

    /// Everyone's names, sorted, each once.
    fn names(&self) -> Vec<String> {
        self.present.keys().cloned().collect()
    }

    fn join(&mut self, id: ClientId, request: JoinRequest) -> Result<(), JoinError> {
        let JoinRequest {
            name,
            person,
            since,
            outbox,
            ..
        } = request;
        let folded = name.to_lowercase();
        let taken = self
            .members
            .values()
            .any(|seat| seat.person != person && seat.name.to_lowercase() == folded);
        if taken {
            log::info!("room {}: refused {name}: the name is taken", self.name);
            return Err(JoinError::NameTaken);
        }
        self.shared.tracer.trace("New client joined");
        log::debug!("room {}: {name} joined", self.name);
        let tabs = self.present.entry(name.clone()).or_insert(0);
        *tabs += 1;
        let first_tab = *tabs == 1;
        self.members.insert(
            id,
            Seat {
                name,
                person,
                outbox,
                stale: false,
            },
        );
        let members = self.names();
        self.people.store(members.len(), Ordering::Relaxed);

        let seat = &self.members[&id];
        let replay = self.history.since(since);
        let welcome = Outbound::Welcome {
            room: &self.name,
            name: &seat.name,
            last_id: self.history.last_id(),
            complete: replay.complete,
            members: &members,
        }
        .encode();
        // The queue has room for the whole history on top of its live share (see client.rs).
        for frame in std::iter::once(&welcome).chain(replay.entries.iter().map(|e| &e.frame)) {
            seat.outbox
                .frames
                .push_within(frame.clone(), seat.outbox.limit);
        }

        let when = timestamp(SystemTime::now());
        let frame = Outbound::Join {
            room: &self.name,
            name: &seat.name,
            when: &when,
            people: members.len(),
        }
        .encode();
        if first_tab {
            self.broadcast(frame, Delivery::Spare);
        } else {
            // Another tab of someone already here: only this tab hears of it.
            seat.outbox.frames.push_within(frame, seat.outbox.limit);
        }
        Ok(())
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
        let id = self.history.last_id() + 1;
        let when = timestamp(SystemTime::now());
        let frame = Outbound::Message {
            id,
            room: &self.name,
            name: &seat.name,
            text: &text,
            when: &when,
        }
        .encode();
        if let Some(store) = &self.shared.store {
            store.append(&self.name, &frame);
        }
        self.history.push(Entry {
            id,
            frame: frame.clone(),
        });
        self.shared.stats.message();
        self.broadcast(frame, Delivery::Every);
    }

    /// Offers `frame` to every member without waiting; drops those that cannot take it.
    fn broadcast(&mut self, frame: Encoded, delivery: Delivery) {
        let departed = self.offer(&frame, delivery);
        self.announce_departures(departed);
    }

    /// Tells the room that these connections left (announcing a person when their last tab
    /// goes), repeating while announcing drops someone else.
    fn announce_departures(&mut self, mut departed: Vec<String>) {
        while let Some(name) = departed.pop() {
            self.shared.tracer.trace("Client left");
            log::debug!("room {}: {name} left", self.name);
            let Some(tabs) = self.present.get_mut(&name) else {
                continue;
            };
            *tabs -= 1;
            if *tabs > 0 {
                continue;
            }
            self.present.remove(&name);
            self.people.store(self.present.len(), Ordering::Relaxed);
            let when = timestamp(SystemTime::now());
            let frame = Outbound::Leave {
                room: &self.name,
                name: &name,
                when: &when,
                people: self.present.len(),
            }
            .encode();
            departed.extend(self.offer(&frame, Delivery::Spare));
        }
    }

    /// Pushes a clone of `frame` to every member, never waiting; returns the names of those
    /// removed.
    /// Members owed a presence list get it once their queue is below half again.
    fn offer(&mut self, frame: &Encoded, delivery: Delivery) -> Vec<String> {
        let mut departed = Vec::new();
        let mut pressed = false;
        let repair = self.members.values().any(|seat| seat.stale).then(|| {
            let members = self.names();
            Outbound::Presence {
                room: &self.name,
                members: &members,
            }
            .encode()
        });
        let (room, stats) = (&self.name, &self.shared.stats);
        self.members.retain(|_, seat| {
            let (queue, limit) = (&seat.outbox.frames, seat.outbox.limit);
            let queued = queue.len();
            let over_half = queued * 2 >= limit;
            pressed |= over_half;
            if delivery == Delivery::Spare && over_half {
                seat.stale = true;
                return true;
            }
            match queue.push_within(frame.clone(), limit) {
                Pushed::Queued(_) => {
                    if let (true, false, Some(list)) = (seat.stale, over_half, &repair) {
                        let pushed = queue.push_within(list.clone(), limit);
                        seat.stale = !matches!(pushed, Pushed::Queued(_));
                    }
                    true
                }
                Pushed::Full => {
                    log::warn!(
                        "room {room}: dropping {}: {queued} messages queued, too slow",
                        seat.name
                    );
                    seat.outbox.frames.dismiss(Dismissal::TooSlow);
                    stats.dropped();
                    departed.push(seat.name.clone());
                    false
                }
                Pushed::Closed => {
                    // The connection is gone without a Leave reaching us.
                    departed.push(seat.name.clone());
                    false
                }
            }
        });
        self.pressed = pressed;
        departed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Next, Queue};

    /// Far longer than any test: these tests do not exercise the keepalive.
    const KEEPALIVE: Keepalive = Keepalive {
        ping_interval: Duration::from_secs(3600),
        pong_wait: Duration::from_secs(7200),
    };

    struct TestClient {
        member: Member,
        frames: Frames,
    }

    /// A member's queue read one frame at a time, as the tests want it.
    #[derive(Clone, Default)]
    struct Frames {
        queue: Arc<Queue<Dismissal>>,
        taken: Arc<std::sync::Mutex<VecDeque<Encoded>>>,
    }

    impl Frames {
        /// The next frame; `Err` once the room closed the queue and it is empty.
        async fn recv(&self) -> Result<Encoded, ()> {
            loop {
                if let Some(frame) = self.taken.lock().unwrap().pop_front() {
                    return Ok(frame);
                }
                match self.queue.next().await {
                    Next::Frames(batch) => self.taken.lock().unwrap().extend(batch),
                    Next::Stop(_) | Next::Ping => {}
                    Next::Closed => return Err(()),
                }
            }
        }

        fn try_recv(&self) -> Result<Encoded, ()> {
            let mut taken = self.taken.lock().unwrap();
            if taken.is_empty() {
                taken.extend(self.queue.take_now());
            }
            taken.pop_front().ok_or(())
        }

        fn len(&self) -> usize {
            self.taken.lock().unwrap().len() + self.queue.len()
        }

        fn is_closed(&self) -> bool {
            self.queue.is_closed()
        }
    }

    fn registry(executor: &Arc<Executor<'static>>) -> (Registry, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let registry = registry_with(executor, &stats, None, KEEPALIVE, never_shutdown());
        (registry, stats)
    }

    /// A registry keeping 10 messages per room, without tracing; the rest as given.
    fn registry_with(
        executor: &Arc<Executor<'static>>,
        stats: &Arc<Stats>,
        store: Option<Arc<Store>>,
        keepalive: Keepalive,
        shutdown: shutdown::Signal,
    ) -> Registry {
        let tracer = Arc::new(Tracer::off());
        Registry::new(
            executor.clone(),
            stats.clone(),
            tracer,
            10,
            store,
            keepalive,
            shutdown,
        )
    }

    /// Fails a test step that has not finished within ten seconds.
    async fn within<T>(step: impl std::future::Future<Output = T>) -> T {
        smol::future::or(step, async {
            Timer::after(Duration::from_secs(10)).await;
            panic!("a test step took over ten seconds")
        })
        .await
    }

    /// A shutdown signal that never fires (dropping its trigger would fire it).
    fn never_shutdown() -> shutdown::Signal {
        let (trigger, signal) = shutdown::channel();
        std::mem::forget(trigger);
        signal
    }

    /// A new person id per call, unless a test says otherwise.
    fn someone() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1000);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    async fn try_join(
        registry: &Registry,
        room: &str,
        name: &str,
        person: u64,
        since: Option<u64>,
        queue: usize,
    ) -> Result<TestClient, JoinError> {
        let frames = Frames::default();
        let outbox = Outbox {
            frames: frames.queue.clone(),
            limit: queue,
        };
        let request = JoinRequest {
            room: room.to_owned(),
            name: name.to_owned(),
            person,
            since,
            outbox,
        };
        let member = registry.join(request).await?;
        Ok(TestClient { member, frames })
    }

    /// Joins as a new person and reads the welcome.
    async fn join(registry: &Registry, room: &str, name: &str, queue: usize) -> TestClient {
        let client = try_join(registry, room, name, someone(), None, queue)
            .await
            .unwrap();
        assert_eq!(next_json(&client).await["type"], "welcome");
        client
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
            // slow reads nothing after its welcome. Its own join was skipped (the welcome
            // filled half its queue); fast's join and the presence list it was owed fill the
            // queue; m0 finds it full and drops slow.
            for n in 0..10 {
                fast.member.say(format!("m{n}")).await;
            }
            assert_eq!(next_json(&fast).await["type"], "join");
            assert_eq!(next_json(&fast).await["text"], "m0");
            let leave = next_json(&fast).await;
            assert_eq!(
                (leave["type"].as_str(), leave["name"].as_str()),
                (Some("leave"), Some("slow"))
            );
            for n in 1..10 {
                assert_eq!(next_json(&fast).await["text"], format!("m{n}"));
            }
            let kept: Vec<_> = std::iter::from_fn(|| slow.frames.try_recv().ok())
                .map(|f| {
                    serde_json::from_slice::<serde_json::Value>(f.bytes()).unwrap()["type"].clone()
                })
                .collect();
            assert_eq!(kept, ["join", "presence"]);
            assert_eq!(slow.frames.queue.stop_word(), Some(Dismissal::TooSlow));
            assert_eq!(fast.frames.queue.stop_word(), None);
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
    fn newcomers_get_the_history_and_reconnects_exactly_what_they_missed() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex);
            let ann = join(&registry, "lobby", "ann", 64).await;
            for n in 1..=3 {
                ann.member.say(format!("m{n}")).await;
            }
            let bob = try_join(&registry, "lobby", "bob", someone(), None, 64)
                .await
                .unwrap();
            let welcome = next_json(&bob).await;
            assert_eq!(welcome["type"], "welcome");
            assert_eq!(
                (welcome["last_id"].as_u64(), welcome["complete"].as_bool()),
                (Some(3), Some(true))
            );
            assert_eq!(welcome["members"], serde_json::json!(["ann", "bob"]));
            for n in 1..=3 {
                assert_eq!(next_json(&bob).await["id"], n);
            }
            let join = next_json(&bob).await;
            assert_eq!(
                (join["type"].as_str(), join["people"].as_u64()),
                (Some("join"), Some(2))
            );

            let carl = try_join(&registry, "lobby", "carl", someone(), Some(2), 64)
                .await
                .unwrap();
            assert_eq!(next_json(&carl).await["complete"], true);
            assert_eq!(next_json(&carl).await["text"], "m3");
            assert_eq!(next_json(&carl).await["type"], "join");
        });
    }

    #[test]
    fn a_reconnect_beyond_the_history_is_told_so() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex); // keeps 10
            let ann = join(&registry, "lobby", "ann", 64).await;
            for n in 1..=15 {
                ann.member.say(format!("m{n}")).await;
            }
            let late = try_join(&registry, "lobby", "late", someone(), Some(2), 64)
                .await
                .unwrap();
            let welcome = next_json(&late).await;
            assert_eq!(
                (welcome["last_id"].as_u64(), welcome["complete"].as_bool()),
                (Some(15), Some(false))
            );
            assert_eq!(
                next_json(&late).await["id"],
                6,
                "the oldest kept message comes first"
            );
        });
    }

    #[test]
    fn a_name_is_one_persons_in_a_room() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex);
            let ann = try_join(&registry, "lobby", "Ann", 1, None, 8)
                .await
                .unwrap();
            let other = try_join(&registry, "lobby", "ANN", 2, None, 8).await;
            assert_eq!(other.err(), Some(JoinError::NameTaken));
            // The same person in a second tab may.
            let second_tab = try_join(&registry, "lobby", "Ann", 1, None, 8).await;
            assert!(second_tab.is_ok());
            // Elsewhere the name is free.
            assert!(try_join(&registry, "kitchen", "Ann", 2, None, 8)
                .await
                .is_ok());
            drop(ann);
        });
    }

    /// The last member leaves; returns once the room's task has ended.
    async fn leave_last(client: TestClient, stats: &Stats) {
        let frames = client.frames.clone();
        client.member.leave().await;
        while frames.recv().await.is_ok() {}
        // The room task is gone once its count is: it ends right after dropping the queue.
        while stats.snapshot().rooms != 0 {
            smol::future::yield_now().await;
        }
    }

    #[test]
    fn an_emptied_room_keeps_its_history_and_ids() {
        with_executor(|ex| async move {
            let (registry, stats) = registry(&ex);
            let ann = join(&registry, "lobby", "ann", 8).await;
            ann.member.say("before".into()).await;
            leave_last(ann, &stats).await;
            let bob = try_join(&registry, "lobby", "bob", someone(), None, 8)
                .await
                .unwrap();
            assert_eq!(next_json(&bob).await["last_id"], 1);
            assert_eq!(next_json(&bob).await["text"], "before");
            next_json(&bob).await; // own join
            bob.member.say("after".into()).await;
            assert_eq!(next_json(&bob).await["id"], 2);
        });
    }

    #[test]
    fn a_room_that_empties_and_refills_within_a_flush_keeps_its_ids() {
        with_executor(|ex| async move {
            let dir = std::env::temp_dir().join(format!("smolchat-room-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let stats = Arc::new(Stats::default());
            let store = Arc::new(Store::open(&dir, 10, stats.clone()).unwrap());
            let registry = registry_with(&ex, &stats, Some(store), KEEPALIVE, never_shutdown());
            let ann = join(&registry, "lobby", "ann", 8).await;
            ann.member.say("unflushed".into()).await;
            leave_last(ann, &stats).await;
            // Back well within the one-second flush: the disk may not have it yet.
            let bob = try_join(&registry, "lobby", "bob", someone(), None, 8)
                .await
                .unwrap();
            assert_eq!(next_json(&bob).await["last_id"], 1);
            assert_eq!(next_json(&bob).await["text"], "unflushed");
        });
    }

    #[test]
    fn a_person_with_two_tabs_is_announced_once() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex);
            let bob = join(&registry, "lobby", "bob", 64).await;
            assert_eq!(next_json(&bob).await["type"], "join"); // own
            let tab1 = try_join(&registry, "lobby", "ann", 7, None, 64)
                .await
                .unwrap();
            let tab2 = try_join(&registry, "lobby", "ann", 7, None, 64)
                .await
                .unwrap();
            let joined = next_json(&bob).await;
            assert_eq!(
                (joined["name"].as_str(), joined["people"].as_u64()),
                (Some("ann"), Some(2))
            );
            // The second tab hears of itself, but nobody else hears of it.
            assert_eq!(
                next_json(&tab2).await["members"],
                serde_json::json!(["ann", "bob"])
            );
            assert_eq!(next_json(&tab2).await["type"], "join");
            tab1.member.leave().await;
            bob.member.say("ann still here?".into()).await;
            assert_eq!(
                next_json(&bob).await["type"],
                "message",
                "a tab closing announced a leave"
            );
            tab2.member.leave().await;
            let left = next_json(&bob).await;
            assert_eq!(
                (left["type"].as_str(), left["people"].as_u64()),
                (Some("leave"), Some(1))
            );
        });
    }

    #[test]
    fn a_member_that_missed_presence_gets_the_whole_list_later() {
        with_executor(|ex| async move {
            let (registry, _) = registry(&ex);
            // A queue of 4: welcome and own join fill half, so the next joins are skipped.
            let slow = try_join(&registry, "lobby", "slow", someone(), None, 4)
                .await
                .unwrap();
            let others: Vec<TestClient> = join_all(&registry, &["a", "b", "c"]).await;
            let kinds = |frames: &Frames| -> Vec<String> {
                std::iter::from_fn(|| frames.try_recv().ok())
                    .map(|f| {
                        serde_json::from_slice::<serde_json::Value>(f.bytes()).unwrap()["type"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    })
                    .collect()
            };
            assert_eq!(
                kinds(&slow.frames),
                ["welcome", "join"],
                "joins were not skipped"
            );
            // Now it has room again: the next broadcast brings the list along.
            others[0].member.say("hello".into()).await;
            let frame = slow.frames.recv().await.unwrap();
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(frame.bytes()).unwrap()["type"],
                "message"
            );
            let list = slow.frames.recv().await.unwrap();
            let list: serde_json::Value = serde_json::from_slice(list.bytes()).unwrap();
            assert_eq!(
                (list["type"].as_str(), list["members"].clone()),
                (Some("presence"), serde_json::json!(["a", "b", "c", "slow"]))
            );
        });
    }

    async fn join_all(registry: &Registry, names: &[&str]) -> Vec<TestClient> {
        let mut clients = Vec::new();
        for name in names {
            clients.push(join(registry, "lobby", name, 64).await);
        }
        clients
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

    #[test]
    fn the_room_pings_members_it_hears_from_and_lets_silent_ones_go() {
        with_executor(|ex| async move {
            let stats = Arc::new(Stats::default());
            // The talker answers every 25 ms; only a stall of a whole second would make it
            // look silent.
            let keepalive = Keepalive {
                ping_interval: Duration::from_millis(25),
                pong_wait: Duration::from_secs(1),
            };
            let registry = registry_with(&ex, &stats, None, keepalive, never_shutdown());
            let quiet = join(&registry, "lobby", "quiet", 64).await;
            let talker = join(&registry, "lobby", "talker", 64).await;
            // The talker answers every ping (as a browser does with a pong); the quiet one
            // never says anything.
            let mut pings = 0;
            let left = within(async {
                loop {
                    match talker.frames.queue.next().await {
                        Next::Ping => {
                            pings += 1;
                            talker.frames.queue.heard();
                        }
                        Next::Frames(batch) => {
                            let leave = batch.into_iter().find_map(|frame| {
                                let json: serde_json::Value =
                                    serde_json::from_slice(frame.bytes()).unwrap();
                                (json["type"] == "leave").then_some(json)
                            });
                            if let Some(leave) = leave {
                                break leave;
                            }
                        }
                        other => panic!("talker was let go: {}", matches!(other, Next::Closed)),
                    }
                }
            })
            .await;
            assert_eq!(left["name"], "quiet");
            assert!(pings >= 2, "pinged {pings} times before the quiet one went");
            assert_eq!(quiet.frames.queue.stop_word(), Some(Dismissal::Silent));
            assert!(quiet.frames.queue.quiet_for() >= keepalive.pong_wait);
            assert_eq!(talker.frames.queue.stop_word(), None);
        });
    }

    #[test]
    fn at_shutdown_every_member_is_told_and_the_room_ends() {
        with_executor(|ex| async move {
            let stats = Arc::new(Stats::default());
            let (trigger, signal) = shutdown::channel();
            let registry = registry_with(&ex, &stats, None, KEEPALIVE, signal);
            let clients = join_all(&registry, &["ann", "bob", "cy"]).await;
            trigger.fire();
            for client in &clients {
                // Nobody is told who left: the stop word is all that comes before the close.
                let words = within(async {
                    let mut words = Vec::new();
                    loop {
                        match client.frames.queue.next().await {
                            Next::Stop(word) => words.push(word),
                            Next::Frames(batch) => {
                                for frame in batch {
                                    let json: serde_json::Value =
                                        serde_json::from_slice(frame.bytes()).unwrap();
                                    assert_ne!(json["type"], "leave", "{json}");
                                }
                            }
                            Next::Ping => {}
                            Next::Closed => return words,
                        }
                    }
                })
                .await;
                assert_eq!(words, [Dismissal::ShuttingDown]);
            }
            // The room ends with nobody left: its count goes, without anyone leaving first.
            within(async {
                while stats.snapshot().rooms != 0 {
                    smol::future::yield_now().await;
                }
            })
            .await;
            for client in clients {
                client.member.leave().await;
            }
        });
    }
}
