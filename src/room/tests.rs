//! The room loop over channels only: no sockets.

use super::*;
use crate::atomic::AtomicU64;
use crate::history::Store;
use crate::moderation::Moderation;
use crate::queue::{Next, Queue};
use crate::shutdown;
use crate::stats::Stats;
use crate::trace::Tracer;
use smol::Executor;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Far longer than any test: these tests do not exercise the keepalive.
const KEEPALIVE: Keepalive = Keepalive {
    ping_interval: Duration::from_secs(3600),
    pong_wait: Duration::from_secs(7200),
};

struct TestClient {
    member: Member,
    frames: Frames,
}

/// A member's queue read one frame at a time, as the tests want it.
#[derive(Clone, Default)]
struct Frames {
    queue: Arc<Queue<Dismissal>>,
    taken: Arc<std::sync::Mutex<VecDeque<Encoded>>>,
}

impl Frames {
    /// The next frame; `Err` once the room closed the queue and it is empty.
    async fn recv(&self) -> Result<Encoded, ()> {
        loop {
            if let Some(frame) = self.taken.lock().unwrap().pop_front() {
                return Ok(frame);
            }
            match self.queue.next().await {
                Next::Frames(batch) => self.taken.lock().unwrap().extend(batch),
                Next::Stop(_) | Next::Ping => {}
                Next::Closed => return Err(()),
            }
        }
    }

    fn try_recv(&self) -> Result<Encoded, ()> {
        let mut taken = self.taken.lock().unwrap();
        if taken.is_empty() {
            taken.extend(self.queue.take_now());
        }
        taken.pop_front().ok_or(())
    }

    fn len(&self) -> usize {
        self.taken.lock().unwrap().len() + self.queue.len()
    }

    fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

fn registry(executor: &Arc<Executor<'static>>) -> (Registry, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let registry = registry_with(executor, &stats, None, KEEPALIVE, never_shutdown());
    (registry, stats)
}

/// A registry keeping 10 messages per room, without tracing; the rest as given.
fn registry_with(
    executor: &Arc<Executor<'static>>,
    stats: &Arc<Stats>,
    store: Option<Arc<Store>>,
    keepalive: Keepalive,
    shutdown: shutdown::Signal,
) -> Registry {
    let tracer = Arc::new(Tracer::off());
    let settings = Settings {
        history: 10,
        store,
        keepalive,
        moderation: Arc::new(Moderation::open(None, Duration::from_secs(600)).expect("in memory")),
        files: None,
        bus: crate::bus::Bus::Local,
    };
    Registry::new(
        executor.clone(),
        stats.clone(),
        Arc::default(),
        tracer,
        settings,
        shutdown,
    )
}

/// Fails a test step that has not finished within ten seconds.
async fn within<T>(step: impl std::future::Future<Output = T>) -> T {
    smol::future::or(step, async {
        Timer::after(Duration::from_secs(10)).await;
        panic!("a test step took over ten seconds")
    })
    .await
}

/// A shutdown signal that never fires (dropping its trigger would fire it).
fn never_shutdown() -> shutdown::Signal {
    let (trigger, signal) = shutdown::channel();
    std::mem::forget(trigger);
    signal
}

/// A new person id per call, unless a test says otherwise.
fn someone() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn try_join(
    registry: &Registry,
    room: &str,
    name: &str,
    person: u64,
    since: Option<u64>,
    queue: usize,
) -> Result<TestClient, JoinError> {
    let frames = Frames::default();
    let outbox = Outbox {
        frames: frames.queue.clone(),
        limit: queue,
    };
    let request = JoinRequest {
        room: room.to_owned(),
        name: name.to_owned(),
        person,
        since,
        address: None,
        host: false,
        outbox,
    };
    let member = registry.join(request).await?;
    Ok(TestClient { member, frames })
}

/// Joins as a new person and reads the welcome.
async fn join(registry: &Registry, room: &str, name: &str, queue: usize) -> TestClient {
    let client = try_join(registry, room, name, someone(), None, queue)
        .await
        .unwrap();
    assert_eq!(next_json(&client).await["type"], "welcome");
    client
}

async fn next_json(client: &TestClient) -> serde_json::Value {
    let frame = client.frames.recv().await.expect("room closed the queue");
    serde_json::from_slice(frame.bytes()).unwrap()
}

fn with_executor<F, Fut>(f: F)
where
    F: FnOnce(Arc<Executor<'static>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let executor = Arc::new(Executor::new());
    let test = f(executor.clone());
    smol::block_on(executor.run(test));
}

#[test]
fn members_see_joins_and_each_others_messages_with_stamps() {
    with_executor(|ex| async move {
        let (registry, stats) = registry(&ex);
        let ann = join(&registry, "lobby", "ann", 8).await;
        assert_eq!(next_json(&ann).await["type"], "join");
        let bob = join(&registry, "lobby", "bob", 8).await;
        assert_eq!(next_json(&ann).await["name"], "bob");
        assert_eq!(next_json(&bob).await["type"], "join");

        ann.member.say("hello".into()).await;
        bob.member.say("hi ann".into()).await;
        for client in [&ann, &bob] {
            let first = next_json(client).await;
            assert_eq!(
                (
                    first["id"].as_u64(),
                    first["name"].as_str(),
                    first["text"].as_str()
                ),
                (Some(1), Some("ann"), Some("hello"))
            );
            assert_eq!(first["room"], "lobby");
            assert!(first["when"].as_str().unwrap().ends_with('Z'));
            let second = next_json(client).await;
            assert_eq!(
                (second["id"].as_u64(), second["name"].as_str()),
                (Some(2), Some("bob"))
            );
        }
        assert_eq!(stats.snapshot().messages, 2);
    });
}

#[test]
fn rooms_are_separate() {
    with_executor(|ex| async move {
        let (registry, stats) = registry(&ex);
        let ann = join(&registry, "one", "ann", 8).await;
        let bob = join(&registry, "two", "bob", 8).await;
        next_json(&ann).await;
        next_json(&bob).await;
        assert_eq!(stats.snapshot().rooms, 2);
        ann.member.say("only for one".into()).await;
        assert_eq!(next_json(&ann).await["text"], "only for one");
        bob.member.say("only for two".into()).await;
        // Bob's next frame is his own message: nothing from room one came between.
        assert_eq!(next_json(&bob).await["text"], "only for two");
    });
}

#[test]
fn leaving_is_announced_and_ends_delivery() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex);
        let ann = join(&registry, "lobby", "ann", 8).await;
        let bob = join(&registry, "lobby", "bob", 8).await;
        next_json(&ann).await;
        next_json(&ann).await;
        let bob_frames = bob.frames.clone();
        bob.member.leave().await;
        let leave = next_json(&ann).await;
        assert_eq!(
            (leave["type"].as_str(), leave["name"].as_str()),
            (Some("leave"), Some("bob"))
        );
        ann.member.say("still here".into()).await;
        assert_eq!(next_json(&ann).await["text"], "still here");
        // Bob got his own join, then nothing: the room dropped his queue.
        assert_eq!(bob_frames.len(), 1);
        assert!(bob_frames.is_closed());
    });
}

#[test]
fn a_full_queue_kicks_only_that_member() {
    with_executor(|ex| async move {
        let (registry, stats) = registry(&ex);
        let slow = join(&registry, "lobby", "slow", 2).await;
        let fast = join(&registry, "lobby", "fast", 64).await;
        // slow reads nothing after its welcome. Its own join was skipped (the welcome
        // filled half its queue); fast's join and the presence list it was owed fill the
        // queue; m0 finds it full and drops slow.
        for n in 0..10 {
            fast.member.say(format!("m{n}")).await;
        }
        assert_eq!(next_json(&fast).await["type"], "join");
        assert_eq!(next_json(&fast).await["text"], "m0");
        let leave = next_json(&fast).await;
        assert_eq!(
            (leave["type"].as_str(), leave["name"].as_str()),
            (Some("leave"), Some("slow"))
        );
        for n in 1..10 {
            assert_eq!(next_json(&fast).await["text"], format!("m{n}"));
        }
        let kept: Vec<_> = std::iter::from_fn(|| slow.frames.try_recv().ok())
            .map(|f| {
                serde_json::from_slice::<serde_json::Value>(f.bytes()).unwrap()["type"].clone()
            })
            .collect();
        assert_eq!(kept, ["join", "presence"]);
        assert_eq!(slow.frames.queue.stop_word(), Some(Dismissal::TooSlow));
        assert_eq!(fast.frames.queue.stop_word(), None);
        assert_eq!(stats.snapshot().dropped, 1);
    });
}

#[test]
fn a_room_emptied_by_its_last_leave_takes_new_joins() {
    with_executor(|ex| async move {
        let (registry, stats) = registry(&ex);
        let ann = join(&registry, "lobby", "ann", 8).await;
        next_json(&ann).await;
        let frames = ann.frames.clone();
        ann.member.leave().await;
        // The room drops ann's queue when she leaves; the room may end right after.
        while frames.recv().await.is_ok() {}
        let again = join(&registry, "lobby", "ann", 8).await;
        assert_eq!(next_json(&again).await["type"], "join");
        assert_eq!(stats.snapshot().rooms, 1);
    });
}

#[test]
fn newcomers_get_the_history_and_reconnects_exactly_what_they_missed() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex);
        let ann = join(&registry, "lobby", "ann", 64).await;
        for n in 1..=3 {
            ann.member.say(format!("m{n}")).await;
        }
        let bob = try_join(&registry, "lobby", "bob", someone(), None, 64)
            .await
            .unwrap();
        let welcome = next_json(&bob).await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(
            (welcome["last_id"].as_u64(), welcome["complete"].as_bool()),
            (Some(3), Some(true))
        );
        assert_eq!(welcome["members"], serde_json::json!(["ann", "bob"]));
        for n in 1..=3 {
            assert_eq!(next_json(&bob).await["id"], n);
        }
        let join = next_json(&bob).await;
        assert_eq!(
            (join["type"].as_str(), join["people"].as_u64()),
            (Some("join"), Some(2))
        );

        let carl = try_join(&registry, "lobby", "carl", someone(), Some(2), 64)
            .await
            .unwrap();
        assert_eq!(next_json(&carl).await["complete"], true);
        assert_eq!(next_json(&carl).await["text"], "m3");
        assert_eq!(next_json(&carl).await["type"], "join");
    });
}

#[test]
fn a_reconnect_beyond_the_history_is_told_so() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex); // keeps 10
        let ann = join(&registry, "lobby", "ann", 64).await;
        for n in 1..=15 {
            ann.member.say(format!("m{n}")).await;
        }
        let late = try_join(&registry, "lobby", "late", someone(), Some(2), 64)
            .await
            .unwrap();
        let welcome = next_json(&late).await;
        assert_eq!(
            (welcome["last_id"].as_u64(), welcome["complete"].as_bool()),
            (Some(15), Some(false))
        );
        assert_eq!(
            next_json(&late).await["id"],
            6,
            "the oldest kept message comes first"
        );
    });
}

#[test]
fn a_name_is_one_persons_in_a_room() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex);
        let ann = try_join(&registry, "lobby", "Ann", 1, None, 8)
            .await
            .unwrap();
        let other = try_join(&registry, "lobby", "ANN", 2, None, 8).await;
        assert_eq!(other.err(), Some(JoinError::NameTaken));
        // The same person in a second tab may.
        let second_tab = try_join(&registry, "lobby", "Ann", 1, None, 8).await;
        assert!(second_tab.is_ok());
        // Elsewhere the name is free.
        assert!(try_join(&registry, "kitchen", "Ann", 2, None, 8)
            .await
            .is_ok());
        drop(ann);
    });
}

/// The last member leaves; returns once the room's task has ended.
async fn leave_last(client: TestClient, stats: &Stats) {
    let frames = client.frames.clone();
    client.member.leave().await;
    while frames.recv().await.is_ok() {}
    // The room task is gone once its count is: it ends right after dropping the queue.
    while stats.snapshot().rooms != 0 {
        smol::future::yield_now().await;
    }
}

#[test]
fn an_emptied_room_keeps_its_history_and_ids() {
    with_executor(|ex| async move {
        let (registry, stats) = registry(&ex);
        let ann = join(&registry, "lobby", "ann", 8).await;
        ann.member.say("before".into()).await;
        leave_last(ann, &stats).await;
        let bob = try_join(&registry, "lobby", "bob", someone(), None, 8)
            .await
            .unwrap();
        assert_eq!(next_json(&bob).await["last_id"], 1);
        assert_eq!(next_json(&bob).await["text"], "before");
        next_json(&bob).await; // own join
        bob.member.say("after".into()).await;
        assert_eq!(next_json(&bob).await["id"], 2);
    });
}

#[test]
fn a_room_that_empties_and_refills_within_a_flush_keeps_its_ids() {
    with_executor(|ex| async move {
        let dir = std::env::temp_dir().join(format!("smolchat-room-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let stats = Arc::new(Stats::default());
        let store = Arc::new(Store::open(&dir, 10, stats.clone()).unwrap());
        let registry = registry_with(&ex, &stats, Some(store), KEEPALIVE, never_shutdown());
        let ann = join(&registry, "lobby", "ann", 8).await;
        ann.member.say("unflushed".into()).await;
        leave_last(ann, &stats).await;
        // Back well within the one-second flush: the disk may not have it yet.
        let bob = try_join(&registry, "lobby", "bob", someone(), None, 8)
            .await
            .unwrap();
        assert_eq!(next_json(&bob).await["last_id"], 1);
        assert_eq!(next_json(&bob).await["text"], "unflushed");
    });
}

#[test]
fn a_person_with_two_tabs_is_announced_once() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex);
        let bob = join(&registry, "lobby", "bob", 64).await;
        assert_eq!(next_json(&bob).await["type"], "join"); // own
        let tab1 = try_join(&registry, "lobby", "ann", 7, None, 64)
            .await
            .unwrap();
        let tab2 = try_join(&registry, "lobby", "ann", 7, None, 64)
            .await
            .unwrap();
        let joined = next_json(&bob).await;
        assert_eq!(
            (joined["name"].as_str(), joined["people"].as_u64()),
            (Some("ann"), Some(2))
        );
        // The second tab hears of itself, but nobody else hears of it.
        assert_eq!(
            next_json(&tab2).await["members"],
            serde_json::json!(["ann", "bob"])
        );
        assert_eq!(next_json(&tab2).await["type"], "join");
        tab1.member.leave().await;
        bob.member.say("ann still here?".into()).await;
        assert_eq!(
            next_json(&bob).await["type"],
            "message",
            "a tab closing announced a leave"
        );
        tab2.member.leave().await;
        let left = next_json(&bob).await;
        assert_eq!(
            (left["type"].as_str(), left["people"].as_u64()),
            (Some("leave"), Some(1))
        );
    });
}

#[test]
fn a_member_that_missed_presence_gets_the_whole_list_later() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex);
        // A queue of 4: welcome and own join fill half, so the next joins are skipped.
        let slow = try_join(&registry, "lobby", "slow", someone(), None, 4)
            .await
            .unwrap();
        let others: Vec<TestClient> = join_all(&registry, &["a", "b", "c"]).await;
        let kinds = |frames: &Frames| -> Vec<String> {
            std::iter::from_fn(|| frames.try_recv().ok())
                .map(|f| {
                    serde_json::from_slice::<serde_json::Value>(f.bytes()).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            kinds(&slow.frames),
            ["welcome", "join"],
            "joins were not skipped"
        );
        // Now it has room again: the next broadcast brings the list along.
        others[0].member.say("hello".into()).await;
        let frame = slow.frames.recv().await.unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(frame.bytes()).unwrap()["type"],
            "message"
        );
        let list = slow.frames.recv().await.unwrap();
        let list: serde_json::Value = serde_json::from_slice(list.bytes()).unwrap();
        assert_eq!(
            (list["type"].as_str(), list["members"].clone()),
            (Some("presence"), serde_json::json!(["a", "b", "c", "slow"]))
        );
    });
}

async fn join_all(registry: &Registry, names: &[&str]) -> Vec<TestClient> {
    let mut clients = Vec::new();
    for name in names {
        clients.push(join(registry, "lobby", name, 64).await);
    }
    clients
}

#[test]
fn dropping_a_member_leaves_the_room() {
    with_executor(|ex| async move {
        let (registry, _) = registry(&ex);
        let ann = join(&registry, "lobby", "ann", 8).await;
        let bob = join(&registry, "lobby", "bob", 8).await;
        next_json(&ann).await;
        next_json(&ann).await;
        drop(bob);
        assert_eq!(next_json(&ann).await["type"], "leave");
    });
}

#[test]
fn the_room_pings_members_it_hears_from_and_lets_silent_ones_go() {
    with_executor(|ex| async move {
        let stats = Arc::new(Stats::default());
        // The talker answers every 25 ms; only a stall of a whole second would make it
        // look silent.
        let keepalive = Keepalive {
            ping_interval: Duration::from_millis(25),
            pong_wait: Duration::from_secs(1),
        };
        let registry = registry_with(&ex, &stats, None, keepalive, never_shutdown());
        let quiet = join(&registry, "lobby", "quiet", 64).await;
        let talker = join(&registry, "lobby", "talker", 64).await;
        // The talker answers every ping (as a browser does with a pong); the quiet one
        // never says anything.
        let mut pings = 0;
        let left = within(async {
            loop {
                match talker.frames.queue.next().await {
                    Next::Ping => {
                        pings += 1;
                        talker.frames.queue.heard();
                    }
                    Next::Frames(batch) => {
                        let leave = batch.into_iter().find_map(|frame| {
                            let json: serde_json::Value =
                                serde_json::from_slice(frame.bytes()).unwrap();
                            (json["type"] == "leave").then_some(json)
                        });
                        if let Some(leave) = leave {
                            break leave;
                        }
                    }
                    other => panic!("talker was let go: {}", matches!(other, Next::Closed)),
                }
            }
        })
        .await;
        assert_eq!(left["name"], "quiet");
        assert!(pings >= 2, "pinged {pings} times before the quiet one went");
        assert_eq!(quiet.frames.queue.stop_word(), Some(Dismissal::Silent));
        assert!(quiet.frames.queue.quiet_for() >= keepalive.pong_wait);
        assert_eq!(talker.frames.queue.stop_word(), None);
    });
}

#[test]
fn at_shutdown_every_member_is_told_and_the_room_ends() {
    with_executor(|ex| async move {
        let stats = Arc::new(Stats::default());
        let (trigger, signal) = shutdown::channel();
        let registry = registry_with(&ex, &stats, None, KEEPALIVE, signal);
        let clients = join_all(&registry, &["ann", "bob", "cy"]).await;
        trigger.fire();
        for client in &clients {
            // Nobody is told who left: the stop word is all that comes before the close.
            let words = within(async {
                let mut words = Vec::new();
                loop {
                    match client.frames.queue.next().await {
                        Next::Stop(word) => words.push(word),
                        Next::Frames(batch) => {
                            for frame in batch {
                                let json: serde_json::Value =
                                    serde_json::from_slice(frame.bytes()).unwrap();
                                assert_ne!(json["type"], "leave", "{json}");
                            }
                        }
                        Next::Ping => {}
                        Next::Closed => return words,
                    }
                }
            })
            .await;
            assert_eq!(words, [Dismissal::ShuttingDown]);
        }
        // The room ends with nobody left: its count goes, without anyone leaving first.
        within(async {
            while stats.snapshot().rooms != 0 {
                smol::future::yield_now().await;
            }
        })
        .await;
        for client in clients {
            client.member.leave().await;
        }
    });
}
