//! The bus: how a room's messages leave the box and reach it. A room talks to the bus, never
//! to Redis.
//!
//! Without `--redis` the bus is [`Bus::Local`]: nothing runs, rooms number and keep their own
//! messages as they always did, and the only cost is one `Option` a room checks per message.
//!
//! With `--redis`, every box that points at the same Redis serves the same rooms. Two tasks per
//! box, on the server's executor, do all the talking to Redis; a room never awaits Redis:
//! - `post` hands each message to Redis: one Lua script (`keys.rs`) increments the room's id,
//!   appends the frame with that id to the room's capped stream, and publishes it, in one
//!   atomic step, so there is one order and no gap. A room offers a post without waiting
//!   ([`Link::post`]); a post Redis did not take comes back as [`News::Lost`]. A message
//!   sent again with the sender's key is kept once (the script remembers keys).
//! - `listen` holds one subscription connection for the box, subscribed to the channel of each
//!   room running here, and brings each room its history ([`News::Opened`]) and then every
//!   message in id order ([`News::Said`]) into the room's own news channel, which the room's
//!   loop reads beside its events. A room delivers a message, its own members' too, only when
//!   it comes back from Redis with its id: the same messages, order and ids on every box.
//!   It also tells every room when the box loses Redis and has it again
//!   ([`News::Reachable`]), so members hear of it and their pages hold their composers shut.
//!
//! Why publish and not every box reading the stream: one subscription per box serves every
//! room, a blocking stream read would need a connection per room, and publishing from the
//! script costs nothing extra. Pub/sub alone may lose messages (a reconnect, a box behind); the
//! ids are consecutive per room, so the listener sees any gap and fills it from the stream,
//! which is the truth. After a reconnect it reads each room's stream from the last id it
//! delivered.
//!
//! Presence: each box keeps, per room, who is seated on it in a hash of its own in Redis that
//! expires unless the box's heartbeat renews it, and announces each name as it comes and goes.
//! A name is claimed in Redis (one script: no other person holds it on a live box) before a
//! newcomer is seated; the joiner waits for that, the room does not. Each room counts the
//! people on other boxes beside its own members, so welcomes, joins and leaves and the head
//! count cover every box; a box that stops heartbeating leaves presence within its expiry
//! (`keys::PRESENCE_TTL`, 6 s) and one beat (2 s).
//!
//! Hosts' rulings: a ban, mute, lock, announcement, deletion or clear is carried out on the
//! box it was given on, then handed to the listener, which writes the book entry it changes
//! (or removes the messages) in Redis and publishes it, in one script. Every other box sets
//! the entry in its own book (kept on disk as before, so it holds while Redis is away) and
//! hands the ruling to each of its rooms ([`News::Ruled`]), which carry it out for their
//! members. A box reads the whole book from Redis at every connection, so a ruling missed
//! while it was cut off, or given while it was down, holds when it is back. A ban or mute
//! given on one box against a name seated on another is widened there: that box adds the
//! person and address it knows under the name, and publishes the widened entry. While Redis
//! cannot be reached, hosts' actions in shared rooms are refused (`unavailable`), so no box
//! keeps a ruling the others never heard of.
//!
//! Files: `keys` names the keys and holds the scripts, `post` and `listen` are the two tasks,
//! `connect` finds the server they talk to (the primary, behind sentinels), `orders` what
//! rooms hand them and `ruling` what a host's action carries between boxes (the
//! only parts a build without the `redis` feature keeps, with `files`: which box holds a
//! shared file, for the web layer to fetch it from there).
//!
//! Which store holds what: a shared room's history lives only in Redis (the stream, capped
//! at `--history`); the box keeps the same ring in memory for replay, and the on-disk log is
//! not used for it. The hosts' book lives in Redis too (`keys::BOOK_KEY`), and each box keeps
//! a copy on disk.

// Without the `redis` feature (the routers' builds) a Redis bus is never made; its types stay
// so that rooms keep one shape.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

#[cfg(feature = "redis")]
mod connect;
mod files;
#[cfg(feature = "redis")]
mod keys;
#[cfg(feature = "redis")]
mod listen;
mod orders;
#[cfg(feature = "redis")]
mod post;
mod ruling;

#[cfg(feature = "redis")]
pub use files::{box_url, Located, BOX_TOKEN_HEADER};
pub use ruling::{Erase, Notice, Ruling, ShutOut};

use crate::atomic::AtomicU64;
#[cfg(feature = "redis")]
use crate::config::{RedisTarget, Sentinels};
use crate::message::{Encoded, Unnumbered};
#[cfg(feature = "redis")]
use crate::meter::Meter;
#[cfg(feature = "redis")]
use crate::moderation::Moderation;
use async_channel::{Receiver, Sender};
#[cfg(feature = "redis")]
use smol::Executor;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Posts waiting for Redis, for the whole box. Beyond it a post is refused at once (Redis is
/// slow or gone), rather than held in memory without bound.
const POST_QUEUE: usize = 256;
/// News waiting for one room's loop. The listener waits when it is full: backpressure on one
/// connection's reading, never dropped news.
const NEWS_QUEUE: usize = 64;

/// How rooms reach each other: only within this box, or across boxes through Redis.
#[derive(Clone, Default)]
pub enum Bus {
    /// Rooms are this box's alone; nothing of the bus runs.
    #[default]
    Local,
    /// Rooms are shared through Redis.
    Redis(Arc<Redis>),
}

/// The handles of the two Redis tasks.
pub struct Redis {
    posts: Sender<orders::Post>,
    listen: Sender<orders::Command>,
    /// Numbers each room's link, so a room ending late cannot close its successor's feed.
    next_link: AtomicU64,
    /// Whether the listener is connected, and since when.
    health: Arc<Health>,
}

/// What the listener knows of the connection to Redis, shared with the posting task.
#[derive(Default)]
pub struct Health {
    /// The listener holds a live, subscribed connection.
    pub connected: AtomicBool,
    /// Counts the listener's connections: when it changes, Redis was gone in between (a
    /// restart, say), and the posting task connects again before it posts, rather than find
    /// out by losing a post on a dead connection.
    pub sessions: AtomicU64,
    /// The token boxes fetch each other's files with, once read from Redis.
    pub token: std::sync::Mutex<Option<Arc<str>>>,
}

/// One message as the bus carries it.
#[derive(Debug)]
pub struct Heard {
    /// The room's id for it, assigned in Redis.
    pub id: u64,
    /// Who said it (their person id on the box they said it on).
    pub person: u64,
    /// The frame members receive.
    pub frame: Encoded,
}

/// Somebody in a room on another box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Somebody {
    /// The box they are on.
    pub on: Arc<str>,
    /// Who they are.
    pub person: u64,
    /// Their name as shown.
    pub name: String,
}

/// What the bus tells a room.
#[derive(Debug)]
pub enum News {
    /// The room's history as Redis keeps it (oldest first), its last id, and who is in it on
    /// other boxes; first after the room opens its link, before any other news.
    Opened {
        /// The kept messages, at most `--history`.
        entries: Vec<Heard>,
        /// The newest id ever given in the room.
        last_id: u64,
        /// Everyone on other boxes.
        here: Vec<Somebody>,
    },
    /// Everyone on other boxes, anew (after a lost connection): replaces what the room had.
    Here(Vec<Somebody>),
    /// Somebody came on another box.
    Came(Somebody),
    /// A name left on another box.
    Went {
        /// The box.
        on: Arc<str>,
        /// The name as shown.
        name: String,
    },
    /// A box stopped heartbeating: everyone on it is gone.
    Gone {
        /// The box.
        on: Arc<str>,
    },
    /// The answer to [`Link::claim`]: whether the newcomer may take the name.
    Claimed {
        /// The newcomer's connection.
        client: u64,
        /// False: another person holds the name on another box.
        granted: bool,
    },
    /// The next message of the room, in id order.
    Said(Heard),
    /// The box lost its connection to Redis (`false`) or has it again (`true`).
    Reachable(bool),
    /// A host's ruling from another box (or, `anew`, the whole book read again): the book has
    /// it already; the room carries it out for its members.
    Ruled(Arc<Ruling>),
    /// A host's ruling did not reach Redis: the room tells them the other boxes may not
    /// have it.
    Unruled {
        /// The host's connection in the room.
        client: u64,
    },
    /// A member's post was refused: their address has spent its budget across the boxes.
    /// The room tells them (it was not sent).
    Refused {
        /// The member's connection in the room.
        client: u64,
        /// The member's key for the message, if it gave one.
        key: Option<Box<str>>,
    },
    /// A member's post did not reach Redis: the room tells them (it was not sent).
    Lost {
        /// The member's connection in the room.
        client: u64,
        /// The member's key for the message, if it gave one.
        key: Option<Box<str>>,
    },
}

/// A room's place on the bus: where it posts and where its news arrive. Dropping it leaves.
pub struct Link {
    redis: Arc<Redis>,
    id: u64,
    room: Arc<str>,
    /// Handed to each post, so a lost one finds its way back.
    news_tx: Sender<News>,
    /// Where the room reads its news.
    pub news: Receiver<News>,
}

/// A message (or a file's frame) a room offers the bus.
pub struct Offer {
    /// The member's connection that said it.
    pub client: u64,
    /// Who they are.
    pub person: u64,
    /// The room's last id on this box.
    pub seen: u64,
    /// The sender's own key for it: Redis keeps a message once per key (see
    /// `keys::POST_SCRIPT`).
    pub key: Option<Box<str>>,
    /// Where the sender is (see [`Settings::per_second`]).
    pub address: Option<IpAddr>,
    /// The frame, missing its id.
    pub frame: Unnumbered,
    /// The id of the file the frame shares, held on this box.
    pub file: Option<Box<str>>,
}

/// A post the bus could not take: Redis is slow or unreachable.
#[derive(Debug)]
pub struct Refused;

/// How a box takes part in sharing rooms.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages each room keeps (`--history`): the stream's cap.
    pub history: usize,
    /// This box's name in Redis: unique per start.
    pub me: String,
    /// What one address may post across every box: messages per second once its burst
    /// is spent, and the burst. A box gives an address as much as its sockets' buckets
    /// allow; the boxes together give it no more.
    pub per_second: u32,
    /// See `per_second`.
    pub burst: u32,
    /// The URL other boxes fetch this box's files at (see `files::box_url`).
    pub url: String,
    /// How long a shared file is kept, in seconds: how long Redis remembers where it is.
    pub file_ttl: u64,
}

impl Bus {
    /// Starts the two Redis tasks on `executor`, frames charged to `meter`. Connecting
    /// happens in the tasks, retried until it works. Rulings from other boxes are written in
    /// `moderation`.
    #[cfg(feature = "redis")]
    pub fn connect(
        target: &RedisTarget,
        sentinels: Option<&Sentinels>,
        settings: Settings,
        executor: &Executor<'static>,
        meter: Arc<Meter>,
        moderation: Arc<Moderation>,
    ) -> Bus {
        let me: Arc<str> = Arc::from(settings.me.as_str());
        let connector = Arc::new(connect::Connector::new(target, sentinels));
        let health = Arc::new(Health::default());
        let (posts, queued) = async_channel::bounded(POST_QUEUE);
        let (listen, commands) = async_channel::unbounded();
        executor
            .spawn(post::run(
                connector.clone(),
                queued,
                settings.clone(),
                health.clone(),
            ))
            .detach();
        executor
            .spawn(listen::run(
                connector,
                commands,
                settings,
                meter,
                moderation,
                health.clone(),
            ))
            .detach();
        match sentinels {
            None => log::info!("rooms are shared through {target} (this box: {me})"),
            Some(sentinels) => log::info!("rooms are shared through {sentinels} (this box: {me})"),
        }
        Bus::Redis(Arc::new(Redis {
            posts,
            listen,
            next_link: AtomicU64::new(1),
            health,
        }))
    }

    /// Puts `room` on the bus: `None` for a local bus (the room keeps its own messages).
    pub fn open(&self, room: &str) -> Option<Link> {
        let Bus::Redis(redis) = self else {
            return None;
        };
        let id = redis.next_link.fetch_add(1, Ordering::Relaxed);
        let room: Arc<str> = Arc::from(room);
        let (news_tx, news) = async_channel::bounded(NEWS_QUEUE);
        // Unbounded: opens and closes are one each per room start, which is rate-limited.
        let _ = redis.listen.try_send(orders::Command::Open {
            room: room.clone(),
            link: id,
            news: news_tx.clone(),
        });
        Some(Link {
            redis: redis.clone(),
            id,
            room,
            news_tx,
            news,
        })
    }

    /// `None` without Redis; otherwise whether the box is connected to it now.
    pub fn connected(&self) -> Option<bool> {
        match self {
            Bus::Local => None,
            Bus::Redis(redis) => Some(redis.health.connected.load(Ordering::Relaxed)),
        }
    }
}

impl Link {
    /// Whether the box is connected to Redis now (posts would wait for it otherwise).
    pub fn connected(&self) -> bool {
        self.redis.health.connected.load(Ordering::Relaxed)
    }

    /// Offers a message to Redis without waiting; it comes back as [`News::Said`] with its id
    /// (or as [`News::Lost`], or [`News::Refused`]).
    pub fn post(&self, offer: Offer) -> Result<(), Refused> {
        let Offer {
            client,
            person,
            seen,
            key,
            address,
            frame,
            file,
        } = offer;
        let post = orders::Post {
            room: self.room.clone(),
            client,
            person,
            seen,
            key,
            address,
            file,
            frame,
            news: self.news_tx.clone(),
        };
        self.redis.posts.try_send(post).map_err(|_| Refused)
    }
}

impl Link {
    /// Asks Redis whether `person` may take `name` in the room (their first connection on this
    /// box under it); the answer comes as [`News::Claimed`] for `client`. Never waits.
    pub fn claim(&self, client: u64, person: u64, name: &str) {
        let _ = self.redis.listen.try_send(orders::Command::Claim {
            room: self.room.clone(),
            link: self.id,
            client,
            person,
            name: name.to_owned(),
        });
    }

    /// Hands a host's ruling, carried out here already, to every other box; `client` gave it
    /// and hears ([`News::Unruled`]) if it does not reach Redis. Never waits.
    pub fn rule(&self, client: u64, ruling: Ruling) {
        let _ = self.redis.listen.try_send(orders::Command::Rule {
            room: self.room.clone(),
            link: self.id,
            client,
            ruling: Box::new(ruling),
        });
    }

    /// `name`'s last connection on this box left the room. Never waits.
    pub fn release(&self, name: &str) {
        let _ = self.redis.listen.try_send(orders::Command::Release {
            room: self.room.clone(),
            link: self.id,
            name: name.to_owned(),
        });
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.redis.listen.try_send(orders::Command::Close {
            room: self.room.clone(),
            link: self.id,
        });
    }
}
