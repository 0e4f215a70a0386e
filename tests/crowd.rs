//! A room that holds a crowd, over real sockets: sender limits (a flooder is held back and
//! then closed while a reader keeps its place; a lively room is never held back), presence in
//! a large room (summaries, a bounded welcome, the paged member list staying right through
//! join and leave storms), and nameless clients sharing a room.

mod common;
use async_tungstenite::tungstenite;
use common::*;
use smol::stream::StreamExt;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Every member of one crowd joins from 127.0.0.1; the per-address caps are not under test here.
fn crowd_config() -> smolchat::Config {
    smolchat::Config {
        max_sockets_per_address: 100_000,
        new_rooms_per_minute: 100_000,
        ..config()
    }
}

#[test]
fn a_flooder_is_held_back_then_closed_while_a_reader_keeps_its_place() {
    let mut config = config_with_sender_limits();
    config.flood_patience = Duration::from_secs(3);
    let per_second = config.messages_per_second.get() as u64;
    let burst = config.message_burst.get() as u64;
    let server = start(config);
    smol::block_on(async {
        let mut reader = join(server.addr, "hall", "reader").await;
        let mut flooder = join(server.addr, "hall", "flooder").await;
        let mut friend = join(server.addr, "hall", "friend").await;
        // The flooder writes as fast as its socket takes it, and reads nothing: only TCP's
        // backpressure (the server stopped reading it) can slow it down.
        let flood = smol::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < Duration::from_secs(20) {
                let sending = flooder.send(tungstenite_text(&format!("flood {sent}")));
                match within("a flood write", sending).await {
                    Ok(()) => sent += 1,
                    Err(_) => break, // Closed by the server.
                }
            }
            (sent, flooder)
        });
        // The reader, reading at a phone's pace, sees the flood trickle in at the limit and
        // still gets a friend's message in order, with its round trip intact.
        let started = Instant::now();
        let mut flood_seen = 0u64;
        let mut slowed = false;
        let mut friend_seen = false;
        let mut friend_said = false;
        while started.elapsed() < Duration::from_secs(6) {
            if !friend_said && flood_seen >= burst {
                say(&mut friend, "still here").await;
                friend_said = true;
            }
            let frame = within("the reader's next frame", reader.next()).await;
            let Some(Ok(message)) = frame else { break };
            let Ok(text) = message.to_text() else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            if value["type"] != "message" {
                continue;
            }
            match value["name"].as_str() {
                Some("flooder") => flood_seen += 1,
                Some("friend") => friend_seen = true,
                _ => {}
            }
            slowed |= flood_seen > burst;
            if friend_seen && flood_seen > burst + per_second {
                break;
            }
        }
        assert!(friend_seen, "the friend's message did not reach the reader");
        assert!(slowed, "the flood never got past its burst");
        // Held back: within the first seconds no more than the burst and the rate got through.
        let seconds = started.elapsed().as_secs_f64();
        let allowed = burst as f64 + per_second as f64 * (seconds + 1.0);
        assert!(
            (flood_seen as f64) <= allowed,
            "{flood_seen} flood messages in {seconds:.1} s"
        );
        // After the patience the flooder is closed with 1008 and a reason; it was told first.
        let (_, mut flooder) = within("the flood to end", flood).await;
        let mut told = false;
        let (code, reason) = loop {
            match within("the flooder's frames", flooder.next()).await {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    told |= text.contains(r#""code":"slow_down""#);
                }
                Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(_)) => {}
                other => panic!("expected the close frame, got {other:?}"),
            }
        };
        assert!(told, "the flooder was not told it was held back");
        assert_eq!(code, 1008);
        assert!(reason.contains("flooding"), "{reason}");
        let stats = server.stats();
        assert_eq!((stats.held_back, stats.flooders_closed), (1, 1));
        // Nobody else was dropped, and the room goes on.
        assert_eq!(stats.dropped, 0);
        say(&mut friend, "after the flood").await;
        loop {
            let value = next_message(&mut reader).await;
            if value["text"] == "after the flood" {
                break;
            }
        }
    });
}

/// A text frame for the raw tungstenite sink.
fn tungstenite_text(text: &str) -> tungstenite::Message {
    tungstenite::Message::text(format!(r#"{{"text":"{text}"}}"#))
}

#[test]
fn forty_people_posting_twice_a_second_are_never_held_back() {
    let mut config = config_with_sender_limits();
    config.max_sockets_per_address = 100_000;
    config.new_rooms_per_minute = 100_000;
    let server = start(config);
    smol::block_on(async {
        let mut people = Vec::new();
        for n in 0..40 {
            people.push(join(server.addr, "lively", &format!("p{n}")).await);
        }
        // Each posts twice a second for five seconds: 400 messages, each delivered to all 40.
        let rounds = 10;
        let started = Instant::now();
        for round in 0..rounds {
            let due = started + Duration::from_millis(500 * round);
            smol::Timer::at(due).await;
            for (n, ws) in people.iter_mut().enumerate() {
                say(ws, &format!("{n}:{round}")).await;
            }
        }
        for ws in people.iter_mut() {
            let mut got = 0;
            while got < 40 * rounds {
                if next_json(ws).await["type"] == "message" {
                    got += 1;
                }
            }
        }
        let stats = server.stats();
        assert_eq!(
            (stats.held_back, stats.dropped, stats.messages),
            (0, 0, 400)
        );
    });
}

/// Every name on the member list, pulled page by page as the page does.
async fn member_list(addr: std::net::SocketAddr, room: &str) -> (u64, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut after: Option<String> = None;
    let mut people = 0;
    for _ in 0..100 {
        let path = match &after {
            Some(name) => format!("/rooms/{room}/members?limit=50&after={name}"),
            None => format!("/rooms/{room}/members?limit=50"),
        };
        let reply = get(addr, &path, &[]).await;
        assert_eq!(reply.status, 200);
        let page: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        people = page["people"].as_u64().unwrap();
        let members = page["members"].as_array().unwrap();
        assert!(members.len() <= 50);
        names.extend(members.iter().map(|n| n.as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return (people, names),
        }
    }
    panic!("the member list did not end ({people} people)")
}

/// What a watching client knows of the room, kept from the frames it gets, as the page does.
struct Watcher {
    ws: Ws,
    members: BTreeSet<String>,
    people: u64,
    partial: bool,
    frames: u64,
    bytes: u64,
}

impl Watcher {
    async fn new(addr: std::net::SocketAddr) -> Watcher {
        let mut ws = ws(addr, "/ws/big?name=watcher").await;
        let welcome = next_json(&mut ws).await;
        assert_eq!(welcome["type"], "welcome");
        let members = welcome["members"].as_array().unwrap();
        Watcher {
            members: members.iter().map(|n| n.as_str().unwrap().into()).collect(),
            people: welcome["people"].as_u64().unwrap(),
            partial: false,
            ws,
            frames: 0,
            bytes: 0,
        }
    }

    /// Applies presence frames until the room's count is `people` and a summary has come.
    async fn follow_until(&mut self, people: u64) {
        loop {
            let frame = within("a presence frame", self.ws.next()).await;
            let Some(Ok(tungstenite::Message::Text(text))) = frame else {
                continue;
            };
            self.frames += 1;
            self.bytes += text.len() as u64;
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            match value["type"].as_str() {
                Some("presence") => {
                    if let Some(all) = value["members"].as_array() {
                        self.members = all.iter().map(|n| n.as_str().unwrap().into()).collect();
                    }
                    for name in value["joined"].as_array().into_iter().flatten() {
                        self.members.insert(name.as_str().unwrap().into());
                    }
                    for name in value["left"].as_array().into_iter().flatten() {
                        self.members.remove(name.as_str().unwrap());
                    }
                    self.partial |= value["partial"] == true;
                }
                Some("join") => {
                    self.members.insert(value["name"].as_str().unwrap().into());
                }
                Some("leave") => {
                    self.members.remove(value["name"].as_str().unwrap());
                }
                _ => continue,
            }
            self.people = value["people"].as_u64().unwrap();
            if self.people == people {
                return;
            }
        }
    }
}

#[test]
fn a_large_room_sums_up_presence_and_its_list_stays_right_through_storms() {
    const CROWD: usize = 300;
    let server = start(crowd_config());
    smol::block_on(async {
        let local = smol::LocalExecutor::new();
        local
            .run(async {
                let mut watcher = Watcher::new(server.addr).await;
                // A join storm: every client reads continuously, counting what it is sent.
                let received = std::rc::Rc::new(std::cell::Cell::new(0u64));
                let mut crowd = Vec::new();
                let storm = Instant::now();
                for n in 0..CROWD {
                    let mut ws = ws(server.addr, &format!("/ws/big?name=m{n:03}")).await;
                    let received = received.clone();
                    crowd.push(local.spawn(async move {
                        while let Some(Ok(message)) = ws.next().await {
                            received.set(received.get() + message.len() as u64);
                        }
                    }));
                }
                watcher.follow_until(CROWD as u64 + 1).await;
                // The summaries named at most a few each, and said when they left some out;
                // the live joins of the first 64 came one frame each.
                assert!(
                    watcher.frames < 64 + 64,
                    "{} presence frames",
                    watcher.frames
                );
                let (people, names) = member_list(server.addr, "big").await;
                assert_eq!(people, CROWD as u64 + 1);
                assert_eq!(names.len(), CROWD + 1);
                assert!(names.contains("watcher") && names.contains("m299"));
                if !watcher.partial {
                    assert_eq!(watcher.members, names);
                }
                // A newcomer's welcome is bounded: the count and the first names only.
                let mut late = ws(server.addr, "/ws/big?name=late").await;
                let welcome = next_json(&mut late).await;
                assert_eq!(welcome["people"], CROWD as u64 + 2);
                assert_eq!(welcome["members"].as_array().unwrap().len(), 64);
                drop(late);
                // The crowd's presence traffic grew with the crowd, not with its square: a
                // member gets a bounded welcome, at most 64 live joins, and then one bounded
                // summary a second (announcing each join to all would cost the average
                // member 150 join frames, about 13 KB, here).
                let seconds = storm.elapsed().as_secs() + 1;
                let per_member = received.get() / CROWD as u64;
                let allowed = 4096 + 600 * seconds;
                assert!(
                    per_member < allowed,
                    "{per_member} bytes per member in {seconds} s"
                );

                // A mass disconnect: everyone but the watcher drops at once.
                drop(crowd);
                watcher.follow_until(1).await;
                let (people, names) = member_list(server.addr, "big").await;
                assert_eq!(people, 1);
                assert_eq!(names, BTreeSet::from(["watcher".to_owned()]));
                // Once small again, the room sent the whole list: the watcher's is right.
                assert_eq!(watcher.members, names);
            })
            .await;
    });
}

#[test]
fn nameless_clients_share_a_room_each_as_its_own_person() {
    let server = start(config());
    smol::block_on(async {
        let mut first = ws(server.addr, "/ws/lobby").await;
        let mut second = ws(server.addr, "/ws/lobby").await;
        let mut third = ws(server.addr, "/ws/lobby?name=Anonymous").await;
        let mut names = Vec::new();
        for ws in [&mut first, &mut second, &mut third] {
            let welcome = next_json(ws).await;
            names.push(welcome["name"].as_str().unwrap().to_owned());
        }
        // Each is its own person. Which gets which number is the order the room saw them join
        // in, which three connections opened at once do not fix.
        let mut numbered = names.clone();
        numbered.sort();
        assert_eq!(numbered, ["anonymous-1", "anonymous-2", "anonymous-3"]);
        say(&mut third, "hello").await;
        let heard = next_message(&mut first).await;
        assert_eq!(
            (heard["name"].as_str(), heard["text"].as_str()),
            (Some(names[2].as_str()), Some("hello"))
        );
    });
}
