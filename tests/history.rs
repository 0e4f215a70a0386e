//! History over real sockets: replay on join, exact catch-up by id, and history that survives
//! restarts, torn files and kill -9.

mod common;

use common::*;
use std::path::Path;

fn on_disk(dir: &Path) -> smolchat::Config {
    smolchat::Config {
        data_dir: Some(dir.to_owned()),
        ..config()
    }
}

/// Joins and returns the welcome and the replayed messages' ids, then the socket.
async fn join_since(
    addr: std::net::SocketAddr,
    name: &str,
    since: Option<u64>,
) -> (serde_json::Value, Vec<u64>, Ws) {
    let path = match since {
        Some(id) => format!("/ws/lobby?name={name}&since={id}"),
        None => format!("/ws/lobby?name={name}"),
    };
    let mut ws = ws(addr, &path).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
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

async fn say_many(ws: &mut Ws, texts: impl IntoIterator<Item = String>) -> Vec<u64> {
    let texts: Vec<String> = texts.into_iter().collect();
    for text in &texts {
        say(ws, text).await;
    }
    let mut ids = Vec::new();
    for text in &texts {
        let message = next_message(ws).await;
        assert_eq!(&message["text"], text.as_str());
        ids.push(message["id"].as_u64().unwrap());
    }
    ids
}

#[test]
fn newcomers_get_the_history_first() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        say_many(&mut ann, (1..=3).map(|n| format!("m{n}"))).await;
        let (welcome, ids, _bob) = join_since(server.addr, "bob", None).await;
        assert_eq!(welcome["last_id"], 3);
        assert_eq!(ids, [1, 2, 3]);
    });
}

#[test]
fn a_reconnect_gets_exactly_what_it_missed() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        let (_, _, mut bob) = join_since(server.addr, "bob", None).await;
        let seen = say_many(&mut ann, (1..=4).map(|n| format!("before {n}"))).await;
        for id in &seen {
            assert_eq!(next_message(&mut bob).await["id"].as_u64(), Some(*id));
        }
        bob.close(None).await.unwrap();
        let missed = say_many(&mut ann, (1..=5).map(|n| format!("while away {n}"))).await;

        let (welcome, replayed, mut bob) =
            join_since(server.addr, "bob", Some(*seen.last().unwrap())).await;
        assert_eq!(welcome["complete"], true);
        assert_eq!(replayed, missed, "gaps or duplicates in the catch-up");
        // And then live again, no repeats.
        let live = say_many(&mut ann, ["after".to_string()]).await;
        assert_eq!(next_message(&mut bob).await["id"].as_u64(), Some(live[0]));
    });
}

#[test]
fn a_reconnect_from_too_long_ago_is_told_history_does_not_reach() {
    let server = start(smolchat::Config {
        history: 5,
        ..config()
    });
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        say_many(&mut ann, (1..=12).map(|n| format!("m{n}"))).await;
        let (welcome, ids, _) = join_since(server.addr, "bob", Some(3)).await;
        assert_eq!(welcome["complete"], false);
        assert_eq!(ids, [8, 9, 10, 11, 12]);
        let (welcome, ids, _) = join_since(server.addr, "cat", Some(7)).await;
        assert_eq!(welcome["complete"], true);
        assert_eq!(ids, [8, 9, 10, 11, 12]);
    });
}

#[test]
fn history_and_ids_survive_a_restart() {
    let dir = temp_dir("restart");
    let first = start(on_disk(&dir));
    let ids = smol::block_on(async {
        let mut ann = join(first.addr, "lobby", "ann").await;
        say_many(&mut ann, (1..=3).map(|n| format!("m{n}"))).await
    });
    assert!(first.shutdown());
    assert_eq!(ids, [1, 2, 3]);

    let second = start(on_disk(&dir));
    smol::block_on(async {
        let (welcome, replayed, mut bob) = join_since(second.addr, "bob", None).await;
        assert_eq!(welcome["last_id"], 3);
        assert_eq!(replayed, [1, 2, 3]);
        assert_eq!(say_many(&mut bob, ["next".to_string()]).await, [4]);
    });
    let health = smol::block_on(get(second.addr, "/healthz", &[]));
    assert_eq!(health.status, 200);
}

#[test]
fn a_history_file_cut_mid_record_keeps_everything_before_the_cut() {
    let dir = temp_dir("torn");
    let first = start(on_disk(&dir));
    smol::block_on(async {
        let mut ann = join(first.addr, "lobby", "ann").await;
        say_many(&mut ann, (1..=4).map(|n| format!("message number {n}"))).await;
    });
    assert!(first.shutdown());
    let file = dir.join("rooms/lobby.log");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 7]).unwrap();

    let second = start(on_disk(&dir));
    smol::block_on(async {
        let (welcome, replayed, mut bob) = join_since(second.addr, "bob", None).await;
        assert_eq!(replayed, [1, 2, 3]);
        assert_eq!(welcome["last_id"], 3);
        // The torn record was cut off, so the next one follows good data.
        assert_eq!(say_many(&mut bob, ["new".to_string()]).await, [4]);
    });
    assert!(second.shutdown());
    let third = start(on_disk(&dir));
    smol::block_on(async {
        let (_, replayed, _) = join_since(third.addr, "cat", None).await;
        assert_eq!(replayed, [1, 2, 3, 4]);
    });
}

#[test]
fn kill_9_at_any_moment_leaves_a_readable_prefix() {
    let dir = temp_dir("kill9");
    // The newest id known to be on disk (flushed), and the newest id ever handed out.
    let (mut durable, mut handed_out) = (0, 0);
    for round in 0..3 {
        let (mut child, addr, log) = spawn_on_disk(&["--log-level", "debug"], &dir);
        smol::block_on(async {
            let (welcome, replayed, mut ann) = join_since(addr, "ann", None).await;
            // What survived the last kill is a prefix: ids 1..n, no hole, no garbage, and at
            // least everything that had been flushed.
            let last = welcome["last_id"].as_u64().unwrap();
            assert!(
                (durable..=handed_out).contains(&last),
                "round {round}: last id {last}"
            );
            let first = replayed.first().copied().unwrap_or(last + 1);
            assert_eq!(
                replayed,
                (first..=last).collect::<Vec<_>>(),
                "round {round}"
            );

            let ids = say_many(
                &mut ann,
                (0..20).map(|n| format!("round {round} flushed {n}")),
            )
            .await;
            assert_eq!(ids[0], last + 1, "ids did not continue after the restart");
            // Wait for the disk thread to report the write (the server logs each flush).
            loop {
                let line = log.recv_timeout(STEP).expect("no flush reported");
                if line.contains("history: wrote") {
                    break;
                }
            }
            durable = *ids.last().unwrap();
            // These may or may not reach the disk before the kill.
            let more = say_many(
                &mut ann,
                (0..20).map(|n| format!("round {round} racing {n}")),
            )
            .await;
            handed_out = *more.last().unwrap();
        });
        child.kill().unwrap(); // SIGKILL: no flush, no goodbye
        child.wait().unwrap();
    }
}
