//! The load benchmark: starts the release server, drives it over loopback with
//! [`smolchat::loadgen`], and prints one JSON line per run plus a summary (medians and ranges).
//!
//! ```sh
//! cargo build --release
//! cargo bench --bench load -- idle --connections 5000 --runs 3 --pin
//! cargo bench --bench load -- idle --connections 5000 --per-room 5000 --runs 3 --pin
//! cargo bench --bench load -- storm --connections 5000 --runs 3 --pin
//! cargo bench --bench load -- fanout --receivers 1000 --senders 4 --seconds 5 --runs 3 --pin
//! cargo bench --bench load -- latency --receivers 1000 --rate 20 --seconds 10 --runs 3 --pin
//! cargo bench --bench load -- slow --receivers 100 --senders 4 --seconds 5 --runs 3 --pin
//! cargo bench --bench load -- floor --receivers 1000 --rate 20 --seconds 10 --runs 3 --pin
//! cargo bench --bench load -- latency --boxes 2 --receivers 1000 --senders 1 --rate 20 --seconds 10 --runs 3 --pin
//! cargo bench --bench load -- fanout --boxes 2 --receivers 1000 --senders 4 --seconds 5 --runs 3 --pin
//! ```
//! `floor` is the latency run against [`smolchat::loadgen::floor`] instead of smolchat: what
//! the same fan-out costs with nothing but a poller and a `write` per client.
//! `--pin` puts the server on core 0 and this generator on core 1 (with `taskset`);
//! `--server PATH` picks another binary (default `target/release/smolchat`).
//! `storm` opens `--connections` clients into one room with up to `--in-flight` handshakes
//! at a time (default 256), then drops them all at once; it reads the server's peak memory
//! from `/proc` and resets it between the phases (`clear_refs`: run it as the server's user).
//!
//! `--boxes N` (with `fanout` or `latency`) measures N boxes sharing the room through Redis:
//! it starts its own `redis-server` (`--redis-server PATH`, default from `PATH`) on a free
//! loopback port with no persistence, and N servers with `--redis`; the senders post on box
//! A, the receivers are dealt in turn to every box, and latency is reported for box A's
//! receivers (`same_box_*`) and for the others' (`cross_box_*`). Each run also measures the
//! same load on one box without Redis (`alone_*`), so the two are side by side in one
//! session; odd runs measure that first, even runs last, as whichever goes first may fare
//! differently. With `--pin` every server process (the boxes and Redis) shares core 0.

use smolchat::loadgen::{self, LoadGen, Pace};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Options {
    mode: String,
    server: String,
    pin: bool,
    runs: usize,
    connections: usize,
    per_room: usize,
    in_flight: usize,
    receivers: usize,
    senders: usize,
    seconds: f64,
    rate: f64,
    /// Boxes sharing the room through Redis; 0: one box, no Redis.
    boxes: usize,
    redis_server: String,
}

fn options() -> Result<Options, pico_args::Error> {
    let mut args = pico_args::Arguments::from_env();
    args.contains("--bench"); // cargo bench passes this; nothing to do with it.
    let options = Options {
        server: args
            .opt_value_from_str("--server")?
            .unwrap_or_else(|| "target/release/smolchat".into()),
        pin: args.contains("--pin"),
        runs: args.opt_value_from_str("--runs")?.unwrap_or(1),
        connections: args.opt_value_from_str("--connections")?.unwrap_or(1000),
        per_room: args.opt_value_from_str("--per-room")?.unwrap_or(100),
        in_flight: args.opt_value_from_str("--in-flight")?.unwrap_or(256),
        receivers: args.opt_value_from_str("--receivers")?.unwrap_or(1000),
        senders: args.opt_value_from_str("--senders")?.unwrap_or(4),
        seconds: args.opt_value_from_str("--seconds")?.unwrap_or(5.0),
        rate: args.opt_value_from_str("--rate")?.unwrap_or(20.0),
        boxes: args.opt_value_from_str("--boxes")?.unwrap_or(0),
        redis_server: args
            .opt_value_from_str("--redis-server")?
            .unwrap_or_else(|| "redis-server".into()),
        mode: args.free_from_str()?,
    };
    Ok(options)
}

/// The server under test, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(options: &Options, max_connections: usize) -> Server {
        Server::start_with(options, max_connections, None)
    }

    /// Starts the server under test, sharing rooms through the Redis at `redis` if given.
    fn start_with(options: &Options, max_connections: usize, redis: Option<&str>) -> Server {
        let floor = options.mode == "floor";
        let program = if floor {
            std::env::current_exe()
                .expect("own path")
                .display()
                .to_string()
        } else {
            options.server.clone()
        };
        let mut command = if options.pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", &program]);
            c
        } else {
            Command::new(&program)
        };
        if floor {
            command.arg(FLOOR_SERVER);
        } else {
            let max = max_connections.to_string();
            command.args([
                "--data-dir",
                "none",
                "--threads",
                "1",
                "--max-connections",
                &max,
            ]);
            // Servers from before these limits (the baseline) do not know their flags.
            if knows_limits(&options.server) {
                command.args(loadgen::LOAD_LIMITS);
            }
            if let Some(url) = redis {
                command.args(["--redis", url]);
            }
        }
        let (child, addr) = loadgen::spawn_server(command).unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (cargo build --release first)",
                options.server
            )
        });
        Server { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server at `path` has per-address and sender limits (its help names them).
fn knows_limits(path: &str) -> bool {
    Command::new(path)
        .arg("--help")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--messages-per-second"))
}

/// A `redis-server` of the benchmark's own, on a free loopback port, with no persistence and
/// its directory in the system's temporary one; killed (by PID) and its directory removed on
/// drop.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

/// Longest a fresh `redis-server` may take to answer `PING`.
const REDIS_READY: Duration = Duration::from_secs(30);
/// How often a starting `redis-server` is asked.
const REDIS_POLL: Duration = Duration::from_millis(10);

impl Redis {
    /// Starts one (on core 0 with `--pin`, beside the boxes) and returns once it answers
    /// `PING`. A port taken between choosing and binding is retried with another.
    fn start(options: &Options) -> Redis {
        let dir = std::env::temp_dir().join(format!("smolchat-load-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut command = if options.pin {
                let mut c = Command::new("taskset");
                c.args(["-c", "0", &options.redis_server]);
                c
            } else {
                Command::new(&options.redis_server)
            };
            let child = command
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", options.redis_server));
            let mut redis = Redis {
                child,
                port,
                dir: dir.clone(),
            };
            if redis.ready() {
                return redis;
            }
        }
        panic!("redis-server did not start on any of five ports");
    }

    /// Asks `PING` until it answers `+PONG` (true), it exits (false: the port was taken), or
    /// [`REDIS_READY`] has passed (a panic).
    fn ready(&mut self) -> bool {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + REDIS_READY;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let pong = std::net::TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
                s.set_read_timeout(Some(REDIS_READY))?;
                s.write_all(b"PING\r\n")?;
                let mut answer = [0u8; 7];
                s.read_exact(&mut answer)?;
                Ok(&answer == b"+PONG\r\n")
            });
            if pong.unwrap_or(false) {
                return true;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer PING within {REDIS_READY:?}"
            );
            std::thread::sleep(REDIS_POLL);
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pin_self() {
    let status = Command::new("taskset")
        .args(["-pc", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "taskset failed");
}

/// The argument that makes this program the floor server (started by the `floor` mode).
const FLOOR_SERVER: &str = "floor-server";

/// This program as the floor server: `floor-server --addr ADDR ...`, announcing its address
/// the way smolchat does so that [`loadgen::spawn_server`] finds it.
fn floor_server() -> ! {
    let mut args = pico_args::Arguments::from_env();
    let addr: SocketAddr = args
        .opt_value_from_str("--addr")
        .ok()
        .flatten()
        .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    let listener = std::net::TcpListener::bind(addr).expect("floor: bind");
    eprintln!(
        "floor listening on http://{}",
        listener.local_addr().unwrap()
    );
    let error = loadgen::floor::serve(listener).unwrap_err();
    eprintln!("ERROR floor: {error}");
    std::process::exit(1);
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(FLOOR_SERVER) {
        floor_server();
    }
    let options = options().unwrap_or_else(|e| {
        eprintln!("load: {e}");
        std::process::exit(2);
    });
    if options.pin {
        pin_self();
    }
    check_open_files(&options);
    let mut results = Vec::new();
    for run in 1..=options.runs {
        let line = match options.mode.as_str() {
            "idle" => idle(&options),
            "storm" => storm(&options),
            "fanout" | "latency" if options.boxes > 0 => shared(&options, run % 2 == 1),
            "fanout" => fanout(&options, Pace::Flood),
            "latency" | "floor" => fanout(&options, Pace::Rate(options.rate)),
            "slow" => slow(&options),
            other => {
                eprintln!("load: unknown mode {other} (idle, storm, fanout, latency, slow, floor)");
                std::process::exit(2);
            }
        };
        println!("{}", serde_json::to_string(&line).unwrap());
        eprintln!("run {run}/{} done", options.runs);
        results.push(line);
    }
    println!(
        "{}",
        serde_json::to_string(&summary(&options.mode, &results)).unwrap()
    );
}

/// Medians and ranges of every number across runs.
fn summary(mode: &str, runs: &[serde_json::Value]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert("summary".into(), mode.into());
    out.insert("runs".into(), runs.len().into());
    if let Some(first) = runs.first().and_then(|r| r.as_object()) {
        for key in first.keys() {
            let mut values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
            if values.len() != runs.len() {
                continue;
            }
            values.sort_by(f64::total_cmp);
            let median = values[values.len() / 2];
            out.insert(key.clone(), serde_json::json!({"median": median, "min": values[0], "max": values[values.len() - 1]}));
        }
    }
    out.into()
}

/// Longest the idle clients may take to settle (no frame for 500 ms) before memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(60);

fn idle(options: &Options) -> serde_json::Value {
    let server = Server::start(options, options.connections + 10);
    let before = loadgen::rss_kib(server.pid()).unwrap();
    let generator = LoadGen::new(server.addr);
    let started = std::time::Instant::now();
    let (at_n, hwm, frames, settled, seconds) = generator.run(async {
        let clients = generator
            .idle(options.connections, options.per_room)
            .await
            .unwrap();
        let joined = started.elapsed().as_secs_f64();
        // Let the last announcements drain before reading memory.
        let settled = clients.settle(IDLE_SETTLE).await;
        let rss = loadgen::rss_kib(server.pid()).unwrap();
        let hwm = loadgen::peak_kib(server.pid()).unwrap();
        let frames = clients.frames();
        drop(clients);
        (rss, hwm, frames, settled, joined)
    });
    serde_json::json!({
        "mode": "idle",
        "connections": options.connections,
        "per_room": options.per_room,
        "join_seconds": seconds,
        "frames_after_welcome": frames,
        "settled": settled,
        "rss_start_kib": before,
        "rss_at_n_kib": at_n,
        "hwm_kib": hwm,
        "bytes_per_connection": (at_n.saturating_sub(before) * 1024) as f64 / options.connections as f64,
    })
}

fn storm(options: &Options) -> serde_json::Value {
    let server = Server::start(options, options.connections + 10);
    let rss_start = loadgen::rss_kib(server.pid()).unwrap();
    let mut generator = LoadGen::new(server.addr);
    generator.watch(server.pid());
    let n = options.connections;
    let storm = generator
        .run(generator.storm(n, options.in_flight))
        .unwrap_or_else(|e| panic!("storm of {n}: {e}"));
    let idle = storm.rss_idle_kib as f64;
    serde_json::json!({
        "mode": "storm",
        "n": n,
        "in_flight": options.in_flight,
        "storm_seconds": storm.storm_seconds,
        "frames": storm.frames,
        "bytes": storm.bytes,
        "frames_per_client": storm.frames as f64 / n as f64,
        "bytes_per_client": storm.bytes as f64 / n as f64,
        "settled": storm.settled,
        "lost": storm.lost,
        "rss_start_kib": rss_start,
        "rss_idle_kib": storm.rss_idle_kib,
        "hwm_join_kib": storm.hwm_join_kib,
        "hwm_drop_kib": storm.hwm_drop_kib,
        "hwm_join_over_idle": storm.hwm_join_kib as f64 / idle,
        "hwm_drop_over_idle": storm.hwm_drop_kib as f64 / idle,
        "rss_after_kib": storm.rss_after_kib,
        "drop_seconds": storm.drop_seconds,
    })
}

/// Makes sure this process (and so the server it starts, which inherits the limit) may open a
/// socket for every client: raises its open-file limit with `prlimit` where it is too low
/// (above the hard limit only as root), and fails plainly if it stays too low.
fn check_open_files(options: &Options) {
    let clients = match options.mode.as_str() {
        "idle" | "storm" => options.connections,
        _ => options.receivers + options.senders,
    };
    let needed = clients + 64;
    let limit = || {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))?
            .split_whitespace()
            .skip(3)
            .map(|v| v.parse::<usize>().unwrap_or(usize::MAX))
            .collect::<Vec<_>>();
        Some((*line.first()?, *line.get(1)?))
    };
    let Some((soft, hard)) = limit() else {
        return; // Not Linux: nothing to check.
    };
    if soft >= needed {
        return;
    }
    let _ = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={needed}:{}", hard.max(needed)))
        .status();
    if let Some((soft, _)) = limit().filter(|&(soft, _)| soft < needed) {
        eprintln!("load: {clients} clients need {needed} open files, the limit is {soft}");
        std::process::exit(2);
    }
}

fn fanout(options: &Options, pace: Pace) -> serde_json::Value {
    let server = Server::start(options, options.receivers + options.senders + 10);
    let mut generator = LoadGen::new(server.addr);
    generator.watch(server.pid());
    let result = generator
        .run(generator.fanout(
            options.receivers,
            options.senders,
            Duration::from_secs_f64(options.seconds),
            pace,
        ))
        .unwrap();
    serde_json::json!({
        "mode": options.mode,
        "receivers": result.receivers,
        "senders": result.senders,
        "seconds": result.seconds,
        "sent": result.sent,
        "delivered": result.delivered,
        "deliveries_per_s": result.deliveries_per_s,
        "lost": result.lost,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "server_cpu_ms_per_message": result.server_cpu_ms_per_message,
        "server_rss_kib": loadgen::rss_kib(server.pid()).unwrap(),
    })
}

fn slow(options: &Options) -> serde_json::Value {
    let server = Server::start(options, options.receivers + options.senders + 10);
    let generator = LoadGen::new(server.addr);
    let rss_before = loadgen::rss_kib(server.pid()).unwrap();
    let seconds = Duration::from_secs_f64(options.seconds);
    let (healthy, stalled_dropped, rss_during) = generator.run(async {
        // One client joins and then never reads again.
        let stalled = generator.connect("fanout", "stalled").await.unwrap();
        let result = generator
            .fanout(options.receivers, options.senders, seconds, Pace::Flood)
            .await
            .unwrap();
        let rss = loadgen::rss_kib(server.pid()).unwrap();
        drop(stalled);
        (result, health(server.addr).await, rss)
    });
    serde_json::json!({
        "mode": "slow",
        "receivers": healthy.receivers,
        "senders": healthy.senders,
        "deliveries_per_s": healthy.deliveries_per_s,
        "lost": healthy.lost,
        "p99_ms": healthy.p99_ms,
        "stalled_dropped": stalled_dropped,
        "rss_start_kib": rss_before,
        "rss_end_kib": rss_during,
    })
}

/// The server's `dropped` counter, from `/healthz`.
async fn health(addr: SocketAddr) -> u64 {
    loadgen::healthz(addr).await.unwrap()["dropped"]
        .as_u64()
        .unwrap()
}

/// `fanout` or `latency` with `--boxes N`: the load on one box without Redis and the same on
/// N boxes sharing the room through a Redis of the benchmark's own, each with fresh servers;
/// the one box first if `alone_first`.
fn shared(options: &Options, alone_first: bool) -> serde_json::Value {
    let pace = match options.mode.as_str() {
        "fanout" => Pace::Flood,
        _ => Pace::Rate(options.rate),
    };
    let duration = Duration::from_secs_f64(options.seconds);
    let max_connections = options.receivers + options.senders + 10;
    let alone = || {
        let server = Server::start(options, max_connections);
        let mut generator = LoadGen::new(server.addr);
        generator.watch(server.pid());
        generator
            .run(generator.fanout(options.receivers, options.senders, duration, pace))
            .unwrap()
    };
    let first = alone_first.then(alone);
    let result = across_boxes(options, max_connections, duration, pace);
    let alone = first.unwrap_or_else(alone);
    let (boxes_cpu, redis_cpu) = match result.cpu_ms_per_message_each.split_last() {
        Some((redis, boxes)) => (Some(boxes.iter().sum::<f64>()), Some(*redis)),
        None => (None, None),
    };
    serde_json::json!({
        "mode": options.mode,
        "boxes": options.boxes,
        "receivers": options.receivers,
        "senders": options.senders,
        "alone_first": alone_first,
        "alone_seconds": alone.seconds,
        "alone_messages_per_s": alone.sent as f64 / alone.seconds,
        "alone_deliveries_per_s": alone.deliveries_per_s,
        "alone_lost": alone.lost,
        "alone_p50_ms": alone.p50_ms,
        "alone_p99_ms": alone.p99_ms,
        "alone_max_ms": alone.max_ms,
        "alone_server_cpu_ms_per_message": alone.server_cpu_ms_per_message,
        "seconds": result.seconds,
        "messages_per_s": result.sent as f64 / result.seconds,
        "deliveries_per_s": result.deliveries_per_s,
        "lost": result.lost,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "same_box_receivers": result.same_box.receivers,
        "same_box_delivered": result.same_box.delivered,
        "same_box_p50_ms": result.same_box.p50_ms,
        "same_box_p99_ms": result.same_box.p99_ms,
        "same_box_max_ms": result.same_box.max_ms,
        "cross_box_receivers": result.cross_box.receivers,
        "cross_box_delivered": result.cross_box.delivered,
        "cross_box_p50_ms": result.cross_box.p50_ms,
        "cross_box_p99_ms": result.cross_box.p99_ms,
        "cross_box_max_ms": result.cross_box.max_ms,
        "boxes_cpu_ms_per_message": boxes_cpu,
        "redis_cpu_ms_per_message": redis_cpu,
    })
}

/// The fan-out on `--boxes` fresh servers sharing the room through a fresh Redis, all stopped
/// at the end. CPU time is watched for each box and then Redis.
fn across_boxes(
    options: &Options,
    max_connections: usize,
    duration: Duration,
    pace: Pace,
) -> loadgen::Fanout {
    // Declared first, dropped last: the boxes stop before Redis does.
    let redis = Redis::start(options);
    let url = redis.url();
    let boxes: Vec<Server> = (0..options.boxes)
        .map(|_| Server::start_with(options, max_connections, Some(&url)))
        .collect();
    let mut generator = LoadGen::new(boxes[0].addr);
    for server in &boxes {
        generator.watch(server.pid());
    }
    generator.watch(redis.pid());
    let others: Vec<SocketAddr> = boxes[1..].iter().map(|b| b.addr).collect();
    generator
        .run(generator.fanout_across(&others, options.receivers, options.senders, duration, pace))
        .unwrap()
}
