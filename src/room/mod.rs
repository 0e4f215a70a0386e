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
//! The [`Registry`] (`registry.rs`) maps names to running rooms. It starts a room's task on the first join and
//! the task removes itself when its last member leaves. Joins are sent while the registry lock is
//! held, so a room deciding to end (under the same lock, with an empty channel) never loses one.
//! A room that ends leaves its history behind: in the store on disk, or (memory only) with the
//! registry, so whoever comes back sees the conversation and ids go on increasing.
//!
//! Files: this one holds the loop and what it does with join / leave / forward; `registry`
//! starts and ends rooms; `keepalive` pings and lets go; `presence` tells members who is here;
//! `limits` is the sender's token bucket, kept by each client's reader; `moderate` carries
//! out what hosts (and authors deleting their own words) ask for; `notices` tells a person, in
//! their other rooms, of a direct message or a mention; `share` announces shared files;
//! `elsewhere` keeps who is in a shared room on other boxes; `ruled` carries out hosts'
//! rulings given on other boxes.

mod elsewhere;
mod keepalive;
pub mod limits;
mod moderate;
mod notices;
mod presence;
mod registry;
#[cfg(feature = "redis")]
mod ruled;
mod share;
#[cfg(test)]
mod tests;

pub use keepalive::Keepalive;
pub use presence::{MembersPage, PAGE_LIMIT};
pub use registry::{Member, Registry, Settings};
pub use share::{ShareError, SharedFile};

#[cfg(feature = "redis")]
use crate::bus::Offer;
use crate::bus::{Heard, Link, News};
use crate::history::{Entry, Origin, Ring};
use crate::message::{mentions, timestamp, Encoded, Outbound, ANONYMOUS};
use crate::meter::SLOT_BYTES;
use crate::queue::{Dismissal, FrameSink, Pushed};
use async_channel::{Receiver, Sender};
use presence::Presence;
use registry::Shared;
use smol::future::or;
use smol::stream::StreamExt;
use smol::Timer;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Events a room's channel holds before senders wait. Forwards beyond it make the sending
/// client's reader wait, which in turn stops reading its socket: backpressure, not memory.
/// The channel allocates every slot up front, so this is also a per-room memory cost.
const ROOM_EVENT_QUEUE: usize = 64;
/// How long a shared room waits for its history from the bus before it lets people in
/// without it (Redis is unreachable; the history arrives when it is back).
const OPEN_WAIT: Duration = Duration::from_secs(3);
/// What a member is told when their message cannot reach Redis.
const UNAVAILABLE: &str =
    "Not sent: the chat cannot reach its shared server right now. Try again in a moment.";
/// What a member is told when their network has spent its budget across the boxes.
const TOO_FAST: &str =
    "Not sent: too many messages from your network across the chat's boxes. Wait a moment.";
/// When memory runs short, members this many frames behind, or half as far as the furthest
/// behind if that is more, are let go; members that keep up are never this far behind.
const BACKLOG_FLOOR: usize = 16;

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
    /// Where the client connects from, if known (bans and mutes hold by address too).
    pub address: Option<IpAddr>,
    /// Signed in as a host: may act on the room, and writes when it is locked.
    pub host: bool,
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
    /// The bus brings history or a message (shared rooms only; read from the link's own
    /// channel, beside the events: the bus knows nothing of the room's types).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    News(News),
    /// Time to ping everyone.
    Tick,
    /// Time to sum up who came and went (large rooms).
    Summary,
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
    /// A client says something (with its own key for it, if it gave one); the room stamps it
    /// and broadcasts it.
    /// Boxed strs, not Strings: every slot of the channel is the size of the largest event.
    Forward {
        id: ClientId,
        text: Box<str>,
        key: Option<Box<str>>,
    },
    /// A client asks the room to do something (`moderate.rs` checks whether it may).
    Act {
        id: ClientId,
        action: Box<crate::message::Action>,
    },
    /// Who is seated under `name` (their person id), for opening a direct room with them.
    Whois {
        name: String,
        reply: Sender<Option<u64>>,
    },
    /// A host banned someone in another room: let their connections here go too.
    Banish(Arc<moderate::Banished>),
    /// Someone asks for a page of the member list (names after `after`, at most `limit`).
    Members {
        after: Option<String>,
        limit: usize,
        reply: Sender<MembersPage>,
    },
    /// A person shares a stored file (or, without one, asks whether they may); the room
    /// checks they have a seat, stamps and broadcasts it (`share.rs`). Boxed like a join.
    Share(Box<share::Sharing>),
}

/// A join on its way to the room.
struct Joining {
    id: ClientId,
    request: JoinRequest,
    reply: Sender<Result<(), JoinError>>,
}

/// A member as the room sees it.
struct Seat {
    name: String,
    /// Who this is across tabs (see [`JoinRequest::person`]).
    person: u64,
    outbox: Outbox,
    /// A presence frame was skipped for this member; it is owed the whole list.
    stale: bool,
    /// See [`JoinRequest::address`].
    address: Option<IpAddr>,
    /// See [`JoinRequest::host`].
    host: bool,
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
    /// Who is here, and what the others have yet to hear of it.
    presence: Presence,
    /// Nameless clients are `anonymous-1`, `anonymous-2`, ...: the next number to try.
    next_anonymous: u64,
    /// The newest messages and the last id.
    history: Ring,
    /// Some member's queue was over half full after the last broadcast.
    pressed: bool,
    /// The server is stopping: everyone has been told to go.
    shutting_down: bool,
    /// Where the room publishes its head count for `/rooms`.
    people: Arc<AtomicUsize>,
    /// Only hosts may write (kept in the moderation book, read at start).
    locked: bool,
    /// The standing announcement, sent to each member after the history.
    announcement: Option<Encoded>,
    /// The room's place on the bus when rooms are shared across boxes (`--redis`): messages
    /// are posted there and delivered when they come back with their ids. `None`: the room
    /// numbers and keeps its messages itself.
    link: Option<Link>,
    /// Shared rooms: people on other boxes, by box and name (their person ids).
    elsewhere: HashMap<Arc<str>, HashMap<String, u64>>,
    /// Shared rooms: this box's connections per name (lowercase), and the name as shown; a
    /// name's first claims it in Redis, its last releases it.
    here: HashMap<String, (String, usize)>,
    /// Shared rooms: newcomers waiting for Redis to grant their name.
    pending: HashMap<ClientId, Joining>,
    /// Shared rooms: this box reaches Redis (members were told when it changed).
    reachable: bool,
    /// Shared rooms: files shared here whose frames have yet to come back from Redis with
    /// their ids, by file id, with where the uploader waits for the frame.
    sharing: HashMap<String, share::Reply>,
    shared: Arc<Shared>,
}

impl Room {
    fn new(name: String, shared: Arc<Shared>, people: Arc<AtomicUsize>) -> Self {
        let link = shared.bus.open(&name);
        // A shared room's history comes from the bus, as its first news.
        let history = match link {
            Some(_) => Ring::new(shared.history),
            None => Room::recall(&name, &shared),
        };
        let locked = shared.moderation.locked(&name);
        let announcement = (shared.moderation.announcement(&name))
            .map(|a| moderate::standing_frame(&name, &a, &shared.meter));
        Room {
            name,
            locked,
            announcement,
            members: HashMap::new(),
            presence: Presence::default(),
            next_anonymous: 1,
            history,
            pressed: false,
            shutting_down: false,
            people,
            link,
            elsewhere: HashMap::new(),
            here: HashMap::new(),
            pending: HashMap::new(),
            reachable: true,
            sharing: HashMap::new(),
            shared,
        }
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
        // Armed only while a large room has joins or leaves to sum up.
        let mut summary = Timer::never();
        let mut summary_armed = false;
        let news = self.link.as_ref().map(|link| link.news.clone());
        if let Some(news) = &news {
            self.await_history(news).await;
            self.reachable = self.link.as_ref().is_some_and(Link::connected);
        }
        loop {
            if !summary_armed && self.presence.summary_due() {
                summary.set_after(presence::SUMMARY_INTERVAL);
                summary_armed = true;
            }
            let listen_for_shutdown = !self.shutting_down;
            let wake = or(
                async { inbox.recv().await.map_or(Wake::Closed, Wake::Event) },
                or(
                    async {
                        match news.as_ref().map(|news| news.recv()) {
                            // The link holds a sender, so this channel outlives the room.
                            Some(next) => next.await.map_or(Wake::Closed, Wake::News),
                            None => std::future::pending().await,
                        }
                    },
                    or(
                        async {
                            tick.next().await;
                            Wake::Tick
                        },
                        or(
                            async {
                                if summary_armed {
                                    (&mut summary).await;
                                    Wake::Summary
                                } else {
                                    std::future::pending().await
                                }
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
                    ),
                ),
            )
            .await;
            match wake {
                #[cfg(feature = "redis")]
                Wake::Event(Event::Join(joining)) if self.link.is_some() => {
                    self.join_shared(*joining);
                    if self.shutting_down {
                        self.dismiss_everyone(); // Joined as the server stops.
                    }
                }
                Wake::Event(Event::Join(joining)) => {
                    let Joining { id, request, reply } = *joining;
                    let _ = reply.try_send(self.join(id, request));
                    if self.shutting_down {
                        self.dismiss_everyone(); // Joined as the server stops.
                    }
                }
                Wake::Event(Event::Leave { id }) => self.leave(id),
                Wake::Event(Event::Forward { id, text, key }) => self.forward(id, text, key),
                Wake::Event(Event::Act { id, action }) => self.act(id, *action).await,
                Wake::Event(Event::Banish(banished)) => self.banish(&banished),
                Wake::Event(Event::Whois { name, reply }) => {
                    let seat = self.members.values().find(|seat| seat.name == name);
                    let _ = reply.try_send(seat.map(|seat| seat.person));
                }
                Wake::Event(Event::Members {
                    after,
                    limit,
                    reply,
                }) => {
                    let _ = reply.try_send(self.presence.page(after.as_deref(), limit));
                }
                Wake::Event(Event::Share(sharing)) => self.share(*sharing),
                #[cfg(feature = "redis")]
                Wake::News(news) => self.hear(news),
                // No bus brings news without Redis: the routers' builds leave all of it out.
                #[cfg(not(feature = "redis"))]
                Wake::News(_) => {}
                Wake::Tick => self.keep_alive(),
                Wake::Summary => {
                    summary_armed = false;
                    self.summarize();
                }
                Wake::Shutdown => self.dismiss_everyone(),
                Wake::Closed => break,
            }
            if self.members.is_empty() && self.pending.is_empty() && self.try_end(&inbox).await {
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

    fn join(&mut self, id: ClientId, request: JoinRequest) -> Result<(), JoinError> {
        let JoinRequest {
            name,
            person,
            since,
            address,
            host,
            outbox,
            ..
        } = request;
        let name = if name.eq_ignore_ascii_case(ANONYMOUS) {
            self.anonymous_name()
        } else {
            name
        };
        if self.presence.taken(&name, person) {
            log::info!("room {}: refused {name}: the name is taken", self.name);
            return Err(JoinError::NameTaken);
        }
        self.shared.tracer.trace("New client joined");
        log::debug!("room {}: {name} joined", self.name);
        self.members.insert(
            id,
            Seat {
                name: name.clone(),
                person,
                outbox,
                stale: false,
                address,
                host,
            },
        );
        let first_tab = self.seat_presence(&name, person);
        let seat = &self.members[&id];
        let members = self.welcome_names();
        let replay = self.history.since(since);
        let welcome = Outbound::Welcome {
            room: &self.name,
            name: &seat.name,
            last_id: self.history.last_id(),
            complete: replay.complete,
            members: &members,
            people: self.presence.people(),
            locked: self.locked,
            host: seat.host,
            delete_window: self.shared.moderation.delete_window.as_secs(),
        }
        .encode_metered(&self.shared.meter);
        // The queue has room for the whole history on top of its live share (see client.rs).
        let mut queued = 0;
        let frames = std::iter::once(&welcome)
            .chain(replay.entries.iter().map(|e| &e.frame))
            .chain(self.announcement.as_ref());
        for frame in frames {
            let pushed = seat
                .outbox
                .frames
                .push_within(frame.clone(), seat.outbox.limit);
            queued += u64::from(matches!(pushed, Pushed::Queued(_)));
        }
        self.shared.meter.charge(queued * SLOT_BYTES);
        self.announce_arrival(id, first_tab);
        if self.link.is_some() && !self.reachable {
            // Cut off from the other boxes: said after the newcomer's own join.
            let frame = self.shared_frame();
            if let Some(seat) = self.members.get(&id) {
                if let Pushed::Queued(_) = seat.outbox.frames.push_within(frame, seat.outbox.limit)
                {
                    self.shared.meter.charge(SLOT_BYTES);
                }
            }
        }
        Ok(())
    }

    /// A name for a client that gave none: `anonymous-N`, the first N nobody here holds.
    fn anonymous_name(&mut self) -> String {
        loop {
            let name = format!("{ANONYMOUS}-{}", self.next_anonymous);
            self.next_anonymous += 1;
            if !self.presence.contains(&name) {
                return name;
            }
        }
    }

    fn leave(&mut self, id: ClientId) {
        if let Some(seat) = self.members.remove(&id) {
            self.announce_departures(vec![seat.name]);
        }
    }

    fn forward(&mut self, id: ClientId, text: Box<str>, key: Option<Box<str>>) {
        let from = id;
        let Some(seat) = self.members.get(&id) else {
            return; // Said just before being dropped; the room has moved on.
        };
        if let Err((code, why)) = self.may_write(seat) {
            self.tell_keyed(id, code, &why, key.as_deref());
            return;
        }
        let author = seat.person;
        self.shared
            .tracer
            .trace(format_args!("Message received: {text}"));
        let when = timestamp(SystemTime::now());
        let mentions = mentions(&text, self.presence.names());
        // Shared: only with Redis (the routers' builds leave this out).
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            // Shared: Redis numbers it; it is kept and delivered when it comes back (`hear`).
            let frame = Outbound::Message {
                id: 0,
                room: &self.name,
                name: &seat.name,
                text: &text,
                when: &when,
                mentions: &mentions,
                key: key.as_deref(),
            }
            .encode_unnumbered()
            .expect("a message frame has an id");
            let seen = self.history.last_id();
            let address = seat.address;
            let posted = link.post(Offer {
                client: from,
                person: author,
                seen,
                key: key.clone(),
                address,
                frame,
                file: None,
            });
            if !link.connected() || posted.is_err() {
                self.tell_keyed(from, "unavailable", UNAVAILABLE, key.as_deref());
            }
            return;
        }
        let id = self.history.last_id() + 1;
        let frame = Outbound::Message {
            id,
            room: &self.name,
            name: &seat.name,
            text: &text,
            when: &when,
            mentions: &mentions,
            key: key.as_deref(),
        }
        .encode_metered(&self.shared.meter);
        self.keep(id, &frame, author);
        if let Some(seat) = self.members.get(&from) {
            self.tell_elsewhere(id, &seat.name, &mentions);
        }
        self.broadcast(frame, Delivery::Every);
    }

    /// Keeps a stamped message (`id`, the room's next, said by `author`) in the history and
    /// on disk.
    fn keep(&mut self, id: u64, frame: &Encoded, author: u64) {
        if let Some(store) = &self.shared.store {
            store.append(&self.name, frame);
        }
        self.history.push(Entry {
            id,
            frame: frame.clone(),
            origin: Some(Origin {
                person: author,
                at: Instant::now(),
            }),
        });
        self.shared.stats.message();
    }

    /// The `shared` frame saying whether this box reaches the other boxes now.
    fn shared_frame(&self) -> Encoded {
        Outbound::Shared {
            room: &self.name,
            up: self.reachable,
        }
        .encode_metered(&self.shared.meter)
    }

    /// Waits (at most [`OPEN_WAIT`]) for a shared room's history, before anyone is let in.
    async fn await_history(&mut self, news: &async_channel::Receiver<News>) {
        let first = or(async { news.recv().await.ok() }, async {
            Timer::after(OPEN_WAIT).await;
            None
        })
        .await;
        match first {
            Some(news) => self.hear(news),
            None => log::warn!(
                "room {}: no history from Redis within {} s; letting people in without it",
                self.name,
                OPEN_WAIT.as_secs()
            ),
        }
    }

    /// What the bus brings a shared room: its history, a message in id order, or a post
    /// that did not reach Redis.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn hear(&mut self, news: News) {
        match news {
            News::Opened {
                entries,
                last_id,
                here,
            } => {
                let entries: Vec<Entry> = entries
                    .into_iter()
                    .map(|heard| Entry {
                        id: heard.id,
                        frame: heard.frame,
                        origin: None,
                    })
                    .collect();
                // Members already here came while Redis was away (the room let them in
                // without a history): what was said meanwhile on other boxes reaches them now.
                let owed: Vec<Encoded> = if self.members.is_empty() {
                    Vec::new()
                } else {
                    entries.iter().map(|entry| entry.frame.clone()).collect()
                };
                self.history = Ring::from_entries(self.shared.history, entries, last_id);
                if last_id > 0 {
                    self.shared.notices.kept(&self.name, last_id);
                }
                for frame in owed {
                    self.broadcast(frame, Delivery::Every);
                }
                self.all_elsewhere(here);
            }
            News::Said(heard) => self.deliver(heard),
            News::Refused { client, key } => {
                if !self.unshared(key.as_deref(), TOO_FAST) {
                    self.tell_keyed(client, "too_fast", TOO_FAST, key.as_deref());
                }
            }
            News::Lost { client, key } => {
                if !self.unshared(key.as_deref(), UNAVAILABLE) {
                    self.tell_keyed(client, "unavailable", UNAVAILABLE, key.as_deref());
                }
            }
            News::Reachable(up) if up != self.reachable => {
                self.reachable = up;
                let frame = self.shared_frame();
                self.broadcast(frame, Delivery::Every);
            }
            News::Reachable(_) => {}
            News::Here(here) => self.all_elsewhere(here),
            News::Came(somebody) => self.came_elsewhere(somebody),
            News::Went { on, name } => self.went_elsewhere(&on, name),
            News::Gone { on } => self.gone_elsewhere(&on),
            News::Claimed { client, granted } => self.claimed(client, granted),
            #[cfg(feature = "redis")]
            News::Ruled(ruling) => self.ruled(&ruling),
            // Only the listener of a Redis bus rules: the routers' builds leave the code out.
            #[cfg(not(feature = "redis"))]
            News::Ruled(_) => {}
            News::Unruled { client } => self.tell(client, "unavailable", moderate::UNHEARD),
        }
    }

    /// Keeps and broadcasts a message the bus numbered (said on this box or another).
    fn deliver(&mut self, heard: Heard) {
        let Heard { id, person, frame } = heard;
        if id <= self.history.last_id() {
            return; // The bus delivers each once; this only guards the ring's order.
        }
        self.history.push(Entry {
            id,
            frame: frame.clone(),
            origin: Some(Origin {
                person,
                at: Instant::now(),
            }),
        });
        self.shared.stats.message();
        if let Some((name, mentions)) = frame.author_and_mentions() {
            self.tell_elsewhere(id, &name, &mentions);
        }
        if !self.sharing.is_empty() {
            self.shared_back(&frame);
        }
        self.broadcast(frame, Delivery::Every);
    }

    /// Offers `frame` to every member without waiting; drops those that cannot take it.
    fn broadcast(&mut self, frame: Encoded, delivery: Delivery) {
        let departed = self.offer(&frame, delivery);
        self.announce_departures(departed);
    }

    /// Pushes a clone of `frame` to every member, never waiting; returns the names of those
    /// removed.
    /// Members owed a presence list get it once their queue is below half again.
    pub(super) fn offer(&mut self, frame: &Encoded, delivery: Delivery) -> Vec<String> {
        let mut departed = Vec::new();
        let mut pressed = false;
        let repair = self
            .members
            .values()
            .any(|seat| seat.stale)
            .then(|| self.repair_frame());
        // Memory is short: the members furthest behind go first, never those that keep up.
        let squeeze = self.shared.meter.is_over().then(|| {
            let furthest = self.members.values().map(|s| s.outbox.frames.len());
            (furthest.max().unwrap_or(0) / 2).max(BACKLOG_FLOOR)
        });
        let (room, stats) = (&self.name, &self.shared.stats);
        let (mut slots, mut delivered) = (0u64, 0u64);
        self.members.retain(|_, seat| {
            let (queue, limit) = (&seat.outbox.frames, seat.outbox.limit);
            let queued = queue.len();
            if squeeze.is_some_and(|backlog| queued >= backlog) {
                log::warn!(
                    "room {room}: dropping {}: {queued} messages behind while memory is short",
                    seat.name
                );
                queue.dismiss(Dismissal::OverBudget);
                stats.dropped_for_backlog();
                departed.push(seat.name.clone());
                return false;
            }
            let over_half = queued * 2 >= limit;
            pressed |= over_half;
            if delivery == Delivery::Spare && over_half {
                seat.stale = true;
                return true;
            }
            match queue.push_within(frame.clone(), limit) {
                Pushed::Queued(_) => {
                    slots += 1;
                    delivered += 1;
                    if let (true, false, Some(list)) = (seat.stale, over_half, &repair) {
                        let pushed = queue.push_within(list.clone(), limit);
                        seat.stale = !matches!(pushed, Pushed::Queued(_));
                        slots += u64::from(!seat.stale);
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
        // One charge per broadcast; the queues give their slots back as their writers take them.
        self.shared.meter.charge(slots * SLOT_BYTES);
        // Deliveries for /metrics, likewise once per broadcast.
        stats.delivered(delivered);
        self.pressed = pressed;
        departed
    }
}
