//! A load generator that talks real WebSocket to a smolchat server: the measurements behind
//! `BENCHMARKS.md` (through `benches/load.rs`) and behind `smolchat --self-test`.
//!
//! Senders and idle clients run on the calling thread (one smol `LocalExecutor`); a fan-out's
//! receivers are read by one more thread (`receivers`). Pinning the process (`taskset`)
//! keeps them all on one core, and the server on another. Clients join with `?name=`, so the server must
//! run without a passcode. Latency is measured by carrying the send time in the message text
//! (`t=<microseconds>` since the generator started); sender and receivers share one clock.
//!
//! Boxes sharing rooms through Redis: [`LoadGen::fanout_across`] splits the receivers over the
//! generator's server (box A, where the senders are) and the others, and keeps latency apart
//! for box A's receivers and the others', so what the way from one box to another adds shows
//! beside what the same messages cost on the box they were posted on.
//!
//! A client has joined once its `welcome` arrives: every server version sends it first on a
//! join, while its own `join` announcement may be batched or left out in a large room. Where
//! the generator waits for the server to settle, it waits for frames to stop arriving (bounded),
//! not for a fixed time.

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use receivers::Receivers;
use smol::future::or;
use smol::net::TcpStream;
use smol::stream::StreamExt;
use smol::{LocalExecutor, Timer};
use std::cell::Cell;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub mod floor;
mod proc;
mod receivers;
mod storm;
mod wire;

pub use proc::{cpu_seconds, peak_kib, reset_peak, rss_kib};
pub use storm::Storm;

type Ws = WebSocketStream<TcpStream>;

/// Longest any single step (a connection, a catch-up) may take before the run fails.
const STEP: Duration = Duration::from_secs(60);
/// Messages each sender may have on their way before it waits for its own echo.
const WINDOW: usize = 16;
/// Idle clients have settled once no frame has reached any of them for this long.
const QUIET: Duration = Duration::from_millis(500);

/// What a fan-out run measured.
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    /// Receiving clients (senders excluded).
    pub receivers: usize,
    /// Sending clients.
    pub senders: usize,
    /// Length of the measured interval.
    pub seconds: f64,
    /// Messages sent in the interval.
    pub sent: u64,
    /// Messages delivered to receivers in the interval.
    pub delivered: u64,
    /// Deliveries per second.
    pub deliveries_per_s: f64,
    /// Messages some receiver never got (after the end of the run, once queues drained).
    pub lost: u64,
    /// Delivery latency percentiles and maximum, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst delivery.
    pub max_ms: f64,
    /// The server's CPU time (user and system) per message sent, over the measured interval
    /// and the settling after it; `None` unless the generator watches the server. With
    /// several watched processes, their sum.
    pub server_cpu_ms_per_message: Option<f64>,
    /// The same for each watched process apart, in the order they were watched.
    pub cpu_ms_per_message_each: Vec<f64>,
    /// Delivery to the receivers on the senders' box (the generator's server).
    pub same_box: Delivery,
    /// Delivery to the receivers on the other boxes (none in a run on one box).
    pub cross_box: Delivery,
}

/// What the receivers on some of the boxes got.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Receivers on these boxes.
    pub receivers: usize,
    /// Messages they got in the measured interval.
    pub delivered: u64,
    /// Median delivery latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst delivery.
    pub max_ms: f64,
}

/// How to drive senders.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the server echoes: each sender keeps a window of messages in flight.
    Flood,
    /// This many messages per second in total, spread evenly.
    Rate(f64),
}

/// The generator: a clock shared by all clients, and the server's address.
pub struct LoadGen {
    addr: SocketAddr,
    epoch: Instant,
    executor: Rc<LocalExecutor<'static>>,
    /// The server's processes whose CPU time fan-out runs report (the first: the server at
    /// `addr`, whose memory a storm reads).
    server_pids: Vec<u32>,
}

impl LoadGen {
    /// A generator for the server at `addr`.
    pub fn new(addr: SocketAddr) -> LoadGen {
        LoadGen {
            addr,
            epoch: Instant::now(),
            executor: Rc::new(LocalExecutor::new()),
            server_pids: Vec::new(),
        }
    }

    /// Lets fan-out runs report the CPU time of the server (process `pid`, on this machine).
    /// Called again, for another process of the server side (another box, Redis), fan-out runs
    /// report each apart and their sum.
    pub fn watch(&mut self, pid: u32) {
        self.server_pids.push(pid);
    }

    /// CPU seconds of each watched process; `None` if none is watched or one cannot be read.
    fn server_cpu(&self) -> Option<Vec<f64>> {
        if self.server_pids.is_empty() {
            return None;
        }
        self.server_pids
            .iter()
            .map(|&pid| cpu_seconds(pid).ok())
            .collect()
    }

    /// Runs `future` with this generator's tasks, on this thread.
    pub fn run<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        smol::block_on(self.executor.run(future))
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Opens one client in `room` as `name` and waits for its welcome.
    pub async fn connect(&self, room: &str, name: &str) -> io::Result<Ws> {
        let stream = TcpStream::connect(self.addr).await?;
        let url = format!("ws://{}/ws/{room}?name={name}", self.addr);
        let (mut ws, _) = async_tungstenite::client_async(url, stream)
            .await
            .map_err(io::Error::other)?;
        loop {
            match step(ws.next()).await? {
                Some(Ok(Message::Text(text))) if text.contains(r#""type":"welcome""#) => {
                    return Ok(ws)
                }
                Some(Ok(_)) => {}
                _ => return Err(io::Error::other("connection ended while joining")),
            }
        }
    }

    /// Opens `count` idle clients, `per_room` to a room, each read continuously by its own task
    /// so announcements never pile up. Dropping the result closes the clients.
    pub async fn idle(&self, count: usize, per_room: usize) -> io::Result<Idle> {
        let counts = Rc::new(IdleCounts::default());
        let mut tasks = Vec::with_capacity(count);
        for n in 0..count {
            let room = format!("idle-{}", n / per_room.max(1));
            let mut ws = self.connect(&room, &format!("i{n}")).await?;
            let (counts, epoch) = (counts.clone(), self.epoch);
            tasks.push(self.executor.spawn(async move {
                while let Some(Ok(_)) = ws.next().await {
                    counts.frames.set(counts.frames.get() + 1);
                    let now = epoch.elapsed().as_micros() as u64;
                    counts.last_frame.set(now.max(1));
                }
            }));
        }
        Ok(Idle {
            _tasks: tasks,
            counts,
            epoch: self.epoch,
        })
    }

    /// Fan-out: `receivers` read, `senders` send into one room for `duration`.
    pub async fn fanout(
        &self,
        receivers: usize,
        senders: usize,
        duration: Duration,
        pace: Pace,
    ) -> io::Result<Fanout> {
        self.fanout_across(&[], receivers, senders, duration, pace)
            .await
    }

    /// Fan-out over several boxes that share the room (through Redis): the senders post on
    /// this generator's server (box A), and the receivers are dealt in turn to box A and to
    /// each of `others`, so every box has its share.
    pub async fn fanout_across(
        &self,
        others: &[SocketAddr],
        receivers: usize,
        senders: usize,
        duration: Duration,
        pace: Pace,
    ) -> io::Result<Fanout> {
        let room = "fanout";
        let boxes: Vec<SocketAddr> = std::iter::once(self.addr)
            .chain(others.iter().copied())
            .collect();
        // Joins block this thread; nothing else of the generator needs it meanwhile.
        let readers = Receivers::start(self.epoch, u64::MAX)?;
        for n in 0..receivers {
            let on = n % boxes.len();
            // Group 0: on the senders' box; 1: on another.
            readers.join(boxes[on], on.min(1), room, &format!("r{n}"))?;
        }
        let mut sending = Vec::with_capacity(senders);
        for n in 0..senders {
            sending.push(self.connect(room, &format!("s{n}")).await?);
        }

        let sent = Rc::new(Cell::new(0u64));
        let measure_from = self.micros();
        readers.count_from(measure_from);
        let cpu_from = self.server_cpu();
        let deadline = Instant::now() + duration;
        let mut tasks = Vec::new();
        for (n, ws) in sending.into_iter().enumerate() {
            let per_sender = match pace {
                Pace::Flood => None,
                Pace::Rate(total) => Some(Duration::from_secs_f64(senders as f64 / total)),
            };
            let offset = per_sender.map(|p| p.mul_f64(n as f64 / senders as f64));
            let sender = Sender {
                name: format!("s{n}"),
                deadline,
                interval: per_sender,
                offset: offset.unwrap_or_default(),
                sent: sent.clone(),
                epoch: self.epoch,
            };
            tasks.push(self.executor.spawn(sender.run(ws)));
        }
        // Senders stay connected until the end: closing a socket with echoes unread would
        // reset it, and the reset could discard messages the server has not read yet.
        let mut senders_done = Vec::with_capacity(tasks.len());
        for task in tasks {
            senders_done.push(task.await?);
        }
        let seconds = (self.micros() - measure_from) as f64 / 1e6;
        let total_sent = sent.get();
        // Let the last deliveries arrive (bounded), then count what never did.
        let expected = total_sent * receivers as u64;
        let settle = Instant::now() + STEP;
        while readers.delivered() < expected && Instant::now() < settle {
            Timer::after(Duration::from_millis(10)).await;
        }
        let delivered = readers.delivered();
        let cpu: Vec<f64> = match (self.server_cpu(), cpu_from) {
            (Some(to), Some(from)) => to.iter().zip(&from).map(|(to, from)| to - from).collect(),
            _ => Vec::new(),
        };
        let mut by_group = readers.finish()?;
        drop(senders_done);
        by_group.resize_with(2, Vec::new);
        // Receiver n is on box n % boxes: box A has every boxes-th, from the first.
        let on_a = receivers.div_ceil(boxes.len());
        let same_box = Delivery::of(on_a, &mut by_group[0]);
        let cross_box = Delivery::of(receivers - on_a, &mut by_group[1]);
        let mut latencies = by_group.concat();
        latencies.sort_unstable();
        let per_message = |seconds: f64| seconds * 1000.0 / total_sent.max(1) as f64;
        Ok(Fanout {
            receivers,
            senders,
            seconds,
            sent: total_sent,
            delivered,
            deliveries_per_s: delivered as f64 / seconds,
            lost: expected.saturating_sub(delivered),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
            server_cpu_ms_per_message: (!cpu.is_empty()).then(|| per_message(cpu.iter().sum())),
            cpu_ms_per_message_each: cpu.into_iter().map(per_message).collect(),
            same_box,
            cross_box,
        })
    }
}

impl Delivery {
    /// What `receivers` got, from their latencies (µs; sorted here).
    fn of(receivers: usize, latencies: &mut [u32]) -> Delivery {
        latencies.sort_unstable();
        Delivery {
            receivers,
            delivered: latencies.len() as u64,
            p50_ms: percentile(latencies, 0.50),
            p99_ms: percentile(latencies, 0.99),
            max_ms: percentile(latencies, 1.0),
        }
    }
}

/// The `p` quantile (0 to 1) of sorted latencies (µs), in milliseconds; 0 for none.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// Idle clients opened by [`LoadGen::idle`], each read by its own task; dropping this closes
/// them.
pub struct Idle {
    _tasks: Vec<smol::Task<()>>,
    counts: Rc<IdleCounts>,
    epoch: Instant,
}

#[derive(Default)]
struct IdleCounts {
    /// Frames read by all idle clients after their welcome.
    frames: Cell<u64>,
    /// When the last of them was read (µs since the epoch; 0: none yet).
    last_frame: Cell<u64>,
}

impl Idle {
    /// Waits until no frame has reached any client for 500 ms, at most `limit`; false if the
    /// limit came first.
    pub async fn settle(&self, limit: Duration) -> bool {
        settle(|| self.counts.last_frame.get(), self.epoch, QUIET, limit).await
    }

    /// Frames the clients read after their welcomes, so far.
    pub fn frames(&self) -> u64 {
        self.counts.frames.get()
    }
}

/// Waits until `last_frame()` (µs since `epoch`, 0 for none) is at least `quiet` old, for at
/// most `limit`; true if it got there.
async fn settle(
    last_frame: impl Fn() -> u64,
    epoch: Instant,
    quiet: Duration,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let now = epoch.elapsed().as_micros() as u64;
        let since = Duration::from_micros(now.saturating_sub(last_frame()));
        if since >= quiet {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        Timer::after((quiet - since).min(Duration::from_millis(50))).await;
    }
}

/// The server's `/healthz` counters.
pub async fn healthz(addr: SocketAddr) -> io::Result<serde_json::Value> {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        io::Result::Ok(text)
    };
    let text = step(exchange).await??;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| io::Error::other("/healthz: no body"))?;
    serde_json::from_str(body).map_err(|e| io::Error::other(format!("/healthz: {e}")))
}

/// Fails a step that takes longer than [`STEP`].
async fn step<T>(future: impl std::future::Future<Output = T>) -> io::Result<T> {
    or(async { Ok(future.await) }, async {
        Timer::after(STEP).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "a load step timed out",
        ))
    })
    .await
}

/// The send time in a message frame's text (`t=<micros>`), found without parsing the JSON.
fn sent_at(frame: &str) -> Option<u64> {
    let start = frame.find(r#""text":"t="#)? + 10;
    let digits = frame[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    frame[start..start + digits].parse().ok()
}

/// One sending client.
struct Sender {
    name: String,
    deadline: Instant,
    /// `None`: flood, keeping [`WINDOW`] messages in flight.
    interval: Option<Duration>,
    offset: Duration,
    sent: Rc<Cell<u64>>,
    epoch: Instant,
}

impl Sender {
    /// Sends until the deadline. A sender reads everything the room sends it (it is a member
    /// too), counting its own echoes to keep its window.
    async fn run(self, mut ws: Ws) -> io::Result<Ws> {
        // Its own echoes; not its own join (or anything else naming it).
        let own = r#""type":"message","id":"#;
        let own_name = format!(r#""name":"{}""#, self.name);
        let mut in_flight = 0usize;
        let mut next = Instant::now() + self.offset;
        while Instant::now() < self.deadline {
            if let Some(interval) = self.interval {
                // Paced: read whatever has arrived, then wait for the next slot.
                while let Some(Some(Ok(_))) = smol::future::poll_once(ws.next()).await {}
                Timer::at(next).await;
                next += interval;
            } else {
                while in_flight >= WINDOW {
                    match step(ws.next()).await? {
                        Some(Ok(Message::Text(text)))
                            if text.contains(own) && text.contains(&own_name) =>
                        {
                            in_flight -= 1
                        }
                        Some(Ok(_)) => {}
                        _ => return Err(io::Error::other("sender disconnected")),
                    }
                }
            }
            let text = format!(r#"{{"text":"t={}"}}"#, self.epoch.elapsed().as_micros());
            ws.send(Message::text(text))
                .await
                .map_err(io::Error::other)?;
            self.sent.set(self.sent.get() + 1);
            in_flight += 1;
        }
        Ok(ws)
    }
}

/// Starts a server with `command` (which must not set `--addr` or `--log-level`), on an
/// ephemeral loopback port, and returns it with its address once it listens. Its log is read
/// (so it never blocks on a full pipe) and warnings are passed on to stderr.
pub fn spawn_server(mut command: Command) -> io::Result<(Child, SocketAddr)> {
    let mut child = command
        .args(["--addr", "127.0.0.1:0", "--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            } else if line.starts_with("WARN") || line.starts_with("ERROR") {
                eprintln!("server: {line}");
            }
        }
    });
    match rx.recv_timeout(STEP).map(|addr| addr.parse()) {
        Ok(Ok(addr)) => Ok((child, addr)),
        _ => {
            let _ = child.kill();
            Err(io::Error::other("the server did not start listening"))
        }
    }
}

/// Flags that take a server's per-address and sender limits out of a load test's way: every
/// generated client comes from one loopback address, and the senders post as fast as the
/// server echoes (what is measured is fan-out, not the limits).
pub const LOAD_LIMITS: [&str; 8] = [
    "--max-sockets-per-address",
    "1000000",
    "--new-rooms-per-minute",
    "1000000",
    "--messages-per-second",
    "10000",
    "--message-burst",
    "10000",
];

/// `smolchat --self-test`: starts this binary as a server on loopback, opens idle clients and
/// then a fan-out, and describes what this machine does.
pub fn self_test() -> io::Result<String> {
    const IDLE: usize = 500;
    const RECEIVERS: usize = 200;
    const SENDERS: usize = 2;
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["--data-dir", "none", "--max-connections", "2000"]);
    command.args(LOAD_LIMITS);
    let (mut child, addr) = spawn_server(command)?;
    let pid = child.id();
    let generator = LoadGen::new(addr);
    let report = generator.run(async {
        let start_kib = rss_kib(pid)?;
        let idle = generator.idle(IDLE, 100).await?;
        idle.settle(STEP).await;
        let idle_kib = rss_kib(pid)?;
        drop(idle);
        let fanout = generator
            .fanout(RECEIVERS, SENDERS, Duration::from_secs(3), Pace::Flood)
            .await?;
        let per_connection = (idle_kib.saturating_sub(start_kib) * 1024) / IDLE as u64;
        io::Result::Ok(format!(
            "server memory at start: {start_kib} KiB\n\
             {IDLE} idle clients: {idle_kib} KiB, about {per_connection} bytes each\n\
             fan-out, {RECEIVERS} receivers and {SENDERS} senders for {:.1} s: {:.0} messages/s, \
             {:.0} deliveries/s, {} lost, latency p50 {:.1} ms, p99 {:.1} ms\n",
            fanout.seconds,
            fanout.sent as f64 / fanout.seconds,
            fanout.deliveries_per_s,
            fanout.lost,
            fanout.p50_ms,
            fanout.p99_ms,
        ))
    });
    let _ = child.kill();
    let _ = child.wait();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_are_found_in_frames() {
        let frame =
            r#"{"type":"message","id":3,"room":"r","name":"s0","text":"t=123456","when":"x"}"#;
        assert_eq!(sent_at(frame), Some(123_456));
        assert_eq!(sent_at(r#"{"type":"join"}"#), None);
    }

    #[test]
    fn a_box_delivery_is_summed_up_from_its_latencies() {
        let mut latencies: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let delivery = Delivery::of(5, &mut latencies);
        assert_eq!((delivery.receivers, delivery.delivered), (5, 100));
        assert_eq!(
            (delivery.p50_ms, delivery.p99_ms, delivery.max_ms),
            (51.0, 99.0, 100.0)
        );
        let none = Delivery::of(0, &mut []);
        assert_eq!((none.delivered, none.p99_ms), (0, 0.0));
    }
}
