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
//! messages they missed, in order. A ping every [`PING_INTERVAL`] finds a connection that
//! died without closing.

use super::keys::{self, CONNECT_WAIT};
use super::{Health, Heard, News};
use crate::meter::Meter;
use ::redis::aio::{MultiplexedConnection, PubSubSink};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, Msg, RedisResult, Value};
use async_channel::{Receiver, Sender};
use smol::future::or;
use smol::stream::StreamExt;
use smol::Timer;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First wait before connecting again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between attempts to connect.
const RETRY_MAX: Duration = Duration::from_secs(4);
/// How often the subscription connection is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Longest any one request (a ping, a stream read) may take before the connection counts as
/// lost.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What rooms ask of the listener.
pub enum Command {
    /// A room started here: subscribe, send it its history, then its messages.
    Open {
        room: Arc<str>,
        /// Which link of the room (a room may end and start again before its close arrives).
        link: u64,
        news: Sender<News>,
    },
    /// A room ended here: stop bringing it news (if `link` is still the room's).
    Close { room: Arc<str>, link: u64 },
}

/// A room as the listener sees it.
struct Feed {
    link: u64,
    news: Sender<News>,
    /// The last id delivered; `None` until the history has been sent.
    last: Option<u64>,
}

/// What the connection loop woke for.
enum Wake {
    Command(Option<Command>),
    Message(Option<Msg>),
    Ping,
}

/// Runs until the rooms' command channel closes (the server stopped).
pub async fn run(
    client: Client,
    commands: Receiver<Command>,
    history: usize,
    meter: Arc<Meter>,
    health: Arc<Health>,
) {
    let mut listener = Listener {
        client,
        history,
        meter,
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
                Some(Ok(command)) => listener.apply_offline(command),
            }
        }
    }
}

struct Listener {
    client: Client,
    history: usize,
    meter: Arc<Meter>,
    feeds: HashMap<Arc<str>, Feed>,
    health: Arc<Health>,
    retry: Duration,
    /// An outage was logged (log the first failure once, not every retry).
    reported: bool,
}

impl Listener {
    /// One connection's life: returns `Ok` when the server stops, the error when it is lost.
    async fn session(&mut self, commands: &Receiver<Command>) -> RedisResult<()> {
        let pubsub = bounded(CONNECT_WAIT, self.client.get_async_pubsub()).await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_WAIT))
            .set_response_timeout(Some(ANSWER_WAIT));
        let mut data = (self.client)
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (mut sink, mut messages) = pubsub.split();
        let rooms: Vec<Arc<str>> = self.feeds.keys().cloned().collect();
        for room in &rooms {
            bounded(ANSWER_WAIT, sink.subscribe(keys::channel(room))).await?;
        }
        // Subscribed: whatever is posted from now on reaches this box, so rooms may post.
        self.health.sessions.fetch_add(1, Ordering::Relaxed);
        self.health.connected.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.reported) {
            log::info!("redis: connected again; shared rooms catch up");
        }
        self.retry = RETRY_FIRST;
        for room in &rooms {
            self.catch_up(room, &mut data).await?;
        }
        let mut ping = Timer::interval(PING_INTERVAL);
        loop {
            let wake = or(
                async { Wake::Command(commands.recv().await.ok()) },
                or(async { Wake::Message(messages.next().await) }, async {
                    ping.next().await;
                    Wake::Ping
                }),
            )
            .await;
            match wake {
                Wake::Command(None) => return Ok(()),
                Wake::Command(Some(Command::Open { room, link, news })) => {
                    let fresh = self.feeds.insert(
                        room.clone(),
                        Feed {
                            link,
                            news,
                            last: None,
                        },
                    );
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
                Wake::Message(None) => {
                    return Err((ErrorKind::Io, "the subscription connection closed").into())
                }
                Wake::Message(Some(message)) => self.heard(&message, &mut data).await?,
                Wake::Ping => ping_within(&mut sink).await?,
            }
        }
    }

    /// Keeps track of a command while there is no connection; the next session subscribes
    /// and catches up every room it knows.
    fn apply_offline(&mut self, command: Command) {
        match command {
            Command::Open { room, link, news } => {
                let feed = Feed {
                    link,
                    news,
                    last: None,
                };
                self.feeds.insert(room, feed);
            }
            Command::Close { room, link } => {
                self.close(&room, link);
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
            Some(last) => self.fill(room, last + 1, None, data).await,
            None => {
                let (counter, newest): (Option<u64>, Value) = ::redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(keys::id_key(room))
                    .cmd("XREVRANGE")
                    .arg(keys::log_key(room))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(self.history)
                    .query_async(data)
                    .await?;
                let mut entries = keys::parse_entries(newest, &self.meter)?;
                entries.reverse();
                let newest = entries.last().map_or(0, |e| e.id);
                let last_id = counter.unwrap_or(0).max(newest);
                let Some(feed) = self.feeds.get_mut(room) else {
                    return Ok(());
                };
                feed.last = Some(last_id);
                // The room may have ended meanwhile; its close follows.
                let _ = feed.news.send(News::Opened { entries, last_id }).await;
                Ok(())
            }
        }
    }

    /// A published message: delivered if it is the room's next, after the ones missed if it
    /// is further on, dropped if the room has it already.
    async fn heard(&mut self, message: &Msg, data: &mut MultiplexedConnection) -> RedisResult<()> {
        let Some(room) = keys::room_of(message.get_channel_name()) else {
            return Ok(());
        };
        let Some(last) = self.feeds.get(room).and_then(|feed| feed.last) else {
            return Ok(()); // Not open yet: its history will include this.
        };
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
            .arg(to)
            .query_async(data)
            .await?;
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
