//! The listening task: one subscription connection for the box, and one ordinary connection
//! for reading streams. For each room running here it keeps the last id it delivered, and
//! brings the room, in order and exactly once, every message after it.
//!
//! A room opening its link is subscribed first and its history read second (one atomic read of
//! its counter and its newest entries), so nothing said in between is missed: what the
//! subscription brings twice is dropped by id. A published id further on than the next one
//! means something was missed (the connection was lost, or this box was behind): the entries
//! in between are read from the stream before it is delivered. After a lost connection the
//! task connects again (waiting [`RETRY_FIRST`], doubling to [`RETRY_MAX`]), subscribes every
//! room again and reads each room's stream from its last id: members see a pause, then the
//! messages they missed, in order, and each room hears who is on other boxes anew. Every
//! [`BEAT`] it pings the subscription connection (finding one that died without closing) and
//! keeps presence (`names.rs`).
//!
//! Each connect asks `connect.rs` for the primary (behind sentinels: whichever server they
//! name now). Behind sentinels, what a catch-up reads from the stream is delivered only once a
//! replica has it too (`WAIT`), as posts are: nothing a member sees is lost by a failover.
//!
//! Files: this one holds the connection's life and the messages; `names` the names claimed
//! and released and the presence heartbeat; `book` the hosts' rulings going out and coming
//! in, and the whole book read at each connection; `files` where shared files are held.

mod book;
mod files;
mod names;

use super::connect::{Connector, REPLICA_WAIT};
use super::keys::BOOK_CHANNEL;
use super::keys::{self, CONNECT_WAIT, HERE_SCRIPT};
use super::orders::Command;
use super::{Health, Heard, News, Settings, Somebody};
use crate::meter::Meter;
use crate::moderation::Moderation;
use ::redis::aio::{MultiplexedConnection, PubSubSink};
use ::redis::{ErrorKind, Msg, RedisResult, Value};
use async_channel::{Receiver, Sender};
use smol::future::or;
use smol::stream::StreamExt;
use smol::Timer;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First wait before connecting again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between attempts to connect.
const RETRY_MAX: Duration = Duration::from_secs(4);
/// How often the subscription connection is pinged and presence renewed and checked: a third
/// of [`keys::PRESENCE_TTL`], so two beats may be late before a box counts as gone.
const BEAT: Duration = Duration::from_secs(2);
/// Longest any one request (a ping, a stream read) may take before the connection counts as
/// lost.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A room as the listener sees it.
struct Feed {
    link: u64,
    news: Sender<News>,
    /// The last id delivered; `None` until the history has been sent.
    last: Option<u64>,
    /// The names seated on this box, by their lowercase form: person and name as shown.
    mine: HashMap<String, (u64, String)>,
    /// Other boxes seen with people in the room, checked at every beat.
    others: HashSet<Arc<str>>,
}

impl Feed {
    fn new(link: u64, news: Sender<News>) -> Feed {
        Feed {
            link,
            news,
            last: None,
            mine: HashMap::new(),
            others: HashSet::new(),
        }
    }
}

/// What the connection loop woke for.
enum Wake {
    Command(Option<Command>),
    Message(Option<Msg>),
    Beat,
}

/// Runs until the rooms' command channel closes (the server stopped).
pub async fn run(
    connector: Arc<Connector>,
    commands: Receiver<Command>,
    settings: Settings,
    meter: Arc<Meter>,
    moderation: Arc<Moderation>,
    health: Arc<Health>,
) {
    let mut listener = Listener {
        connector,
        history: settings.history,
        me: Arc::from(settings.me.as_str()),
        meter,
        moderation,
        feeds: HashMap::new(),
        health,
        retry: RETRY_FIRST,
        reported: false,
    };
    loop {
        match listener.session(&commands).await {
            Ok(()) => return,
            Err(e) => {
                let was = listener.health.connected.swap(false, Ordering::Relaxed);
                if was || !listener.reported {
                    log::error!("redis: shared rooms are cut off: {e}");
                    listener.reported = true;
                }
                if was {
                    listener.tell_all(false).await;
                }
            }
        }
        // Wait before the next attempt, still keeping track of rooms that start and end.
        let until = Instant::now() + listener.retry;
        listener.retry = (listener.retry * 2).min(RETRY_MAX);
        loop {
            let command = or(async { Some(commands.recv().await) }, async {
                Timer::at(until).await;
                None
            })
            .await;
            match command {
                None => break,
                Some(Err(_)) => return,
                Some(Ok(command)) => listener.apply_offline(command).await,
            }
        }
    }
}

struct Listener {
    connector: Arc<Connector>,
    history: usize,
    /// This box's id.
    me: Arc<str>,
    meter: Arc<Meter>,
    /// The box's book, where rulings from other boxes are written.
    moderation: Arc<Moderation>,
    feeds: HashMap<Arc<str>, Feed>,
    health: Arc<Health>,
    retry: Duration,
    /// An outage was logged (log the first failure once, not every retry).
    reported: bool,
}
impl Listener {
    /// One connection's life: returns `Ok` when the server stops, the error when it is lost.
    async fn session(&mut self, commands: &Receiver<Command>) -> RedisResult<()> {
        let (client, mut data) = self.connector.connect(ANSWER_WAIT).await?;
        let pubsub = bounded(CONNECT_WAIT, client.get_async_pubsub()).await?;
        let (mut sink, mut messages) = pubsub.split();
        let rooms: Vec<Arc<str>> = self.feeds.keys().cloned().collect();
        for room in &rooms {
            bounded(ANSWER_WAIT, sink.subscribe(keys::channel(room))).await?;
        }
        bounded(ANSWER_WAIT, sink.subscribe(BOOK_CHANNEL)).await?;
        self.read_book(&mut data).await?;
        self.serve_files(&mut data).await?;
        // Subscribed: whatever is posted from now on reaches this box. Each room catches up
        // before rooms may post: a room that opened while Redis was away gets its history
        // (`News::Opened`) first, so a post of its own cannot land in that history unseen.
        for room in &rooms {
            self.claim_mine(room, &mut data).await?;
            self.catch_up(room, &mut data).await?;
        }
        self.health.sessions.fetch_add(1, Ordering::Relaxed);
        self.health.connected.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.reported) {
            log::info!("redis: connected again; shared rooms caught up");
        }
        self.retry = RETRY_FIRST;
        self.tell_all(true).await;
        let mut beat = Timer::interval(BEAT);
        loop {
            let wake = or(
                async { Wake::Command(commands.recv().await.ok()) },
                or(async { Wake::Message(messages.next().await) }, async {
                    beat.next().await;
                    Wake::Beat
                }),
            )
            .await;
            match wake {
                Wake::Command(None) => return Ok(()),
                Wake::Command(Some(Command::Open { room, link, news })) => {
                    let fresh = self.feeds.insert(room.clone(), Feed::new(link, news));
                    if fresh.is_none() {
                        bounded(ANSWER_WAIT, sink.subscribe(keys::channel(&room))).await?;
                    }
                    self.catch_up(&room, &mut data).await?;
                }
                Wake::Command(Some(Command::Close { room, link })) => {
                    if self.close(&room, link) {
                        bounded(ANSWER_WAIT, sink.unsubscribe(keys::channel(&room))).await?;
                    }
                }
                Wake::Command(Some(Command::Claim {
                    room,
                    link,
                    client,
                    person,
                    name,
                })) => {
                    let claimed = self.claim(&room, person, &name, &mut data).await;
                    let granted = *claimed.as_ref().unwrap_or(&true);
                    self.answer(&room, link, client, person, name, granted)
                        .await;
                    claimed?;
                }
                Wake::Command(Some(Command::Rule {
                    room,
                    link,
                    client,
                    ruling,
                })) => {
                    let ruled = self.rule(&room, &ruling, &mut data).await;
                    if ruled.is_err() {
                        self.unruled(&room, link, client).await;
                    }
                    ruled?;
                }
                Wake::Command(Some(Command::Locate { file, reply })) => {
                    let located = self.locate(&file, &mut data).await;
                    let _ = reply.try_send(located.as_ref().ok().cloned().flatten());
                    located?;
                }
                Wake::Command(Some(Command::Release { room, link, name })) => {
                    self.release(&room, link, &name, &mut data).await?
                }
                Wake::Message(None) => {
                    return Err((ErrorKind::Io, "the subscription connection closed").into())
                }
                Wake::Message(Some(message)) => self.heard(&message, &mut data).await?,
                Wake::Beat => {
                    ping_within(&mut sink).await?;
                    self.beat(&mut data).await?;
                }
            }
        }
    }

    /// Tells every room whether Redis can be reached.
    async fn tell_all(&self, up: bool) {
        for feed in self.feeds.values() {
            // A room that ended meanwhile has nobody to tell.
            let _ = feed.news.send(News::Reachable(up)).await;
        }
    }

    /// Keeps track of a command while there is no connection; the next session subscribes,
    /// claims and catches up every room it knows. A claim is granted (checked on this box
    /// only) and claimed in Redis when the connection is back.
    async fn apply_offline(&mut self, command: Command) {
        match command {
            Command::Open { room, link, news } => {
                self.feeds.insert(room, Feed::new(link, news));
            }
            Command::Close { room, link } => {
                self.close(&room, link);
            }
            Command::Claim {
                room,
                link,
                client,
                person,
                name,
            } => self.answer(&room, link, client, person, name, true).await,
            Command::Release { room, link, name } => {
                self.forget_mine(&room, link, &name);
            }
            Command::Rule {
                room, link, client, ..
            } => self.unruled(&room, link, client).await,
            Command::Locate { reply, .. } => {
                let _ = reply.try_send(None);
            }
        }
    }

    /// Forgets `room` if `link` is still its link; true if it did.
    fn close(&mut self, room: &str, link: u64) -> bool {
        if self.feeds.get(room).is_some_and(|feed| feed.link == link) {
            self.feeds.remove(room);
            return true;
        }
        false
    }

    /// Brings `room` up to date: its history if it has none yet, else what came after its
    /// last id.
    async fn catch_up(&mut self, room: &str, data: &mut MultiplexedConnection) -> RedisResult<()> {
        let Some(feed) = self.feeds.get(room) else {
            return Ok(());
        };
        match feed.last {
            Some(last) => {
                let here = self.here(room, data).await?;
                if let Some(feed) = self.feeds.get_mut(room) {
                    feed.others = here.iter().map(|s| s.on.clone()).collect();
                    let _ = feed.news.send(News::Here(here)).await;
                }
                self.fill(room, last + 1, None, data).await
            }
            None => {
                // One atomic read: the history and who is here agree with each other.
                let (counter, newest, here): (Option<u64>, Value, Value) = ::redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(keys::id_key(room))
                    .cmd("XREVRANGE")
                    .arg(keys::log_key(room))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(self.history)
                    .cmd("EVAL")
                    .arg(HERE_SCRIPT)
                    .arg(1)
                    .arg(keys::boxes_key(room))
                    .arg(keys::box_prefix(room))
                    .arg(&*self.me)
                    .query_async(data)
                    .await?;
                self.replicated(room, data).await?;
                let mut entries = keys::parse_entries(newest, &self.meter)?;
                entries.reverse();
                let here = somebodies(here)?;
                let newest = entries.last().map_or(0, |e| e.id);
                let last_id = counter.unwrap_or(0).max(newest);
                let Some(feed) = self.feeds.get_mut(room) else {
                    return Ok(());
                };
                feed.last = Some(last_id);
                feed.others = here.iter().map(|s| s.on.clone()).collect();
                let opened = News::Opened {
                    entries,
                    last_id,
                    here,
                };
                // The room may have ended meanwhile; its close follows.
                let _ = feed.news.send(opened).await;
                Ok(())
            }
        }
    }

    /// Behind sentinels, waits until a replica has everything read so far (a write of nothing,
    /// replicated all the same, then `WAIT`); none in [`REPLICA_WAIT`] counts as a lost
    /// connection. What is published was confirmed by its poster already; a read up to the
    /// newest entry may hold a post still waiting for its confirmation.
    async fn replicated(&self, room: &str, data: &mut MultiplexedConnection) -> RedisResult<()> {
        if !self.connector.confirms() {
            return Ok(());
        }
        let (_, replicas): (u64, u64) = ::redis::pipe()
            .cmd("INCRBY")
            .arg(keys::id_key(room))
            .arg(0)
            .cmd("WAIT")
            .arg(1)
            .arg(REPLICA_WAIT.as_millis() as u64)
            .query_async(data)
            .await?;
        if replicas == 0 {
            let detail = format!("room {room}: no replica acknowledged within {REPLICA_WAIT:?}");
            return Err((ErrorKind::Io, "cannot catch up safely", detail).into());
        }
        Ok(())
    }

    /// Everyone in `room` on other boxes.
    async fn here(
        &self,
        room: &str,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<Vec<Somebody>> {
        let reply: Value = ::redis::cmd("EVAL")
            .arg(HERE_SCRIPT)
            .arg(1)
            .arg(keys::boxes_key(room))
            .arg(keys::box_prefix(room))
            .arg(&*self.me)
            .query_async(data)
            .await?;
        somebodies(reply)
    }

    /// A published message: delivered if it is the room's next, after the ones missed if it
    /// is further on, dropped if the room has it already.
    async fn heard(&mut self, message: &Msg, data: &mut MultiplexedConnection) -> RedisResult<()> {
        if message.get_channel_name() == BOOK_CHANNEL {
            self.ruled(message.get_payload_bytes()).await;
            return Ok(());
        }
        let Some(room) = keys::room_of(message.get_channel_name()) else {
            return Ok(());
        };
        let Some(last) = self.feeds.get(room).and_then(|feed| feed.last) else {
            return Ok(()); // Not open yet: its history will include this.
        };
        if let Some(seen) = keys::parse_presence(message.get_payload_bytes()) {
            self.seen(room, seen).await;
            return Ok(());
        }
        let Some(heard) = keys::parse_published(message.get_payload_bytes(), &self.meter) else {
            log::warn!(
                "redis: an unreadable message on {}",
                message.get_channel_name()
            );
            return Ok(());
        };
        if heard.id <= last {
            return Ok(());
        }
        if heard.id > last + 1 {
            self.fill(room, last + 1, Some(heard.id - 1), data).await?;
        }
        self.deliver(room, heard).await;
        Ok(())
    }

    /// Delivers `room`'s kept messages from id `from` (to `to`, or the newest), in order.
    async fn fill(
        &mut self,
        room: &str,
        from: u64,
        to: Option<u64>,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<()> {
        let to = to.map_or_else(|| "+".to_owned(), |id| format!("{id}-0"));
        let reply: Value = ::redis::cmd("XRANGE")
            .arg(keys::log_key(room))
            .arg(format!("{from}-0"))
            .arg(&to)
            .query_async(data)
            .await?;
        if to == "+" {
            // Up to the newest: maybe further than anything published.
            self.replicated(room, data).await?;
        }
        let entries = keys::parse_entries(reply, &self.meter)?;
        if entries.first().is_some_and(|first| first.id > from) {
            log::warn!(
                "redis: room {room}: messages {from} to {} are no longer kept; this box's members miss them",
                entries[0].id - 1
            );
        }
        for heard in entries {
            self.deliver(room, heard).await;
        }
        Ok(())
    }

    /// Hands `heard` to its room if it is newer than what the room has.
    async fn deliver(&mut self, room: &str, heard: Heard) {
        let Some(feed) = self.feeds.get_mut(room) else {
            return;
        };
        if feed.last.is_some_and(|last| heard.id <= last) {
            return;
        }
        feed.last = Some(heard.id);
        // The room may have ended meanwhile; its close follows.
        let _ = feed.news.send(News::Said(heard)).await;
    }
}

/// The reply of [`HERE_SCRIPT`]: `[box, "<person> <name>", ...]`.
fn somebodies(reply: Value) -> RedisResult<Vec<Somebody>> {
    let bad = || {
        ::redis::RedisError::from((
            ErrorKind::Parse,
            "presence",
            "not [box, held, ...]".to_owned(),
        ))
    };
    let Value::Array(flat) = reply else {
        return Err(bad());
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let mut people = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let on = text(&pair[0]).ok_or_else(bad)?;
        let held = pair.get(1).and_then(text).ok_or_else(bad)?;
        let (person, name) = keys::held(&held).ok_or_else(bad)?;
        people.push(Somebody {
            on: Arc::from(on),
            person,
            name,
        });
    }
    Ok(people)
}

/// Pings the subscription connection within [`ANSWER_WAIT`].
async fn ping_within(sink: &mut PubSubSink) -> RedisResult<()> {
    bounded(ANSWER_WAIT, sink.ping::<Value>()).await.map(drop)
}

/// `future`, or a timeout error after `wait`.
async fn bounded<T>(
    wait: Duration,
    future: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    or(future, async {
        Timer::after(wait).await;
        Err((ErrorKind::Io, "Redis did not answer in time").into())
    })
    .await
}
