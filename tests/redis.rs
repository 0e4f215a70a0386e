//! Rooms shared over Redis (`--redis`): several servers against one real `redis-server`
//! (Debian's package; each test starts its own on a free loopback port, without persistence,
//! and stops it by PID). Cross-box delivery and order, ids without gaps under concurrent
//! posting, catch-up by `since` on another box, presence across boxes (names, joins and
//! leaves, a box that dies), a Redis restart, and `/healthz`.

// A build without the `redis` feature (the routers') refuses `--redis`: nothing to test here.
#![cfg(feature = "redis")]

mod common;

use common::redis::*;
use common::*;
use smolchat::config::RedisTarget;

/// Reads `n` chat messages; returns each one's id and text.
async fn messages(ws: &mut Ws, n: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let message = next_message(ws).await;
        let id = message["id"].as_u64().expect("a message has an id");
        seen.push((id, message["text"].as_str().unwrap().to_owned()));
    }
    seen
}

/// Joins `room` as `name` with `?since=`; returns the welcome, the replayed ids and the socket.
async fn join_since(
    addr: std::net::SocketAddr,
    room: &str,
    name: &str,
    since: u64,
) -> (serde_json::Value, Vec<u64>, Ws) {
    let mut ws = ws(addr, &format!("/ws/{room}?name={name}&since={since}")).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let mut ids = Vec::new();
    loop {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("message") => ids.push(frame["id"].as_u64().unwrap()),
            Some("join") if frame["name"] == name => return (welcome, ids, ws),
            other => panic!("unexpected {other:?} before the own join"),
        }
    }
}

/// A Redis of this test's own (named `name`, with the AOF if `aof`) and two boxes on it,
/// keeping `history` messages per room.
fn two_boxes_with(name: &str, history: usize, aof: bool) -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start_with(name, aof);
    let (a, b) = (start(redis.config(history)), start(redis.config(history)));
    (redis, a, b)
}

/// [`two_boxes_with`], without the AOF.
fn two_boxes(name: &str, history: usize) -> (RedisServer, TestServer, TestServer) {
    two_boxes_with(name, history, false)
}

#[test]
fn a_message_on_one_box_reaches_the_other_in_one_order() {
    let (_redis, a, b) = two_boxes("order", 200);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;

        say(&mut ann, "hello from a").await;
        let on_b = messages(&mut bob, 1).await;
        assert_eq!(on_b, [(1, "hello from a".to_owned())]);
        // The sender's own box delivers it only with its Redis id, like everyone else.
        assert_eq!(messages(&mut ann, 1).await, on_b);

        // Both write at once, interleaving across the boxes.
        fn texts(who: &str) -> Vec<String> {
            (1..=15).map(|n| format!("{who} {n}")).collect()
        }
        let (mut ann, mut bob) = within("both sending", async {
            let send_a = async {
                for text in texts("ann") {
                    say(&mut ann, &text).await;
                }
                ann
            };
            let send_b = async {
                for text in texts("bob") {
                    say(&mut bob, &text).await;
                }
                bob
            };
            smol::future::zip(send_a, send_b).await
        })
        .await;
        let seen_a = messages(&mut ann, 30).await;
        let seen_b = messages(&mut bob, 30).await;
        assert_eq!(seen_a, seen_b, "both boxes show one order");
        let ids: Vec<u64> = seen_a.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (2..=31).collect::<Vec<_>>(), "ids without gaps");
        for who in ["ann", "bob"] {
            let theirs: Vec<&str> = seen_a
                .iter()
                .map(|(_, text)| text.as_str())
                .filter(|text| text.starts_with(who))
                .collect();
            assert_eq!(theirs, texts(who), "{who}'s messages keep their order");
        }
    });
}

#[test]
fn ids_have_no_gaps_when_three_boxes_post_at_once() {
    const EACH: usize = 40;
    let redis = RedisServer::start("gaps");
    let boxes: Vec<TestServer> = (0..3).map(|_| start(redis.config(500))).collect();
    smol::block_on(async {
        // A writer and a reader on every box.
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for (n, server) in boxes.iter().enumerate() {
            readers.push(join(server.addr, "busy", &format!("reader{n}")).await);
            writers.push(join(server.addr, "busy", &format!("writer{n}")).await);
        }
        let sending = writers.into_iter().enumerate().map(|(n, mut ws)| {
            smol::spawn(async move {
                for m in 0..EACH {
                    say(&mut ws, &format!("w{n} m{m}")).await;
                }
                ws
            })
        });
        let sending: Vec<_> = sending.collect();
        let mut seen = Vec::new();
        for reader in &mut readers {
            seen.push(messages(reader, 3 * EACH).await);
        }
        for task in sending {
            within("writers finishing", task).await;
        }
        let ids: Vec<u64> = seen[0].iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=3 * EACH as u64).collect::<Vec<_>>());
        assert_eq!(seen[0], seen[1], "box 0 and box 1 agree");
        assert_eq!(seen[0], seen[2], "box 0 and box 2 agree");
    });
}

#[test]
fn a_phone_catches_up_by_since_on_another_box() {
    let (redis, a, b) = two_boxes("since", 200);
    let c = start(redis.config(200));
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        for n in 1..=4 {
            say(&mut ann, &format!("before {n}")).await;
        }
        let seen = messages(&mut bob, 4).await;
        let last_seen = seen.last().unwrap().0;
        bob.close(None).await.unwrap();
        for n in 1..=3 {
            say(&mut ann, &format!("while away {n}")).await;
        }
        let said = messages(&mut ann, 7).await;

        // Back on box A, which has the room running.
        let (welcome, replayed, _bob) = join_since(a.addr, "lobby", "bob", last_seen).await;
        assert_eq!(
            (welcome["last_id"].as_u64(), &welcome["complete"]),
            (Some(7), &true.into())
        );
        assert_eq!(replayed, [5, 6, 7]);

        // And on box C, where the room starts now and reads its history from Redis.
        let (welcome, replayed, mut carl) = join_since(c.addr, "lobby", "carl", last_seen).await;
        assert_eq!(
            (welcome["last_id"].as_u64(), &welcome["complete"]),
            (Some(7), &true.into())
        );
        assert_eq!(replayed, [5, 6, 7]);
        // C is live too: what it hears continues the same numbering.
        say(&mut carl, "from c").await;
        assert_eq!(messages(&mut ann, 1).await, [(8, "from c".to_owned())]);
        assert_eq!(said.len(), 7);
    });
}

#[test]
fn catching_up_past_what_redis_keeps_is_incomplete() {
    let (_redis, a, b) = two_boxes("trimmed", 5);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        for n in 1..=8 {
            say(&mut ann, &format!("m{n}")).await;
        }
        messages(&mut ann, 8).await;
        // Box B starts the room now: Redis keeps the last five (4..=8).
        let (welcome, replayed, _bob) = join_since(b.addr, "lobby", "bob", 1).await;
        assert_eq!(welcome["last_id"], 8);
        assert_eq!(welcome["complete"], false);
        assert_eq!(replayed, [4, 5, 6, 7, 8]);
        let (welcome, replayed, _cy) = join_since(b.addr, "lobby", "cy", 3).await;
        assert_eq!(welcome["complete"], true);
        assert_eq!(replayed, [4, 5, 6, 7, 8]);
    });
}

/// Runs one command against `redis` (see [`ask`]); returns its answer.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    ask(redis.port, args).unwrap_or_else(|| panic!("Redis refused {args:?}"))
}

/// Keeps message `id` in `room`'s stream as the posting script would, but without publishing
/// it: what a box that missed the publish must find in the stream.
fn keep_unpublished(redis: &RedisServer, room: &str, id: u64, text: &str) {
    let frame = serde_json::json!({
        "type": "message", "id": id, "room": room, "name": "ghost",
        "text": text, "when": "2026-12-04T12:00:00.000Z",
    });
    redis_cli(
        redis,
        &["SET", &format!("smolchat:room:{room}:id"), &id.to_string()],
    );
    let stream = format!("smolchat:room:{room}:log");
    let entry = format!("{id}-0");
    let frame = frame.to_string();
    let args = [
        "XADD", &stream, "MAXLEN", "=", "200", &entry, "p", "7", "f", &frame,
    ];
    redis_cli(redis, &args);
}

#[test]
fn a_missed_publish_is_read_from_the_stream_in_order() {
    let (redis, a, b) = two_boxes("missed", 200);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        say(&mut ann, "one").await;
        assert_eq!(messages(&mut bob, 1).await, [(1, "one".to_owned())]);
        messages(&mut ann, 1).await;

        keep_unpublished(&redis, "lobby", 2, "never published");
        // The next published id is 3: both boxes see the gap and fill it first.
        say(&mut bob, "three").await;
        let expected = [(2, "never published".to_owned()), (3, "three".to_owned())];
        assert_eq!(messages(&mut ann, 2).await, expected);
        assert_eq!(messages(&mut bob, 2).await, expected);
    });
}

#[test]
fn after_a_lost_subscription_each_box_reads_what_it_missed() {
    let (redis, a, b) = two_boxes("resubscribe", 200);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        say(&mut ann, "one").await;
        assert_eq!(messages(&mut bob, 1).await, [(1, "one".to_owned())]);
        messages(&mut ann, 1).await;

        // Said while the boxes' subscriptions are about to drop: nobody hears it published.
        keep_unpublished(&redis, "lobby", 2, "while away");
        redis_cli(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        // On connecting again, each box reads the stream after its last id.
        let expected = [(2, "while away".to_owned())];
        assert_eq!(messages(&mut ann, 1).await, expected);
        assert_eq!(messages(&mut bob, 1).await, expected);
        say(&mut bob, "three").await;
        assert_eq!(messages(&mut ann, 1).await, [(3, "three".to_owned())]);
    });
}

/// The next `shared` frame's `up` (skipping anything else).
async fn next_shared(ws: &mut Ws) -> bool {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "shared" {
            return frame["up"].as_bool().expect("up is true or false");
        }
    }
}

#[test]
fn a_redis_restart_refuses_posts_meanwhile_then_goes_on() {
    let (mut redis, a, b) = two_boxes_with("restart", 200, true);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        say(&mut ann, "before").await;
        assert_eq!(messages(&mut bob, 1).await, [(1, "before".to_owned())]);
        assert_eq!(messages(&mut ann, 1).await, [(1, "before".to_owned())]);

        redis.kill();
        // Every member is told, so the page can hold its composer shut.
        for member in [&mut ann, &mut bob] {
            assert!(!next_shared(member).await);
        }
        assert_eq!(redis_health(a.addr).await, "down");
        // Not dropped silently: a message sent anyway is refused, and the sender told.
        say(&mut ann, "while down").await;
        let refused = next_json(&mut ann).await;
        assert_eq!(
            (&refused["type"], &refused["code"]),
            (&"error".into(), &"unavailable".into()),
            "{refused}"
        );
        // A newcomer hears it after the welcome.
        let carl = ws(a.addr, "/ws/lobby?name=carl").await;
        let mut carl = expect_welcome(carl, "carl").await;
        assert!(!next_shared(&mut carl).await);

        redis.restart();
        for member in [&mut ann, &mut bob, &mut carl] {
            assert!(next_shared(member).await);
        }
        until_redis_is(b.addr, "up").await;
        // Ids go on from the AOF; members stayed connected and hear what comes next.
        say(&mut ann, "after").await;
        assert_eq!(messages(&mut bob, 1).await, [(2, "after".to_owned())]);
        assert_eq!(messages(&mut ann, 1).await, [(2, "after".to_owned())]);
        say(&mut bob, "and back").await;
        assert_eq!(messages(&mut ann, 1).await, [(3, "and back".to_owned())]);
    });
}

#[test]
fn a_box_started_before_its_redis_lets_people_in_and_goes_on_once_it_is_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut config = config();
    config.redis = Some(RedisTarget {
        host: "127.0.0.1".into(),
        port,
        db: 0,
        username: None,
        password: None,
    });
    let a = start(config);
    smol::block_on(async {
        assert_eq!(redis_health(a.addr).await, "down");
        // The room waits a moment for a history that cannot come, then lets ann in.
        let mut ann = join(a.addr, "lobby", "ann").await;
        assert!(!next_shared(&mut ann).await);
        say(&mut ann, "too early").await;
        assert_eq!(next_json(&mut ann).await["code"], "unavailable");

        let _redis = RedisServer::start_on("late", port);
        assert!(next_shared(&mut ann).await);
        // The box may still be connecting its posting side: a post refused meanwhile is told
        // (`unavailable`), and the page sends it again with its key, as here. Nothing is
        // silently lost: a post neither refused nor delivered fails the wait.
        let mut refused = 0;
        let heard = loop {
            say_keyed(&mut ann, "now", "k-now").await;
            let answer = loop {
                let frame = next_json(&mut ann).await;
                if frame["type"] == "message" || frame["type"] == "error" {
                    break frame;
                }
            };
            if answer["type"] == "message" {
                break answer;
            }
            assert_eq!(answer["code"], "unavailable", "{answer}");
            refused += 1;
            assert!(
                refused < 20,
                "posts still refused with Redis back: {answer}"
            );
        };
        assert_eq!(
            (heard["id"].as_u64(), heard["text"].as_str()),
            (Some(1), Some("now"))
        );
    });
}

/// Reads `n` chat messages; returns each one's id, text and key.
async fn keyed_messages(ws: &mut Ws, n: usize) -> Vec<(u64, String, String)> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let m = next_message(ws).await;
        seen.push((
            m["id"].as_u64().unwrap(),
            m["text"].as_str().unwrap().to_owned(),
            m["key"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    seen
}

#[test]
fn a_message_sent_again_with_its_key_is_kept_once() {
    let (_redis, a, b) = two_boxes("keys", 200);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        say_keyed(&mut ann, "once", "k1").await;
        say_keyed(&mut ann, "once", "k1").await;
        say_keyed(&mut ann, "next", "k2").await;
        let expected = vec![
            (1, "once".to_owned(), "k1".to_owned()),
            (2, "next".to_owned(), "k2".to_owned()),
        ];
        assert_eq!(keyed_messages(&mut bob, 2).await, expected);
        assert_eq!(keyed_messages(&mut ann, 2).await, expected);
    });
}

/// A TCP proxy in front of Redis that can stop passing Redis's answers on (dropping them):
/// commands still arrive and run, their answers are lost, as when a network fails just so.
struct AnswerCutter {
    port: u16,
    answers: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AnswerCutter {
    fn start(redis: &RedisServer) -> AnswerCutter {
        AnswerCutter::start_on(redis, 0)
    }

    /// One listening on `port` (0: any free one).
    fn start_on(redis: &RedisServer, port: u16) -> AnswerCutter {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = Arc::new(AtomicBool::new(true));
        let upstream = redis.port;
        let flowing = answers.clone();
        // Threads end when either side closes; the accepting one with the test process.
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(std::net::Shutdown::Both);
                });
                let flowing = flowing.clone();
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buffer = [0u8; 4096];
                    while let Ok(n @ 1..) = from_server.read(&mut buffer) {
                        if flowing.load(Ordering::SeqCst)
                            && to_client.write_all(&buffer[..n]).is_err()
                        {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        AnswerCutter { port, answers }
    }

    fn pass_answers(&self, pass: bool) {
        self.answers
            .store(pass, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_post_kept_although_its_answer_was_lost_is_not_shown_twice() {
    let redis = RedisServer::start("answer-lost");
    let cutter = AnswerCutter::start(&redis);
    let mut config = redis.config(200);
    config.redis.as_mut().unwrap().port = cutter.port;
    let a = start(config);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        say_keyed(&mut ann, "first", "k0").await;
        assert_eq!(keyed_messages(&mut ann, 1).await[0].0, 1);

        cutter.pass_answers(false);
        say_keyed(&mut ann, "once", "k1").await;
        // Redis kept it, but the box never heard back: it tells ann it was not sent.
        let refused = loop {
            let frame = next_json(&mut ann).await;
            if frame["type"] == "error" {
                break frame;
            }
        };
        assert_eq!(
            (&refused["code"], &refused["key"]),
            (&"unavailable".into(), &"k1".into()),
            "{refused}"
        );
        cutter.pass_answers(true);
        // So the page sends it again, with its key.
        say_keyed(&mut ann, "once", "k1").await;
        say_keyed(&mut ann, "next", "k2").await;
        let expected = [
            (2, "once".to_owned(), "k1".to_owned()),
            (3, "next".to_owned(), "k2".to_owned()),
        ];
        assert_eq!(keyed_messages(&mut ann, 2).await, expected);
    });
}

#[test]
fn a_post_redis_does_not_answer_in_time_is_refused_with_its_key() {
    let redis = RedisServer::start("lost-answer");
    let a = start(redis.config(200));
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        // Redis takes writes but answers none until it is told to go on: longer than a post
        // waits (2 s), however slow this machine.
        redis_cli(&redis, &["CLIENT", "PAUSE", "600000", "WRITE"]);
        say_keyed(&mut ann, "once", "k1").await;
        let refused = next_json(&mut ann).await;
        assert_eq!(
            (&refused["code"], &refused["key"]),
            (&"unavailable".into(), &"k1".into()),
            "{refused}"
        );
        redis_cli(&redis, &["CLIENT", "UNPAUSE"]);
        // The page sends it again with its key; Redis may have kept the first as well.
        say_keyed(&mut ann, "once", "k1").await;
        say_keyed(&mut ann, "next", "k2").await;
        let seen = keyed_messages(&mut ann, 2).await;
        assert_eq!(
            seen,
            [
                (1, "once".to_owned(), "k1".to_owned()),
                (2, "next".to_owned(), "k2".to_owned())
            ]
        );
    });
}

#[test]
fn ids_go_on_when_redis_loses_its_data() {
    let mut redis = RedisServer::start("amnesia");
    let a = start(redis.config(200));
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        for text in ["one", "two"] {
            say(&mut ann, text).await;
        }
        messages(&mut ann, 2).await;
        redis.kill();
        until_redis_is(a.addr, "down").await;
        redis.restart(); // Without persistence: empty.
        until_redis_is(a.addr, "up").await;
        say(&mut ann, "three").await;
        assert_eq!(messages(&mut ann, 1).await, [(3, "three".to_owned())]);
    });
}

/// The next `join` or `leave` frame (skipping anything else).
async fn next_presence(ws: &mut Ws) -> serde_json::Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "join" || frame["type"] == "leave" {
            return frame;
        }
    }
}

#[test]
fn presence_spans_the_boxes() {
    let (_redis, a, b) = two_boxes("presence", 200);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = ws(b.addr, "/ws/lobby?name=bob").await;
        let welcome = next_json(&mut bob).await;
        assert_eq!(welcome["people"], 2, "{welcome}");
        assert_eq!(welcome["members"], serde_json::json!(["ann", "bob"]));
        let mut bob = expect_welcome_rest(bob, "bob").await;

        let came = next_presence(&mut ann).await;
        assert_eq!(
            (&came["type"], &came["name"], &came["people"]),
            (&"join".into(), &"bob".into(), &2.into())
        );

        // A third person, on box A: both boxes hear of it.
        let carl = ws(a.addr, "/ws/lobby?name=carl").await;
        let _carl = expect_welcome(carl, "carl").await;
        for member in [&mut ann, &mut bob] {
            let came = next_presence(member).await;
            assert_eq!(
                (&came["name"], &came["people"]),
                (&"carl".into(), &3.into())
            );
        }

        bob.close(None).await.unwrap();
        let went = next_presence(&mut ann).await;
        assert_eq!(
            (&went["type"], &went["name"], &went["people"]),
            (&"leave".into(), &"bob".into(), &2.into())
        );
    });
}

/// [`expect_welcome`] after the welcome was read: history, then the client's own join.
async fn expect_welcome_rest(mut ws: Ws, name: &str) -> Ws {
    loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "join" && frame["name"] == name {
            return ws;
        }
        assert_eq!(frame["type"], "message", "unexpected {frame}");
    }
}

#[test]
fn a_name_is_one_persons_across_boxes() {
    let (_redis, a, b) = two_boxes("names", 200);
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut watcher = join(b.addr, "lobby", "watcher").await;
        // Another person (each ?name= connection is one) may not take it on another box,
        // in any case.
        for name in ["ann", "ANN"] {
            let mut clash = ws(b.addr, &format!("/ws/lobby?name={name}")).await;
            let (code, reason) = close_frame(&mut clash).await;
            assert_eq!(code, 4409, "{reason}");
        }
        // Once ann has left box A, the name is free on box B.
        ann.close(None).await.unwrap();
        let went = next_presence(&mut watcher).await;
        assert_eq!(
            (&went["type"], &went["name"]),
            (&"leave".into(), &"ann".into())
        );
        let _ann = join(b.addr, "lobby", "ann").await;
    });
}

#[test]
fn a_box_that_dies_leaves_presence_within_the_expiry() {
    let redis = RedisServer::start("dead-box");
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let dir = temp_dir("dead-box");
    let (mut doomed, doomed_addr, _log) = spawn_on_disk(&["--redis", &url], &dir);
    let survivor = start(redis.config(200));
    smol::block_on(async {
        let _ann = join(doomed_addr, "lobby", "ann").await;
        let mut bob = ws(survivor.addr, "/ws/lobby?name=bob").await;
        let welcome = next_json(&mut bob).await;
        assert_eq!(welcome["members"], serde_json::json!(["ann", "bob"]));
        let mut bob = expect_welcome_rest(bob, "bob").await;

        doomed.kill().unwrap(); // SIGKILL: no goodbyes.
        doomed.wait().unwrap();
        // Within the expiry (6 s) and a beat (2 s); STEP bounds the wait.
        let went = next_presence(&mut bob).await;
        assert_eq!(
            (&went["type"], &went["name"], &went["people"]),
            (&"leave".into(), &"ann".into(), &1.into())
        );
    });
}

#[test]
fn a_password_protected_redis_takes_the_password_and_refuses_a_wrong_one() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = temp_dir("redis-password");
    let child = spawn_redis_with(port, &dir, false, &["--requirepass", "s3cret"]);
    // Stopped on drop, even if the test fails.
    let _redis = RedisServer {
        child: Some(child.expect("redis-server starts")),
        port,
        dir,
        aof: false,
    };
    let target = |password: &str| RedisTarget {
        host: "127.0.0.1".into(),
        port,
        db: 0,
        username: None,
        password: Some(password.into()),
    };
    let good = start(smolchat::Config {
        redis: Some(target("s3cret")),
        ..config()
    });
    let bad = start(smolchat::Config {
        redis: Some(target("wrong")),
        ..config()
    });
    smol::block_on(async {
        until_redis_is(good.addr, "up").await;
        let mut ann = join(good.addr, "lobby", "ann").await;
        say(&mut ann, "signed in").await;
        assert_eq!(messages(&mut ann, 1).await, [(1, "signed in".to_owned())]);
        assert_eq!(redis_health(bad.addr).await, "down");
    });
}

#[test]
fn healthz_says_whether_redis_is_reachable() {
    let redis = RedisServer::start("healthz");
    let shared = start(redis.config(200));
    let alone = start(config());
    smol::block_on(async {
        assert_eq!(redis_health(alone.addr).await, serde_json::Value::Null);
        // Connecting takes a moment after start.
        until_redis_is(shared.addr, "up").await;
    });
}

#[test]
fn one_address_has_one_budget_across_the_boxes() {
    // One socket per address, one message a second after a burst of three: what one box gives
    // an address, and all the boxes together give it no more.
    let redis = RedisServer::start("budget");
    let limited = || smolchat::Config {
        messages_per_second: 1.try_into().unwrap(),
        message_burst: 3.try_into().unwrap(),
        max_sockets_per_address: 1,
        ..redis.config(50)
    };
    let (a, b) = (start(limited()), start(limited()));
    smol::block_on(async {
        let mut ann = join(a.addr, "lobby", "ann").await;
        let mut bob = join(b.addr, "lobby", "bob").await;
        let started = std::time::Instant::now();
        for n in 1..=3 {
            say_keyed(&mut ann, &format!("ann {n}"), &format!("a{n}")).await;
        }
        let anns = keyed_messages(&mut ann, 3).await;
        // Bob, on the other box but at the same address, has his own socket's burst there.
        for n in 1..=3 {
            say_keyed(&mut bob, &format!("bob {n}"), &format!("b{n}")).await;
        }
        let (mut kept, mut refused) = (Vec::new(), Vec::new());
        while kept.len() + refused.len() < 3 {
            let frame = next_json(&mut bob).await;
            let key = frame["key"].as_str().unwrap_or_default().to_owned();
            match frame["type"].as_str() {
                Some("message") if key.starts_with('b') => kept.push(frame["id"].as_u64().unwrap()),
                Some("error") => {
                    assert_eq!(frame["code"], "too_fast", "{frame}");
                    refused.push(key);
                }
                _ => {}
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        // The bucket holds 3 and gains 1 a second: no more than that went through.
        let allowed = 3 + elapsed.ceil() as usize;
        assert!(
            anns.len() + kept.len() <= allowed,
            "{kept:?} in {elapsed} s"
        );
        assert!(
            elapsed < 2.0,
            "took {elapsed} s: too slow to tell a budget from its refill"
        );
        assert!(!refused.is_empty(), "bob multiplied the address's budget");
        // A refused message takes no id.
        let ids: Vec<u64> = anns
            .iter()
            .map(|m| m.0)
            .chain(kept.iter().copied())
            .collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    });
}

#[test]
fn a_room_opened_while_cut_off_shows_what_other_boxes_said_meanwhile() {
    let redis = RedisServer::start("cut-off-room");
    let a = start(redis.config(50));
    // Box B reaches Redis only through a forwarder that is not there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut cut_off = redis.config(50);
    if let Some(target) = cut_off.redis.as_mut() {
        target.port = port;
    }
    let b = start(cut_off);
    smol::block_on(async {
        // The room starts on B without its history, and lets ann in after a moment.
        let mut ann = join(b.addr, "lobby", "ann").await;
        assert!(!next_shared(&mut ann).await);
        let mut bob = join(a.addr, "lobby", "bob").await;
        say(&mut bob, "said while B was cut off").await;
        assert_eq!(messages(&mut bob, 1).await[0].0, 1);

        let _forwarder = AnswerCutter::start_on(&redis, port);
        // B connects, reads the room's history, and ann sees what she missed, then goes on.
        assert_eq!(
            messages(&mut ann, 1).await,
            [(1, "said while B was cut off".to_owned())]
        );
        say(&mut bob, "and now").await;
        assert_eq!(messages(&mut ann, 1).await, [(2, "and now".to_owned())]);
    });
}
