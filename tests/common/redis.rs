//! A real `redis-server` for tests of rooms shared across boxes (Debian's package): each test
//! starts its own on a free loopback port, in a fresh directory, and stops it by PID.
//!
//! Tests talk to Redis (and to sentinels) through redis-rs ([`ask`]) and signal processes
//! directly ([`signal`]), never by spawning `redis-cli` or `kill`: the whole suite also runs
//! under qemu-user, where forking a process that has threads running can hang the child.

use super::*;
use smolchat::config::RedisTarget;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// A `redis-server` of this test's own; stopped (by PID) on drop.
pub struct RedisServer {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: std::path::PathBuf,
    /// Keeps an append-only file (fsynced at every write), so a restart keeps the data.
    pub aof: bool,
}

impl RedisServer {
    /// Starts one without persistence on a free loopback port, in a fresh directory.
    pub fn start(name: &str) -> RedisServer {
        RedisServer::start_with(name, false)
    }

    /// Starts one on a free loopback port, in a fresh directory, with or without the AOF. A
    /// port taken between choosing and binding is retried with another.
    pub fn start_with(name: &str, aof: bool) -> RedisServer {
        let dir = temp_dir(&format!("redis-{name}"));
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(child) = spawn_redis(port, &dir, aof) {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                    aof,
                };
            }
        }
        panic!("redis-server did not start on any of five ports");
    }

    /// Starts one on `port`, which a box may already be trying to reach.
    pub fn start_on(name: &str, port: u16) -> RedisServer {
        let dir = temp_dir(&format!("redis-{name}"));
        let child = spawn_redis(port, &dir, false).expect("redis-server starts on its port");
        RedisServer {
            child: Some(child),
            port,
            dir,
            aof: false,
        }
    }

    /// Kills it (SIGKILL, by PID): a crash, or a machine gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let child = spawn_redis(self.port, &self.dir, self.aof);
        self.child = Some(child.expect("redis-server restarts on its port"));
    }

    /// A box's config pointing at this Redis, keeping `history` messages per room.
    pub fn config(&self, history: usize) -> smolchat::Config {
        smolchat::Config {
            redis: Some(RedisTarget {
                host: "127.0.0.1".into(),
                port: self.port,
                db: 0,
                username: None,
                password: None,
            }),
            history,
            ..config()
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `redis-server` on `port` with its files in `dir`, and waits until its log says it is
/// ready; `None` if it exited first (the port was taken).
pub fn spawn_redis(port: u16, dir: &std::path::Path, aof: bool) -> Option<Child> {
    spawn_redis_with(port, dir, aof, &[])
}

/// [`spawn_redis`] with more options for `redis-server`.
pub fn spawn_redis_with(
    port: u16,
    dir: &std::path::Path,
    aof: bool,
    more: &[&str],
) -> Option<Child> {
    let (port, aof) = (port.to_string(), if aof { "yes" } else { "no" });
    let mut args = vec!["--bind", "127.0.0.1", "--port", &port];
    args.extend(["--save", "", "--appendonly", aof, "--appendfsync", "always"]);
    args.extend(["--daemonize", "no"]);
    args.extend(more);
    args.extend(["--dir", dir.to_str().expect("a UTF-8 temporary directory")]);
    spawn_until(&args, "Ready to accept connections")
}

/// Starts `redis-server` with `args` (a Redis or a sentinel) and waits until its log has a
/// line containing `ready`; `None` if it exited first (its port was taken meanwhile).
pub fn spawn_until(args: &[&str], ready: &str) -> Option<Child> {
    let mut child = spawn_redis_server(args);
    let stdout = child.stdout.take().unwrap();
    let (lines, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match log.recv_timeout(STEP) {
            Ok(line) if line.contains(ready) => return Some(child),
            Ok(_) => continue,
            // Its output ended: it exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server {args:?} did not log '{ready}' within {STEP:?}");
            }
        }
    }
}

/// `/healthz`'s `redis` field (`null` without `--redis`).
pub async fn redis_health(addr: std::net::SocketAddr) -> serde_json::Value {
    let reply = get(addr, "/healthz", &[]).await;
    let health: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    health["redis"].clone()
}

/// Polls `/healthz` (bounded) until it says `redis` is `state`.
pub async fn until_redis_is(addr: std::net::SocketAddr, state: &str) {
    within(&format!("/healthz saying redis {state}"), async {
        while redis_health(addr).await != state {
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Sends `{"text": text, "key": key}`.
pub async fn say_keyed(ws: &mut Ws, text: &str, key: &str) {
    use async_tungstenite::tungstenite::Message;
    let frame = serde_json::json!({ "text": text, "key": key }).to_string();
    ws.send(Message::text(frame)).await.expect("send");
}

/// Spawns `redis-server` with `args`, its output piped. Under qemu-user a fork from this
/// threaded process can hang in the emulator before the child runs `redis-server` (seen on the
/// ARMv6 target), and `spawn` waits for that forever; so the spawn runs on a thread of its own,
/// and one that has not returned within [`STEP`] is left behind and tried once more.
fn spawn_redis_server(args: &[&str]) -> Child {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    for attempt in 1..=2 {
        let (done, spawned) = mpsc::channel();
        let args = args.clone();
        std::thread::spawn(move || {
            let child = Command::new("redis-server")
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let _ = done.send(child);
        });
        match spawned.recv_timeout(STEP) {
            Ok(child) => {
                return child.expect(
                    "redis-server must be installed (Debian: apt-get install redis-server)",
                )
            }
            Err(_) => eprintln!(
                "spawning redis-server did not return within {STEP:?} (attempt {attempt})"
            ),
        }
    }
    panic!("redis-server could not be spawned");
}

/// Sends one command to the Redis (or sentinel) on `port`, each step bounded by [`STEP`]; its
/// answer as lines (arrays flattened, as `redis-cli` prints them), or `None` if it could not be
/// asked or answered with an error.
pub fn ask(port: u16, args: &[&str]) -> Option<String> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut connection = client.get_connection_with_timeout(STEP).ok()?;
    connection.set_read_timeout(Some(STEP)).ok()?;
    connection.set_write_timeout(Some(STEP)).ok()?;
    let (name, rest) = args.split_first()?;
    let mut command = ::redis::cmd(name);
    for arg in rest {
        command.arg(*arg);
    }
    let answer: ::redis::Value = command.query(&mut connection).ok()?;
    let mut lines = String::new();
    flatten(&answer, &mut lines);
    Some(lines)
}

/// `value` as lines of text, one per scalar.
fn flatten(value: &::redis::Value, lines: &mut String) {
    use ::redis::Value;
    match value {
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            items.iter().for_each(|item| flatten(item, lines))
        }
        Value::Map(pairs) => {
            for (key, value) in pairs {
                flatten(key, lines);
                flatten(value, lines);
            }
        }
        Value::BulkString(bytes) => {
            lines.push_str(&String::from_utf8_lossy(bytes));
            lines.push('\n');
        }
        Value::SimpleString(text) => {
            lines.push_str(text);
            lines.push('\n');
        }
        Value::Int(n) => lines.push_str(&format!("{n}\n")),
        Value::Okay => lines.push_str("OK\n"),
        Value::Nil => lines.push('\n'),
        other => lines.push_str(&format!("{other:?}\n")),
    }
}

/// Sends `signal` to `child` (stopping or continuing a Redis, say).
pub fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, signal).expect("the process is ours to signal");
}
