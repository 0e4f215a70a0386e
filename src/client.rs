//! One WebSocket client: a read task that turns frames into room events and enforces the
//! inbound limits, and a write task that drains the client's queue, pings when the room asks,
//! and closes.
//!
//! Who ends what: the reader ends on the client's close or a bad frame; it tells the writer which
//! close frame to send. The writer ends on that word or on the room's (the client is too slow,
//! silent, or the server is stopping), and then sends its close frame itself. Every wait on the
//! client's socket is raced against those words or bounded by a timeout, so a stalled browser
//! can hold nothing but its own connection, and only briefly. A connection has no timers of its
//! own: the room keeps time for all its members (see `room`), which keeps an idle connection
//! small.

use crate::message::{self, Encoded, Inbound, Outbound};
use crate::meter::{Charge, Meter, SLOT_BYTES};
use crate::queue::{Batch, Dismissal, Next, Pushed, Queue};
use crate::room::limits::{Bucket, SenderLimit, Take};
use crate::room::{JoinError, JoinRequest, Member, Outbox, Registry};
use crate::stats::Stats;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_util::{ready, SinkExt};
use smol::future::or;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::stream::StreamExt;
use smol::{Executor, Timer};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes tungstenite reads from the socket at a time (its default is 128 KiB). Every connection
/// holds this much once it has read anything; browsers send little, and larger frames still
/// get the room they need.
const READ_BUFFER_BYTES: usize = 128;
/// Bytes of frames tungstenite buffers before passing them on: none, as its buffer would keep
/// the size of the largest burst for good. Frames are gathered below it instead, in a buffer
/// that is let go after each batch (see `coalesce`), so each batch is still one `write`.
const WRITE_BUFFER_BYTES: usize = 0;
/// Largest WebSocket frame we write; longer messages go as fragments (see [`fragments`]).
pub const FRAGMENT_BYTES: usize = 256;
/// Longest a close handshake, or draining a misbehaving client, may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes read and discarded from a client after our close frame, before we close anyway.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024;

/// Per-connection limits, from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Frames queued for this client before it counts as too slow.
    pub queue: usize,
    /// Messages a room replays on join; the queue makes room for them on top of `queue`.
    pub history: usize,
    /// Largest inbound message.
    pub max_message_bytes: usize,
    /// How fast this client may post.
    pub sender: SenderLimit,
}

/// tungstenite settings sized for small boards: small buffers, our message limit. The socket
/// under it must gather writes (`coalesce::Coalesce`).
pub fn websocket_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// Who this client is and where it goes.
pub struct Client {
    /// Peer address, for log lines.
    pub peer: String,
    /// The room to join.
    pub room: String,
    /// The server-stamped display name.
    pub name: String,
    /// Who this is across tabs (see [`JoinRequest::person`]).
    pub person: u64,
    /// The newest message id the client already has.
    pub since: Option<u64>,
    /// Where it connects from (for bans by address).
    pub address: Option<std::net::IpAddr>,
    /// Signed in as a host.
    pub host: bool,
}

/// Close code for a refused join: the name is taken in this room (an application code, in the
/// 4000–4999 range RFC 6455 leaves to applications; 409 as in HTTP's Conflict).
pub const NAME_TAKEN: u16 = 4409;

/// Close code for a person a host kicked or banned (4403, as HTTP's Forbidden); the reason
/// says why, and the page does not reconnect.
pub const SHUT_OUT: u16 = 4403;

/// Longest close reason: a close frame's payload is at most 125 bytes, two of them the code.
const CLOSE_REASON_BYTES: usize = 123;

/// A close frame the writer must send: code and reason. `None`: close without sending one.
type Close = Option<(CloseCode, Utf8Bytes)>;

/// A client's WebSocket once the upgrade completes (`None` if it never did). Boxed: a
/// future's arguments stay in its state for its whole life, so they are kept small.
pub type Upgrade<S> = Pin<Box<dyn Future<Output = Option<Box<WebSocketStream<S>>>> + Send>>;

/// Everything a client's task starts with, in one box: an async fn keeps its arguments in its
/// state for its whole life next to the locals they are moved into, so one pointer is cheaper.
pub struct Start<S, L> {
    /// The WebSocket, once the upgrade completes.
    pub upgrade: Upgrade<S>,
    /// Who the client is and where it goes (boxed: kept for log lines, read rarely).
    pub client: Box<Client>,
    /// Its limits.
    pub limits: Limits,
    /// The rooms.
    pub registry: Registry,
    /// Where its writer task runs.
    pub executor: Arc<Executor<'static>>,
    /// Counts held-back and closed senders.
    pub stats: Arc<Stats>,
    /// Held while the connection lives (a connection slot) and let go before the client can see
    /// it end (before any close frame goes out), so a client that has seen its connection end
    /// may connect again at once. The writer holds it, as the writer sends the close frames.
    pub lease: L,
}

/// Runs one client until its connection ends: waits for the upgrade, joins the room, spawns the
/// writer, reads.
pub async fn serve<S, L: Send + 'static>(start: Box<Start<S, L>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Start {
        upgrade,
        client,
        limits,
        registry,
        executor,
        stats,
        lease,
    } = unbox(start);
    let Some(ws) = upgrade.await else {
        return;
    };
    let (sink, mut stream) = unbox(ws).split();
    let queue: Arc<Queue<Close>> = Arc::new(Queue::metered(registry.meter().clone()));
    let outbox = Outbox {
        frames: queue.clone(),
        // Room for the welcome, the history replay and the live queue.
        limit: limits.queue + limits.history + 1,
    };
    let request = JoinRequest {
        room: client.room.clone(),
        name: client.name.clone(),
        person: client.person,
        since: client.since,
        address: client.address,
        host: client.host,
        outbox,
    };
    // Cold paths are boxed: an async fn's state is as large as its largest await point, and
    // this state lives as long as the connection, so joining and closing must not size it.
    let member = match Box::pin(registry.join(request)).await {
        Ok(member) => member,
        Err(JoinError::NameTaken) => {
            drop(lease);
            Box::pin(refuse_name(sink, stream, &client)).await;
            return;
        }
    };
    log::debug!(
        "{}: {} joined room {} (client {})",
        client.peer,
        client.name,
        client.room,
        member.id()
    );

    let mut writer = executor.spawn(write(sink, queue.clone(), lease));
    let first = or(
        async {
            let reader = Reader {
                member: &member,
                queue: &queue,
                limits: &limits,
                client: &client,
                stats: &stats,
                meter: registry.meter(),
            };
            Ended::Reader(read(&mut stream, reader).await)
        },
        async { Ended::Writer((&mut writer).await) },
    )
    .await;
    Box::pin(finish(first, &queue, member, writer, stream, &client)).await;
    // Whatever the room still sends has nowhere to go: its next push removes us if need be.
    queue.close();
    log::debug!("{}: {} left room {}", client.peer, client.name, client.room);
}

/// Moves a value out of its box and frees the box at once: in an async fn, `*boxed` keeps the
/// box's memory until the end of the scope, here the connection's life.
#[allow(clippy::boxed_local)] // Taking the box is the point.
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// Closes a client whose name is taken in the room, with [`NAME_TAKEN`].
async fn refuse_name<S>(sink: WebSocketSender<S>, stream: WebSocketReceiver<S>, client: &Client)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut ws) = WebSocketStream::reunite(sink, stream) else {
        return; // The halves of one stream always reunite.
    };
    log::info!(
        "{}: {} is taken in room {}",
        client.peer,
        client.name,
        client.room
    );
    let frame = CloseFrame {
        code: CloseCode::from(NAME_TAKEN),
        reason: Utf8Bytes::from_static("that name is taken in this room"),
    };
    let _ = or(async { ws.close(Some(frame)).await.map_err(drop) }, async {
        Timer::after(CLOSE_TIMEOUT).await;
        Err(())
    })
    .await;
    close_and_drain(ws.get_mut()).await;
}

/// Ends a connection once one half has finished: the writer sends its close frame (told by
/// the reader first, then the room hears the leave); then we half-close and drain (see
/// [`close_and_drain`]).
async fn finish<S>(
    first: Ended<S>,
    queue: &Queue<Close>,
    member: Member,
    writer: smol::Task<WebSocketSender<S>>,
    stream: WebSocketReceiver<S>,
    client: &Client,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sink = match first {
        Ended::Reader(close) => {
            if let Some((code, reason)) = &close {
                log::info!("{}: closing {}: {reason}", client.peer, u16::from(*code));
            }
            // First tell the writer, then leave: leaving closes the frame queue, and the writer
            // must already know which close frame that means.
            // If the room's kick got there first, its close frame wins.
            queue.stop(close);
            member.leave().await;
            writer.await
        }
        // We sent a close (kick or shutdown) or the socket broke.
        Ended::Writer(sink) => {
            member.leave().await;
            sink
        }
    };
    if let Ok(mut ws) = WebSocketStream::reunite(sink, stream) {
        close_and_drain(ws.get_mut()).await;
    }
}

/// Ends our side of a socket whose close frame has been written: sends what tungstenite wrote
/// but did not flush (its answer to the client's close frame, which it leaves to the socket,
/// here gathered in `Coalesce`), half-closes, and reads and discards what the client still
/// sends (its answer to our close, or whatever it was sending), bounded in time and bytes.
/// The client thus reads the close frame and then the end of the stream; closing with its
/// input unread would reset the connection instead, and a reset can destroy the close frame
/// before the client reads it (and tells a client that is writing nothing but "reset").
async fn close_and_drain<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S) {
    // Ignored: a socket that cannot take its last bytes in time is closed anyway.
    let _ = or(
        async {
            socket.flush().await.map_err(drop)?;
            socket.close().await.map_err(drop)
        },
        async {
            Timer::after(CLOSE_TIMEOUT).await;
            Err(())
        },
    )
    .await;
    drain(socket).await;
}

/// Which half of the connection finished first.
enum Ended<S> {
    /// The reader, with the close frame it wants sent.
    Reader(Close),
    /// The writer, returning its half of the socket.
    Writer(WebSocketSender<S>),
}

/// What the read task works with, borrowed from the connection's task.
struct Reader<'a> {
    member: &'a Member,
    queue: &'a Queue<Close>,
    limits: &'a Limits,
    client: &'a Client,
    stats: &'a Stats,
    meter: &'a Meter,
}

/// Reads frames until the client closes or misbehaves (its room notices if it goes silent).
/// Each message takes a token from the sender's bucket first: over the limit, the reader waits
/// and reads nothing meanwhile (see `room::limits`).
async fn read<S>(stream: &mut WebSocketReceiver<S>, reader: Reader<'_>) -> Close
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = reader.limits.sender;
    let mut bucket = Bucket::new(&limit, Instant::now());
    // tungstenite keeps a read buffer the size of the largest frame it read, for good.
    let mut inbound = Charge::new(reader.meter, 0);
    loop {
        let item = stream.next().await;
        // For the room's keepalive: anything the client sends, a pong included, shows it is there.
        reader.queue.heard();
        // Only what it says outlives this match, so the frame is not kept across the awaits.
        let said = match item {
            None => return None,
            Some(Ok(Message::Text(frame))) => {
                inbound.at_least(frame.len() as u64);
                message::inbound(&frame)
            }
            Some(Ok(Message::Binary(_))) => {
                return Some((
                    CloseCode::Unsupported,
                    Utf8Bytes::from_static("binary frames are not supported"),
                ));
            }
            // Pings are answered and closes acknowledged by tungstenite itself.
            Some(Ok(_)) => continue,
            Some(Err(error)) => return close_for(&error, reader.limits),
        };
        match &said {
            Inbound::Say(text) | Inbound::SayOnce { text, .. } if text.trim().is_empty() => {
                continue
            }
            Inbound::Unreadable(why) => {
                let text = format!("This request cannot be read: {why}.");
                tell(&reader, "bad_action", &text);
                continue;
            }
            _ => {}
        }
        match bucket.take(&limit, Instant::now()) {
            Take::Go => {}
            // Boxed, like the say below: the read task's state would otherwise be sized for it.
            Take::Wait { wait, first } => Box::pin(hold_back(&reader, wait, first)).await,
            Take::Close => {
                reader.stats.flooder_closed();
                log::warn!(
                    "{}: closing {}: held back for {} s and still sending",
                    reader.client.peer,
                    reader.client.name,
                    limit.patience.as_secs()
                );
                return Some((
                    CloseCode::Policy,
                    Utf8Bytes::from_static("flooding: too many messages for too long"),
                ));
            }
        }
        match said {
            Inbound::Say(text) => Box::pin(reader.member.say(text)).await,
            Inbound::SayOnce { text, key } => Box::pin(reader.member.say_once(text, key)).await,
            Inbound::Act(action) => Box::pin(reader.member.act(action)).await,
            Inbound::Unreadable(_) => {}
        }
    }
}

/// Sends this client alone an `error` frame.
fn tell(reader: &Reader<'_>, code: &str, text: &str) {
    let notice = Outbound::Error {
        room: &reader.client.room,
        code,
        text,
        key: None,
    }
    .encode();
    let limit = reader.limits.queue + reader.limits.history + 1;
    if let Pushed::Queued(_) = reader.queue.push_within(notice, limit) {
        reader.meter.charge(SLOT_BYTES);
    }
}

/// Holds a sender back for `wait`, telling it so when this begins.
async fn hold_back(reader: &Reader<'_>, wait: Duration, first: bool) {
    if first {
        reader.stats.sender_held_back();
        log::info!(
            "{}: holding {} back: over {} messages a second",
            reader.client.peer,
            reader.client.name,
            reader.limits.sender.per_second
        );
        let text = format!(
            "You are sending faster than {} messages a second: your messages are held back.",
            reader.limits.sender.per_second
        );
        tell(reader, "slow_down", &text);
    }
    Timer::after(wait).await;
}

/// The close frame that answers a read error; `None` where the connection is simply gone.
fn close_for(error: &WsError, limits: &Limits) -> Close {
    match error {
        WsError::Capacity(error) => {
            log::debug!(
                "inbound limit is {} bytes: {error}",
                limits.max_message_bytes
            );
            Some((CloseCode::Size, Utf8Bytes::from_static("message too big")))
        }
        WsError::Utf8(_) => Some((
            CloseCode::Invalid,
            Utf8Bytes::from_static("text frame is not valid UTF-8"),
        )),
        WsError::Protocol(_) => Some((
            CloseCode::Protocol,
            Utf8Bytes::from_static("WebSocket protocol error"),
        )),
        _ => None,
    }
}

/// How a write went.
enum Step {
    Done,
    Stop(Close),
    Broken,
}

/// Sends whatever is queued (one flush per batch) and the pings the room asks for, and then
/// the final close frame, having let go of the connection's `lease` first.
async fn write<S, L>(
    mut sink: WebSocketSender<S>,
    queue: Arc<Queue<Close>>,
    lease: L,
) -> WebSocketSender<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close = loop {
        let step = match queue.next().await {
            Next::Frames(batch) => {
                let sink = &mut sink;
                guarded(&queue, move || send_batch(sink, batch)).await
            }
            Next::Ping => {
                let sink = &mut sink;
                let ping = move || {
                    let sink = sink; // Moved, not reborrowed: the future keeps the borrow.
                    sink.send(Message::Ping(Default::default()))
                };
                guarded(&queue, ping).await
            }
            Next::Stop(close) => break close,
            // The room let go of us; the reader or the room has said why already.
            Next::Closed => break None,
        };
        match step {
            Step::Done => {}
            Step::Stop(close) => break close,
            Step::Broken => return sink,
        }
    };
    // Let go before any close frame goes out, ours below or the reader's answer to the
    // client's close once this task ends: from then on the client may see the end.
    drop(lease);
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason };
        // Ignored on purpose: a client that cannot take a close frame in time is dropped anyway.
        // Boxed: it happens once, and the writer's state would otherwise be sized for it.
        let _ = Box::pin(or(
            async { sink.close(Some(frame)).await.map_err(drop) },
            async {
                Timer::after(CLOSE_TIMEOUT).await;
                Err(())
            },
        ))
        .await;
    }
    sink
}

/// The close frame for each reason a room lets a member go.
impl From<Dismissal> for Close {
    fn from(why: Dismissal) -> Close {
        let (code, reason) = match why {
            Dismissal::TooSlow => (CloseCode::Policy, "too slow: message queue full"),
            Dismissal::Silent => (CloseCode::Away, "no pong within the keepalive limit"),
            Dismissal::ShuttingDown => (CloseCode::Away, "server shutting down"),
            Dismissal::OverBudget => (CloseCode::Policy, "too far behind while memory is short"),
            Dismissal::ShutOut(reason) => {
                return Some((CloseCode::from(SHUT_OUT), close_reason(&reason)));
            }
        };
        Some((code, Utf8Bytes::from_static(reason)))
    }
}

/// `reason` cut to fit a close frame, at a character boundary.
fn close_reason(reason: &str) -> Utf8Bytes {
    let mut end = reason.len().min(CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Utf8Bytes::from(reason[..end].to_owned())
}

/// Runs one write, abandoning it if told to stop meanwhile (a stalled socket never finishes).
/// The write is made here, from `start`: a future passed in would be held twice in this one's
/// state (as the argument and where it is pinned), and this state is part of every writer's.
async fn guarded<W>(queue: &Queue<Close>, start: impl FnOnce() -> W) -> Step
where
    W: Future<Output = Result<(), WsError>>,
{
    let mut write = std::pin::pin!(start());
    let step = |result: Result<(), WsError>| match result {
        Ok(()) => Step::Done,
        Err(_) => Step::Broken,
    };
    // Most writes finish at once (the socket has room); a stop word that arrived meanwhile is
    // read first thing by the writer's next wait.
    if let Some(result) = smol::future::poll_once(write.as_mut()).await {
        return step(result);
    }
    let stopped = async { Step::Stop(queue.stopped().await.unwrap_or(None)) };
    // Boxed: only a write that has to wait comes here, and every writer's state would otherwise
    // be sized for it.
    Box::pin(or(stopped, async { step(write.await) })).await
}

/// Feeds a batch of frames, then flushes once.
/// Written as one poll function rather than a `feed(..).await` per frame: its state is just
/// the frames left, and it is part of every writer's.
fn send_batch<S>(
    sink: &mut WebSocketSender<S>,
    batch: Batch,
) -> impl Future<Output = Result<(), WsError>> + '_
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = batch.into_iter().flat_map(fragments);
    poll_fn(move |cx| {
        // A frame is taken only once the sink is ready for it, so none is lost while waiting.
        loop {
            ready!(sink.poll_ready_unpin(cx))?;
            match frames.next() {
                Some(message) => sink.start_send_unpin(message)?,
                None => break,
            }
        }
        sink.poll_flush_unpin(cx)
    })
}

/// An encoded frame as the WebSocket frames that carry it, without copying it: one text frame,
/// or, past [`FRAGMENT_BYTES`], a text frame and continuations of that size at most.
/// tungstenite keeps a buffer the size of the largest frame it ever wrote for the connection's
/// whole life; fragments keep that buffer small whatever size the room's frames reach.
fn fragments(frame: Encoded) -> Fragments {
    Fragments {
        bytes: frame.bytes().clone(),
        whole: Some(frame),
        at: 0,
    }
}

/// See [`fragments`].
struct Fragments {
    whole: Option<Encoded>,
    bytes: bytes::Bytes,
    at: usize,
}

impl Iterator for Fragments {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use async_tungstenite::tungstenite::protocol::frame::Frame;
        if self.bytes.len() <= FRAGMENT_BYTES {
            return self.whole.take().map(|frame| Message::Text(frame.text()));
        }
        if self.at >= self.bytes.len() {
            return None;
        }
        let end = (self.at + FRAGMENT_BYTES).min(self.bytes.len());
        let opcode = if self.at == 0 {
            Data::Text
        } else {
            Data::Continue
        };
        let piece = self.bytes.slice(self.at..end);
        self.at = end;
        let last = end == self.bytes.len();
        Some(Message::Frame(Frame::message(
            piece,
            OpCode::Data(opcode),
            last,
        )))
    }
}

/// Reads and discards what a client still sends until it closes its side, so that closing our
/// end does not reset the connection before it has read our close frame. Bounded in time and
/// bytes: a client that never stops sending gets [`DRAIN_LIMIT_BYTES`] or [`CLOSE_TIMEOUT`].
async fn drain<S: AsyncRead + Unpin>(socket: &mut S) {
    // On the heap: an array here would sit in every connection's task for its whole life.
    let mut scratch = vec![0u8; 1024];
    let mut left = DRAIN_LIMIT_BYTES;
    let _ = or(
        async {
            while left > 0 {
                match socket.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        },
        async {
            Timer::after(CLOSE_TIMEOUT).await;
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Outbound;
    use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    fn frame_of(text: &str) -> Encoded {
        Outbound::Error {
            room: "r",
            code: "c",
            text,
            key: None,
        }
        .encode()
    }

    #[test]
    fn a_small_frame_goes_whole_and_a_large_one_in_fragments() {
        let small: Vec<Message> = fragments(frame_of("hi")).collect();
        assert!(matches!(small.as_slice(), [Message::Text(_)]));

        let frame = frame_of(&"é".repeat(2500)); // 5000 bytes of text, split mid-character
        let pieces: Vec<Message> = fragments(frame.clone()).collect();
        assert_eq!(pieces.len(), frame.bytes().len().div_ceil(FRAGMENT_BYTES));
        let mut joined = Vec::new();
        for (n, piece) in pieces.iter().enumerate() {
            let Message::Frame(f) = piece else {
                panic!("expected a raw frame")
            };
            let expected = if n == 0 { Data::Text } else { Data::Continue };
            assert_eq!(f.header().opcode, OpCode::Data(expected));
            assert_eq!(f.header().is_final, n == pieces.len() - 1);
            assert!(f.payload().len() <= FRAGMENT_BYTES);
            joined.extend_from_slice(f.payload());
        }
        assert_eq!(joined, frame.bytes().as_ref());
    }
}
