//! Chat over real sockets: rooms, stamping, leaving, slow clients, hostile frames, limits.

mod common;

use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::Message;
use common::*;
use smol::stream::StreamExt;

#[test]
fn two_clients_in_a_room_see_each_others_stamped_messages() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        let mut bob = join(server.addr, "lobby", "bob").await;
        assert_eq!(next_json(&mut ann).await["name"], "bob"); // bob's join

        // The frame's own "name" is ignored: the server stamps who really sent it.
        ann.send(Message::text(
            r#"{"text":"hello bob","name":"mallory","id":99}"#,
        ))
        .await
        .unwrap();
        let mut seen = Vec::new();
        seen.push(next_message(&mut ann).await);
        // The book's client sends plain text frames; they are taken whole. (Sent after ann's
        // message is through: two connections' messages have no order between them.)
        bob.send(Message::text("hi ann")).await.unwrap();
        seen.push(next_message(&mut ann).await);
        let heard_by_bob = vec![next_message(&mut bob).await, next_message(&mut bob).await];

        for messages in [seen, heard_by_bob] {
            let first = &messages[0];
            assert_eq!(first["name"], "ann");
            assert_eq!(first["text"], "hello bob");
            assert_eq!(first["room"], "lobby");
            assert_eq!(first["id"], 1);
            let when = first["when"].as_str().unwrap();
            assert!(
                when.len() == 24 && when.ends_with('Z') && when.as_bytes()[10] == b'T',
                "{when}"
            );
            let second = &messages[1];
            assert_eq!(
                (second["name"].as_str(), second["id"].as_u64()),
                (Some("bob"), Some(2))
            );
            assert_eq!(second["text"], "hi ann");
        }
    });
}

#[test]
fn rooms_do_not_hear_each_other() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "kitchen", "ann").await;
        let mut bob = join(server.addr, "garden", "bob").await;
        say(&mut ann, "in the kitchen").await;
        say(&mut bob, "in the garden").await;
        let heard = next_message(&mut bob).await;
        assert_eq!(
            (heard["text"].as_str(), heard["room"].as_str()),
            (Some("in the garden"), Some("garden"))
        );
        // Ids count per room: both rooms start at 1.
        assert_eq!(heard["id"], 1);
        assert_eq!(next_message(&mut ann).await["id"], 1);
        assert_eq!(server.stats().rooms, 2);
    });
}

#[test]
fn a_client_that_leaves_stops_receiving_and_the_others_go_on() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        let mut bob = join(server.addr, "lobby", "bob").await;
        let mut cat = join(server.addr, "lobby", "cat").await;
        next_json(&mut ann).await; // bob joined
        next_json(&mut ann).await; // cat joined
        next_json(&mut bob).await; // cat joined

        bob.close(None).await.unwrap();
        // bob sees the close handshake end his stream, and nothing else.
        loop {
            match within("bob's close", bob.next()).await {
                None => break,
                Some(Ok(Message::Close(_))) => {}
                other => panic!("bob received {other:?} after leaving"),
            }
        }
        let left = next_json(&mut ann).await;
        assert_eq!(
            (left["type"].as_str(), left["name"].as_str()),
            (Some("leave"), Some("bob"))
        );
        say(&mut cat, "still here").await;
        assert_eq!(next_message(&mut ann).await["text"], "still here");
        assert_eq!(next_message(&mut cat).await["text"], "still here");
    });
}

#[test]
fn empty_and_whitespace_messages_are_ignored() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        say(&mut ann, "   \n\t").await;
        ann.send(Message::text("")).await.unwrap();
        say(&mut ann, "real").await;
        let message = next_message(&mut ann).await;
        assert_eq!(
            (message["text"].as_str(), message["id"].as_u64()),
            (Some("real"), Some(1))
        );
    });
}

#[test]
fn a_client_that_never_reads_is_dropped_and_the_others_get_everything() {
    let mut config = config();
    config.queue = 16.try_into().unwrap();
    config.max_message_bytes = 8192.try_into().unwrap();
    // The stalled client must be dropped for its full queue, not for its silence: filling the
    // socket buffers can take longer than the keepalive limit under an emulator.
    config.ping_interval = std::time::Duration::from_secs(3600);
    config.pong_wait = std::time::Duration::from_secs(3600);
    let server = start(config);
    smol::block_on(async {
        let mut stalled = join(server.addr, "lobby", "stalled").await;
        let mut reader = join(server.addr, "lobby", "reader").await;
        let mut sender = join(server.addr, "lobby", "sender").await;
        // Big messages fill the socket buffers of the stalled client quickly; then its queue.
        let filler = "x".repeat(7000);
        let mut sent = 0u64;
        // Bounded: loopback buffers hold a few MiB, far less than 4000 × 7 KB.
        while server.stats().dropped == 0 && sent < 4000 {
            for _ in 0..10 {
                say(&mut sender, &filler).await;
                sent += 1;
            }
            // Keep the healthy clients caught up (the sender hears itself too), so that only
            // the stalled one can fall behind.
            for healthy in [&mut reader, &mut sender] {
                let mut received = 0;
                while received < 10 {
                    let value = next_json(healthy).await;
                    if value["type"] == "message" {
                        received += 1;
                        assert_eq!(value["id"].as_u64(), Some(sent - 10 + received));
                    }
                }
            }
        }
        assert_eq!(
            server.stats().dropped,
            1,
            "the stalled client was never dropped"
        );
        // After the drop, the room goes on at once for everybody else.
        say(&mut sender, "after the drop").await;
        let value = next_message(&mut reader).await;
        assert_eq!(value["text"], "after the drop");
        assert_eq!(value["id"].as_u64(), Some(sent + 1));

        // The stalled client finds its connection ended once it reads again: whatever was
        // buffered, then the 1008 close (or a reset if the close could not get through).
        let mut frames = 0;
        let ending = loop {
            match within("stalled client's end", stalled.next()).await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => frames += 1,
                Some(Err(_)) | None => break None,
            }
            assert!(frames <= sent + 10, "the stalled client kept receiving");
        };
        if let Some(code) = ending {
            assert_eq!(code, 1008);
        }
        assert!(
            frames < sent,
            "the stalled client got everything; it was never cut off"
        );
    });
}

#[test]
fn oversize_binary_and_invalid_utf8_frames_get_their_close_codes() {
    let server = start(config());
    smol::block_on(async {
        let mut witness = join(server.addr, "lobby", "witness").await;

        let mut big = join(server.addr, "lobby", "big").await;
        big.send(Message::text("y".repeat(5000))).await.unwrap();
        assert_eq!(close_frame(&mut big).await.0, 1009);

        let mut binary = join(server.addr, "lobby", "binary").await;
        binary.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(close_frame(&mut binary).await.0, 1003);

        let mut garbled = join(server.addr, "lobby", "garbled").await;
        let frame = Frame::message(vec![0xffu8, 0xfe, 0x41], OpCode::Data(Data::Text), true);
        garbled.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(close_frame(&mut garbled).await.0, 1007);

        // A message exactly at the limit is fine, and the witness saw nothing bad.
        let at_limit = format!(r#"{{"text":"{}"}}"#, "z".repeat(4096 - 11));
        assert_eq!(at_limit.len(), 4096);
        witness.send(Message::text(at_limit)).await.unwrap();
        let message = next_message(&mut witness).await;
        assert_eq!(message["text"].as_str().map(str::len), Some(4085));
        assert_eq!(message["id"], 1, "a bad frame reached the room");
    });
}

#[test]
fn a_silent_client_is_dropped_after_the_pong_wait() {
    let mut config = config();
    config.ping_interval = std::time::Duration::from_millis(100);
    config.pong_wait = std::time::Duration::from_millis(400);
    let server = start(config);
    smol::block_on(async {
        let mut silent = join(server.addr, "lobby", "silent").await;
        let mut witness = join(server.addr, "lobby", "witness").await;
        // The silent client reads nothing now, so it answers no ping (a client answers pings
        // as it reads). The witness keeps reading, so it answers, and sees the silent one go.
        let left = next_json(&mut witness).await;
        assert_eq!(
            (left["type"].as_str(), left["name"].as_str()),
            (Some("leave"), Some("silent"))
        );

        let mut pings = 0;
        let (code, reason) = loop {
            match within("close after silence", silent.next()).await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(_))) => {} // witness's join, queued before the drop
                Some(Ok(Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.to_string())
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(pings >= 1, "the server never pinged");
        assert_eq!(code, 1001);
        assert!(reason.contains("pong"), "{reason}");
        // The witness, which answered its pings, is still in the room.
        say(&mut witness, "still here").await;
        assert_eq!(next_message(&mut witness).await["text"], "still here");
    });
}

#[test]
fn five_hundred_clients_in_one_room_all_receive_a_broadcast() {
    const CLIENTS: usize = 500;
    // Every client comes from 127.0.0.1, which may hold only 16 sockets by default, and
    // those arriving before the room runs would each count as starting it.
    let server = start(smolchat::Config {
        max_sockets_per_address: CLIENTS + 1,
        new_rooms_per_minute: CLIENTS as u32 + 1,
        ..config()
    });
    let addr = server.addr;
    let local = smol::LocalExecutor::new();
    smol::block_on(local.run(async {
        // Every client reads all the time, as a browser does; a client that stopped reading
        // through 500 join announcements would rightly be dropped as too slow.
        let (ready_tx, ready) = async_channel::unbounded::<()>();
        let mut listeners = Vec::with_capacity(CLIENTS);
        for n in 1..CLIENTS {
            let ready_tx = ready_tx.clone();
            listeners.push(local.spawn(async move {
                let mut ws = join(addr, "crowd", &format!("c{n}")).await;
                ready_tx.send(()).await.unwrap();
                next_message(&mut ws).await
            }));
        }
        for _ in 1..CLIENTS {
            within("everyone joined", ready.recv()).await.unwrap();
        }
        let mut speaker = join(addr, "crowd", "c0").await;
        assert_eq!(server.stats().connections, CLIENTS as u64);
        say(&mut speaker, "hello everyone").await;
        assert_eq!(next_message(&mut speaker).await["text"], "hello everyone");
        for listener in listeners {
            let message = listener.await;
            assert_eq!(
                (message["text"].as_str(), message["name"].as_str()),
                (Some("hello everyone"), Some("c0"))
            );
        }
        assert_eq!(server.stats().dropped, 0);
    }));
}

#[test]
fn upgrades_over_the_connection_limit_get_503() {
    let mut config = config();
    config.max_connections = 2;
    let server = start(config);
    smol::block_on(async {
        let _a = join(server.addr, "lobby", "a").await;
        let mut b = join(server.addr, "lobby", "b").await;
        let refused = get(
            server.addr,
            "/ws/lobby",
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ],
        )
        .await;
        assert_eq!(refused.status, 503);
        // A slot frees up when a client leaves, by the time the client has seen its connection
        // close: it may connect again at once. Repeated, as a slot let go late loses a race.
        for round in 0..SLOT_ROUNDS {
            b.close(None).await.unwrap();
            while within("the close", b.next()).await.is_some() {}
            let name = format!("c{round}");
            b = ws(server.addr, &format!("/ws/lobby?name={name}")).await;
            assert_eq!(next_json(&mut b).await["name"], name.as_str());
        }
    });
}

/// How often the connection-limit test frees a slot and takes it again.
const SLOT_ROUNDS: usize = 200;
