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
//!   ([`Link::post`]); a post Redis did not take comes back as [`News::Lost`].
//! - `listen` holds one subscription connection for the box, subscribed to the channel of each
//!   room running here, and brings each room its history ([`News::Opened`]) and then every
//!   message in id order ([`News::Said`]) into the room's own news channel, which the room's
//!   loop reads beside its events. A room delivers a message, its own members' too, only when
//!   it comes back from Redis with its id: the same messages, order and ids on every box.
//!
//! Why publish and not every box reading the stream: one subscription per box serves every
//! room, a blocking stream read would need a connection per room, and publishing from the
//! script costs nothing extra. Pub/sub alone may lose messages (a reconnect, a box behind); the
//! ids are consecutive per room, so the listener sees any gap and fills it from the stream,
//! which is the truth. After a reconnect it reads each room's stream from the last id it
//! delivered.
//!
//! Which store holds what: a shared room's history lives only in Redis (the stream, capped
//! at `--history`); the box keeps the same ring in memory for replay, and the on-disk log is
//! not used for it. Moderation (bans, mutes, locks) stays in each box's own book for now.

mod keys;
mod listen;
mod post;

use crate::config::RedisTarget;
use crate::message::{Encoded, Unnumbered};
use crate::meter::Meter;
use async_channel::{Receiver, Sender};
use smol::Executor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    posts: Sender<post::Post>,
    listen: Sender<listen::Command>,
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

/// What the bus tells a room.
#[derive(Debug)]
pub enum News {
    /// The room's history as Redis keeps it (oldest first) and its last id; first after the
    /// room opens its link, before any `Said`.
    Opened {
        /// The kept messages, at most `--history`.
        entries: Vec<Heard>,
        /// The newest id ever given in the room.
        last_id: u64,
    },
    /// The next message of the room, in id order.
    Said(Heard),
    /// A member's post did not reach Redis: the room tells them (it was not sent).
    Lost {
        /// The member's connection in the room.
        client: u64,
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

/// A post the bus could not take: Redis is slow or unreachable.
#[derive(Debug)]
pub struct Refused;

impl Bus {
    /// Starts the two Redis tasks on `executor` for rooms keeping `history` messages, frames
    /// charged to `meter`. Connecting happens in the tasks, retried until it works.
    pub fn connect(
        target: &RedisTarget,
        history: usize,
        executor: &Executor<'static>,
        meter: Arc<Meter>,
    ) -> Bus {
        let client = keys::client(target);
        let health = Arc::new(Health::default());
        let (posts, queued) = async_channel::bounded(POST_QUEUE);
        let (listen, commands) = async_channel::unbounded();
        executor
            .spawn(post::run(client.clone(), queued, history, health.clone()))
            .detach();
        executor
            .spawn(listen::run(
                client,
                commands,
                history,
                meter,
                health.clone(),
            ))
            .detach();
        log::info!("rooms are shared through {target}");
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
        let _ = redis.listen.try_send(listen::Command::Open {
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
    /// (or as [`News::Lost`]). `client` said it, `person` is who they are, `seen` is the
    /// room's last id here.
    pub fn post(
        &self,
        client: u64,
        person: u64,
        seen: u64,
        frame: Unnumbered,
    ) -> Result<(), Refused> {
        let post = post::Post {
            room: self.room.clone(),
            client,
            person,
            seen,
            frame,
            news: self.news_tx.clone(),
        };
        self.redis.posts.try_send(post).map_err(|_| Refused)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.redis.listen.try_send(listen::Command::Close {
            room: self.room.clone(),
            link: self.id,
        });
    }
}
