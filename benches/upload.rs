//! The upload benchmark: what a shared file costs the server's memory while it arrives.
//!
//! ```sh
//! cargo build --release --target x86_64-unknown-linux-musl
//! cargo bench --bench upload -- --runs 3
//! cargo bench --bench upload -- --runs 3 --server target/release/smolchat
//! ```
//! Each run starts the server (`--server PATH`, default the musl release build) on 127.0.0.1
//! with `--threads 2` and a fresh data directory under the system's temporary directory,
//! signs in through `POST /login`, takes a seat in `lobby` over a WebSocket (an upload needs
//! one), and then measures one phase: (a) one 100 MB upload, or (b) ten 10 MB uploads at once,
//! each a raw `POST /files/lobby?name=` body streamed from one fixed buffer. Before the phase
//! the server's peak resident set is reset to what is resident (`5` to
//! `/proc/<pid>/clear_refs`: run it as the server's user); after it, `VmHWM` less that is the
//! phase's growth. Every phase gets a fresh server, so neither warms the other. Prints one line
//! per phase and run, then a table: median of `--runs` (default 3) with the range. Loopback
//! only; every step is bounded, and the data directory is removed after each run.

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smolchat::loadgen;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The binary measured unless `--server` names another: the shipped build.
const DEFAULT_SERVER: &str = "target/x86_64-unknown-linux-musl/release/smolchat";
/// Bytes of one megabyte, as the issue counts them (decimal).
const MB: u64 = 1_000_000;
/// The buffer each upload's body is written from, over and over.
const CHUNK: usize = 64 * 1024;
/// Longest any one step (sign-in, join, one phase) may take.
const STEP: Duration = Duration::from_secs(300);

struct Options {
    server: String,
    runs: usize,
    threads: usize,
}

fn options() -> Result<Options, pico_args::Error> {
    let mut args = pico_args::Arguments::from_env();
    args.contains("--bench"); // cargo bench passes this; nothing to do with it.
    let options = Options {
        server: args
            .opt_value_from_str("--server")?
            .unwrap_or_else(|| DEFAULT_SERVER.into()),
        runs: args.opt_value_from_str("--runs")?.unwrap_or(3),
        threads: args.opt_value_from_str("--threads")?.unwrap_or(2),
    };
    let rest = args.finish();
    if let Some(extra) = rest.first() {
        eprintln!("upload: unknown argument {}", extra.to_string_lossy());
        std::process::exit(2);
    }
    Ok(options)
}

/// One measured phase: `count` uploads of `bytes` each, all at once.
#[derive(Clone, Copy)]
struct Phase {
    label: &'static str,
    count: usize,
    bytes: u64,
}

const PHASES: [Phase; 2] = [
    Phase {
        label: "one 100 MB upload",
        count: 1,
        bytes: 100 * MB,
    },
    Phase {
        label: "ten concurrent 10 MB uploads",
        count: 10,
        bytes: 10 * MB,
    },
];

/// What one phase of one run measured.
struct Measured {
    rss_before_kib: u64,
    hwm_growth_kib: u64,
    rss_after_kib: u64,
    seconds: f64,
}

/// The server under test with its data directory; killed and removed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Server {
    fn start(options: &Options, run: usize) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "smolchat-upload-bench-{}-{run}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary data directory");
        let mut command = Command::new(&options.server);
        command
            .args(["--threads", &options.threads.to_string()])
            .args(["--max-file-bytes", "128MiB", "--files-quota", "1GiB"])
            .arg("--data-dir")
            .arg(&dir);
        let (child, addr) = loadgen::spawn_server(command).unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (cargo build --release --target \
                 x86_64-unknown-linux-musl first)",
                options.server
            )
        });
        Server { child, addr, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails the run if `future` takes longer than [`STEP`].
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    smol::future::or(future, async {
        smol::Timer::after(STEP).await;
        panic!("upload bench: timed out: {what}");
    })
    .await
}

/// Reads one HTTP response to the end (the request asked to close); returns its status and
/// the whole text.
async fn response(mut stream: TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("reading a response");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Signs in as `name` through the form; returns the session cookie (`name=value`).
async fn sign_in(addr: SocketAddr, name: &str) -> String {
    let body = format!("name={name}&passcode=&next=/");
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("sign in");
    let (status, text) = response(stream).await;
    assert_eq!(status, 303, "sign-in refused: {text}");
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap_or("").to_owned())
        })
        .expect("a session cookie")
}

/// Takes a seat in `lobby` with the session; a task reads (and drops) whatever the room sends,
/// as a page would, until the server goes.
async fn take_seat(addr: SocketAddr, cookie: &str) -> smol::Task<()> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use async_tungstenite::tungstenite::Message;
    use futures_util::StreamExt;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/ws/lobby")
        .into_client_request()
        .expect("a WebSocket request");
    request
        .headers_mut()
        .insert("Cookie", cookie.parse().expect("a cookie header"));
    let (mut ws, _) = async_tungstenite::client_async(request, stream)
        .await
        .expect("joining lobby");
    // The welcome says the seat is taken.
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains(r#""type":"welcome""#) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
    smol::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
}

/// One upload of `bytes` bytes, streamed from one buffer; returns the size the server stored.
async fn upload(addr: SocketAddr, cookie: String, name: String, bytes: u64) -> u64 {
    let head = format!(
        "POST /files/lobby?name={name} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
         Content-Length: {bytes}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("a head");
    // Not all one byte, so nothing along the way could make it cheap.
    let chunk: Vec<u8> = (0..CHUNK).map(|n| (n * 7 % 251) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await.expect("the body");
        left -= n as u64;
    }
    let (status, text) = response(stream).await;
    assert_eq!(status, 201, "upload refused: {text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let frame: serde_json::Value = serde_json::from_str(body).expect("the file frame");
    frame["file"]["size"].as_u64().expect("a size")
}

fn measure(options: &Options, run: usize, phase: Phase) -> Measured {
    let server = Server::start(options, run);
    let (addr, pid) = (server.addr, server.pid());
    smol::block_on(async {
        let cookie = bounded("signing in", sign_in(addr, "bench")).await;
        let seat = bounded("taking a seat", take_seat(addr, &cookie)).await;
        loadgen::reset_peak(pid).expect("resetting the server's peak");
        let rss_before_kib = loadgen::rss_kib(pid).unwrap();
        let peak_before_kib = loadgen::peak_kib(pid).unwrap();
        let started = Instant::now();
        let uploads: Vec<_> = (0..phase.count)
            .map(|n| {
                smol::spawn(upload(
                    addr,
                    cookie.clone(),
                    format!("bench-{n}.bin"),
                    phase.bytes,
                ))
            })
            .collect();
        for task in uploads {
            let stored = bounded(phase.label, task).await;
            assert_eq!(stored, phase.bytes, "the stored size");
        }
        let seconds = started.elapsed().as_secs_f64();
        let peak_after_kib = loadgen::peak_kib(pid).unwrap();
        let rss_after_kib = loadgen::rss_kib(pid).unwrap();
        drop(seat);
        Measured {
            rss_before_kib,
            hwm_growth_kib: peak_after_kib.saturating_sub(peak_before_kib),
            rss_after_kib,
            seconds,
        }
    })
}

/// The median and the range of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn main() {
    let options = options().unwrap_or_else(|e| {
        eprintln!("upload: {e}");
        std::process::exit(2);
    });
    assert!(options.runs > 0, "--runs must be at least 1");
    println!(
        "server {} (--threads {}), {} runs",
        options.server, options.threads, options.runs
    );
    let mut table = Vec::new();
    for phase in PHASES {
        let mut results = Vec::new();
        for run in 1..=options.runs {
            let m = measure(&options, run, phase);
            println!(
                "{}, run {run}: VmRSS before {} KiB, VmHWM growth {} KiB, VmRSS after {} KiB, \
                 {:.1} s ({:.0} MB/s)",
                phase.label,
                m.rss_before_kib,
                m.hwm_growth_kib,
                m.rss_after_kib,
                m.seconds,
                (phase.count as u64 * phase.bytes) as f64 / MB as f64 / m.seconds
            );
            results.push(m);
        }
        table.push((phase, results));
    }
    println!();
    println!("| run | VmRSS before | VmHWM growth (median, range) | runs | MB/s (median) |");
    println!("| --- | --- | --- | --- | --- |");
    for (phase, results) in &table {
        let (before, low_before, high_before) =
            spread(results.iter().map(|m| m.rss_before_kib as f64).collect());
        let (growth, low, high) = spread(results.iter().map(|m| m.hwm_growth_kib as f64).collect());
        let (rate, _, _) = spread(
            results
                .iter()
                .map(|m| (phase.count as u64 * phase.bytes) as f64 / MB as f64 / m.seconds)
                .collect(),
        );
        let runs: Vec<String> = results
            .iter()
            .map(|m| m.hwm_growth_kib.to_string())
            .collect();
        println!(
            "| {} | {before:.0} KiB ({low_before:.0}–{high_before:.0}) | **{growth:.0} KiB** \
             ({low:.0}–{high:.0}) | {} KiB | {rate:.0} |",
            phase.label,
            runs.join(", ")
        );
    }
}
