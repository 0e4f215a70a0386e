//! A Redis failover under a chat (`--redis redis+sentinel://...`): real `redis-server`
//! processes (Debian's package) on free loopback ports, a primary, two replicas and a sentinel,
//! all stopped by PID at the end. Two boxes chat through them, the primary is killed mid-chat,
//! the sentinel promotes a replica, and nothing a sender was told was sent is lost: the boxes
//! find the new primary by asking the sentinel, every confirmed message is in history on both
//! boxes and in Redis, ids go on without a gap or a duplicate, and a post refused meanwhile and
//! sent again with its key shows once.

// A build without the `redis` feature (the routers') refuses `--redis`: nothing to test here.
#![cfg(feature = "redis")]

mod common;

use common::redis::*;
use common::*;
use rustix::process::Signal;
use smolchat::config::{RedisTarget, Sentinels};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

/// The name the sentinel monitors the primary under.
const MASTER: &str = "mymaster";

/// A `redis-server` of this test's own, as a Redis or as a sentinel; killed (by PID) on drop.
struct Process {
    child: Option<Child>,
    port: u16,
}

impl Process {
    /// Kills it (SIGKILL): a crash, or a machine gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free now on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a Redis without persistence in `dir` (a replica of `primary` if given) on a free
/// port, retrying with another if the port was taken between choosing and binding.
fn redis(dir: &Path, primary: Option<u16>) -> Process {
    for _ in 0..5 {
        let port = free_port();
        let port_text = port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--port", &port_text];
        args.extend(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        args.extend(["--dir", dir.to_str().unwrap()]);
        let primary_text = primary.map(|p| p.to_string());
        if let Some(primary) = &primary_text {
            args.extend(["--replicaof", "127.0.0.1", primary]);
        }
        if let Some(child) = spawn_until(&args, "Ready to accept connections") {
            return Process {
                child: Some(child),
                port,
            };
        }
    }
    panic!("redis-server did not start on any of five ports");
}

/// Starts a sentinel monitoring the primary on `primary` (quorum 1, down after 1 s), with its
/// config file (which it rewrites) in `dir`.
fn sentinel(dir: &Path, primary: u16) -> Process {
    for _ in 0..5 {
        let port = free_port();
        let config = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 5000\n",
            dir = dir.display()
        );
        std::fs::write(&config, text).unwrap();
        let args = [config.to_str().unwrap(), "--sentinel"];
        if let Some(child) = spawn_until(&args, "+monitor master") {
            return Process {
                child: Some(child),
                port,
            };
        }
    }
    panic!("the sentinel did not start on any of five ports");
}

/// Polls (bounded by [`STEP`]) until `done` holds; `what` names it in the failure.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < STEP, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port of the primary the sentinel names now.
fn named_primary(sentinel: &Process) -> Option<u16> {
    let answer = ask(
        sentinel.port,
        &["SENTINEL", "get-master-addr-by-name", MASTER],
    )?;
    answer.lines().nth(1)?.trim().parse().ok()
}

/// A box's config: Redis through the sentinel.
fn config_through(sentinel: &Process) -> smolchat::Config {
    smolchat::Config {
        redis: Some(RedisTarget {
            host: "127.0.0.1".into(),
            port: sentinel.port,
            db: 0,
            username: None,
            password: None,
        }),
        redis_sentinels: Some(Sentinels {
            at: vec![("127.0.0.1".into(), sentinel.port)],
            master: MASTER.into(),
        }),
        history: 200,
        ..config()
    }
}

/// What became of a post.
#[derive(Debug, PartialEq)]
enum Fate {
    /// It came back with this id: the sender was told it was sent.
    Sent(u64),
    /// Refused (`unavailable`): not sent.
    Refused,
}

/// Posts `text` with `key` and reads until it comes back or is refused; other frames (others'
/// messages, presence, `shared`) are skipped, and others' messages collected in `heard`.
async fn post(ws: &mut Ws, text: &str, key: &str, heard: &mut Vec<(u64, String)>) -> Fate {
    say_keyed(ws, text, key).await;
    loop {
        let frame = next_json(ws).await;
        match frame["type"].as_str() {
            Some("message") if frame["key"] == key => {
                let id = frame["id"].as_u64().expect("a message has an id");
                heard.push((id, text.to_owned()));
                return Fate::Sent(id);
            }
            Some("message") => heard.push((
                frame["id"].as_u64().unwrap(),
                frame["text"].as_str().unwrap().to_owned(),
            )),
            Some("error") if frame["key"] == key => {
                assert_eq!(frame["code"], "unavailable", "{frame}");
                return Fate::Refused;
            }
            _ => {}
        }
    }
}

/// Reads chat messages until `ws` has heard `id`; collects them into `heard`.
async fn hear_until(ws: &mut Ws, id: u64, heard: &mut Vec<(u64, String)>) {
    while heard.last().is_none_or(|(last, _)| *last < id) {
        let message = next_message(ws).await;
        heard.push((
            message["id"].as_u64().unwrap(),
            message["text"].as_str().unwrap().to_owned(),
        ));
    }
}

/// The room's history as a newcomer on `addr` gets it (`?since=0`): ids and texts.
async fn history(addr: std::net::SocketAddr, name: &str) -> Vec<(u64, String)> {
    let mut ws = ws(addr, &format!("/ws/lobby?name={name}&since=0")).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["complete"], true, "{welcome}");
    let mut kept = Vec::new();
    loop {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("message") => kept.push((
                frame["id"].as_u64().unwrap(),
                frame["text"].as_str().unwrap().to_owned(),
            )),
            Some("join") if frame["name"] == name => return kept,
            other => panic!("unexpected {other:?} before the own join"),
        }
    }
}

/// A fresh directory for one process of this test.
fn dir(name: &str) -> PathBuf {
    temp_dir(&format!("failover-{name}"))
}

/// A primary, its replicas and a sentinel watching them, every replica in sync and known to
/// the sentinel.
struct Cluster {
    primary: Process,
    replicas: Vec<Process>,
    sentinel: Process,
}

impl Cluster {
    fn start(name: &str, replicas: usize) -> Cluster {
        let primary = redis(&dir(&format!("{name}-primary")), None);
        let replicas: Vec<Process> = (1..=replicas)
            .map(|n| redis(&dir(&format!("{name}-replica-{n}")), Some(primary.port)))
            .collect();
        // The replicas in sync before the sentinel looks: it learns them from the primary.
        until("the replicas in sync", || {
            replicas.iter().all(|replica| {
                ask(replica.port, &["INFO", "replication"])
                    .is_some_and(|info| info.contains("master_link_status:up"))
            })
        });
        let sentinel = sentinel(&dir(&format!("{name}-sentinel")), primary.port);
        until("the sentinel knowing the replicas", || {
            ask(sentinel.port, &["SENTINEL", "replicas", MASTER]).is_some_and(|text| {
                text.lines().filter(|l| l.trim() == "slave").count() == replicas.len()
            })
        });
        assert_eq!(named_primary(&sentinel), Some(primary.port));
        Cluster {
            primary,
            replicas,
            sentinel,
        }
    }
}

/// Posts until it is sent, sending it again with its key after each refusal, as the page
/// does; returns its id and how many times it was refused.
async fn post_until_sent(
    ws: &mut Ws,
    text: &str,
    key: &str,
    heard: &mut Vec<(u64, String)>,
) -> (u64, usize) {
    let mut refused = 0;
    within(&format!("{text} sent at last"), async {
        loop {
            match post(ws, text, key, heard).await {
                Fate::Sent(id) => return (id, refused),
                Fate::Refused => {
                    refused += 1;
                    // The page's pause before it sends again: pacing, not a wait for
                    // anything in particular.
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
}

/// The tests here time a failover against its clocks (the sentinel's 1 s down-after, a
/// replica's 1 s `WAIT`). Side by side on a small or emulated machine, each slows the other
/// past them; they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the machine for one test (a failed test before it does not poison it for the next).
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_failover_loses_nothing_a_sender_was_told_was_sent() {
    let _alone = alone();
    let Cluster {
        mut primary,
        replicas,
        sentinel,
    } = Cluster::start("failover", 2);

    let a = start(config_through(&sentinel));
    let b = start(config_through(&sentinel));
    smol::block_on(async {
        until_redis_is(a.addr, "up").await;
        until_redis_is(b.addr, "up").await;
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
        // Every message its sender was told was sent: (id, text).
        let mut sent = Vec::new();

        // Chat across the boxes.
        for n in 1..=3 {
            for (ws, who, heard) in [(&mut ann, "ann", &mut on_a), (&mut bob, "bob", &mut on_b)] {
                let text = format!("{who} {n}");
                match post(ws, &text, &format!("k-{who}-{n}"), heard).await {
                    Fate::Sent(id) => sent.push((id, text)),
                    Fate::Refused => panic!("{text} refused with the primary up"),
                }
            }
        }

        // Mid-chat, the primary dies. Ann goes on posting as the page does: a post refused
        // is sent again with its key (after a moment), until it is sent.
        let before = sent.last().unwrap().0;
        primary.kill();
        let mut refused = 0;
        for n in 4..=8 {
            let text = format!("ann {n}");
            let (id, times) =
                post_until_sent(&mut ann, &text, &format!("k-ann-{n}"), &mut on_a).await;
            refused += times;
            sent.push((id, text));
        }
        assert!(
            refused > 0,
            "a post right after the primary died should have been refused"
        );
        let promoted = named_primary(&sentinel).expect("the sentinel names a primary");
        assert_ne!(promoted, primary.port, "the sentinel promoted a replica");
        assert!(replicas.iter().any(|replica| replica.port == promoted));

        // Bob, on the other box, writes on the new primary too.
        match post(&mut bob, "bob 4", "k-bob-4", &mut on_b).await {
            Fate::Sent(id) => sent.push((id, "bob 4".to_owned())),
            Fate::Refused => panic!("bob's post refused after the failover"),
        }
        until_redis_is(a.addr, "up").await;
        until_redis_is(b.addr, "up").await;

        // Ids go on without a gap or a duplicate, each message once.
        let last = sent.iter().map(|(id, _)| *id).max().unwrap();
        let mut ids: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=last).collect::<Vec<_>>(), "sent: {sent:?}");
        sent.sort_unstable();

        // Both boxes delivered every one live, in id order, once.
        hear_until(&mut ann, last, &mut on_a).await;
        hear_until(&mut bob, last, &mut on_b).await;
        assert_eq!(on_a, sent, "live on box A");
        assert_eq!(on_b, sent, "live on box B");

        // And they are in history on both boxes, and on a box that starts the room now and
        // reads it from the new primary; a catch-up by `since` from before the failover gets
        // exactly the rest.
        assert_eq!(history(a.addr, "carl").await, sent, "history on box A");
        assert_eq!(history(b.addr, "dora").await, sent, "history on box B");
        let c = start(config_through(&sentinel));
        until_redis_is(c.addr, "up").await;
        assert_eq!(history(c.addr, "eve").await, sent, "history from Redis");
        let mut fred = ws(a.addr, &format!("/ws/lobby?name=fred&since={before}")).await;
        assert_eq!(next_json(&mut fred).await["complete"], true);
        let mut replayed = Vec::new();
        loop {
            let frame = next_json(&mut fred).await;
            match frame["type"].as_str() {
                Some("message") => replayed.push(frame["id"].as_u64().unwrap()),
                Some("join") => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(replayed, (before + 1..=last).collect::<Vec<_>>());
    });
}

#[test]
fn a_post_no_replica_acknowledges_is_refused_then_sent_once() {
    let _alone = alone();
    let cluster = Cluster::start("unacknowledged", 1);
    let a = start(config_through(&cluster.sentinel));
    let b = start(config_through(&cluster.sentinel));
    smol::block_on(async {
        until_redis_is(a.addr, "up").await;
        until_redis_is(b.addr, "up").await;
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
        assert_eq!(post(&mut ann, "one", "k1", &mut on_a).await, Fate::Sent(1));

        // The replica stops: the primary keeps the post, but no replica acknowledges it
        // within the wait, so a failover now could lose it. Ann is told it was not sent.
        let replica = cluster.replicas[0].child.as_ref().expect("running");
        signal(replica, Signal::STOP);
        assert_eq!(post(&mut ann, "two", "k2", &mut on_a).await, Fate::Refused);
        signal(replica, Signal::CONT);
        // Sent again with its key: the primary had it, so it keeps its id and shows once.
        let (id, _) = post_until_sent(&mut ann, "two", "k2", &mut on_a).await;
        assert_eq!(id, 2);
        assert_eq!(
            post(&mut bob, "three", "k3", &mut on_b).await,
            Fate::Sent(3)
        );

        let sent: Vec<(u64, String)> = [(1, "one"), (2, "two"), (3, "three")]
            .map(|(id, text)| (id, text.to_owned()))
            .into();
        hear_until(&mut ann, 3, &mut on_a).await;
        assert_eq!(on_a, sent, "live on box A");
        assert_eq!(on_b, sent, "live on box B");
        assert_eq!(history(b.addr, "carl").await, sent);
    });
}
