//! Moderation over real sockets: hosts sign in with the admin passcode and act over the
//! WebSocket; guests are refused; deletions are gone for good (newcomers, catch-up, restarts,
//! compaction, kill -9); mutes expire; bans hold by session and address across a restart.

mod common;

use common::*;
use smol::Timer;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN: &str = "host secret";

fn with_hosts() -> smolchat::Config {
    smolchat::Config {
        admin_passcode: Some(ADMIN.into()),
        ..config()
    }
}

fn with_hosts_on_disk(dir: &Path, history: usize) -> smolchat::Config {
    smolchat::Config {
        data_dir: Some(dir.to_owned()),
        history,
        ..with_hosts()
    }
}

async fn host(addr: SocketAddr, room: &str) -> Ws {
    enter(addr, room, "Host", ADMIN).await.0
}

fn healthz(addr: SocketAddr) -> serde_json::Value {
    smol::block_on(async {
        let reply = get(addr, "/healthz", &[]).await;
        serde_json::from_slice(&reply.body).unwrap()
    })
}

#[test]
fn guests_are_refused_every_host_action_and_the_welcome_says_who_is_a_host() {
    let server = start(with_hosts());
    smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let mut guest = join(server.addr, "lobby", "guest").await;
        let id = said(&mut boss, "the host speaks").await;
        next_message(&mut guest).await;
        for action in [
            serde_json::json!({"action": "delete", "id": id}),
            serde_json::json!({"action": "kick", "name": "Host"}),
            serde_json::json!({"action": "mute", "name": "Host", "minutes": 5}),
            serde_json::json!({"action": "ban", "name": "Host"}),
            serde_json::json!({"action": "unban", "name": "Host"}),
            serde_json::json!({"action": "bans"}),
            serde_json::json!({"action": "lock"}),
            serde_json::json!({"action": "announce", "text": "free pizza"}),
            serde_json::json!({"action": "clear"}),
        ] {
            act(&mut guest, action.clone()).await;
            let error = next_of(&mut guest, "error").await;
            assert_eq!(error["code"], "forbidden", "{action}: {error}");
        }
        // Nothing happened: the host's message still replays, the room is not locked.
        assert_eq!(replayed(server.addr, "lobby", "late", None).await, [id]);
        act(&mut guest, serde_json::json!({"action": "explode"})).await;
        assert_eq!(next_of(&mut guest, "error").await["code"], "bad_action");
        // A host cannot be acted on either.
        act(
            &mut boss,
            serde_json::json!({"action": "kick", "name": "Host"}),
        )
        .await;
        assert_eq!(next_of(&mut boss, "error").await["code"], "forbidden");
        act(
            &mut boss,
            serde_json::json!({"action": "kick", "name": "nobody"}),
        )
        .await;
        assert_eq!(next_of(&mut boss, "error").await["code"], "not_found");
    });
    assert_eq!(healthz(server.addr)["moderated"]["kick"], 0);

    // Who is a host is in the welcome; a guest's sign-in with a wrong passcode is refused.
    smol::block_on(async {
        let cookie = sign_in(server.addr, "Host", ADMIN).await;
        let value = cookie.trim_start_matches("Cookie: ");
        let mut boss = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", value)])
            .await
            .unwrap();
        let welcome = next_json(&mut boss).await;
        assert_eq!(
            (welcome["host"].as_bool(), welcome["locked"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(welcome["delete_window"], 600);
        let mut guest = ws(server.addr, "/ws/lobby?name=g2").await;
        assert_eq!(next_json(&mut guest).await["host"], false);
        assert_eq!(
            post_login(server.addr, "Eve", "guess", "/").await.status,
            401
        );
    });
}

#[test]
fn a_kicked_person_is_closed_with_4403_and_the_reason_and_may_come_back() {
    let server = start(with_hosts());
    smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let (mut bob, cookie) = enter(server.addr, "lobby", "Bob", "").await;
        // Bob's second tab goes too; his tab in another room stays.
        let mut bob_tab = tab(server.addr, "lobby", &cookie, "Bob").await;
        let mut bob_elsewhere = tab(server.addr, "side", &cookie, "Bob").await;
        act(
            &mut boss,
            serde_json::json!({"action": "kick", "name": "Bob", "reason": "be nice"}),
        )
        .await;
        assert_eq!(
            close_frame(&mut bob).await,
            (4403, "kicked: be nice".into())
        );
        assert_eq!(
            close_frame(&mut bob_tab).await,
            (4403, "kicked: be nice".into())
        );
        // Bob leaves, and a line says why.
        let (mut notice, mut leave) = (None, None);
        while notice.is_none() || leave.is_none() {
            let frame = next_json(&mut boss).await;
            match frame["type"].as_str() {
                Some("notice") => notice = Some(frame),
                Some("leave") => leave = Some(frame["name"].clone()),
                _ => {}
            }
        }
        let notice = notice.unwrap();
        assert_eq!(notice["text"], "A host removed Bob from the room: be nice");
        // The same line for pages in other languages: what happened, to whom, why.
        assert_eq!(
            (&notice["event"], &notice["name"], &notice["detail"]),
            (&"kicked".into(), &"Bob".into(), &"be nice".into())
        );
        assert_eq!(leave.unwrap(), "Bob");
        say(&mut bob_elsewhere, "still here").await;
        assert_eq!(next_message(&mut bob_elsewhere).await["text"], "still here");
        // Kicked, not banned: Bob may come back.
        tab(server.addr, "lobby", &cookie, "Bob").await;
    });
    assert_eq!(healthz(server.addr)["moderated"]["kick"], 1);
}

#[test]
fn authors_delete_their_own_messages_within_the_window_and_hosts_any() {
    let server = start(with_hosts());
    smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let (mut ann, _) = enter(server.addr, "lobby", "Ann", "").await;
        let (mut bob, _) = enter(server.addr, "lobby", "Bob", "").await;
        let oops = said(&mut ann, "oops, wrong room").await;
        let bobs = said(&mut bob, "bob's words").await;
        // Not Bob's to delete.
        act(
            &mut bob,
            serde_json::json!({"action": "delete", "id": oops}),
        )
        .await;
        assert_eq!(next_of(&mut bob, "error").await["code"], "forbidden");
        act(
            &mut ann,
            serde_json::json!({"action": "delete", "id": oops}),
        )
        .await;
        for ws in [&mut ann, &mut bob, &mut boss] {
            let delete = next_of(ws, "delete").await;
            assert_eq!(
                (delete["id"].as_u64(), delete["room"].as_str()),
                (Some(oops), Some("lobby"))
            );
        }
        // The host deletes Bob's; everyone is told, with a notice line.
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": bobs}),
        )
        .await;
        assert_eq!(next_of(&mut ann, "delete").await["id"], bobs);
        assert_eq!(
            next_of(&mut ann, "notice").await["text"],
            "A host removed a message."
        );
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": bobs}),
        )
        .await;
        assert_eq!(next_of(&mut boss, "error").await["code"], "not_found");
        assert!(replayed(server.addr, "lobby", "late", None)
            .await
            .is_empty());
    });
    let moderated = &healthz(server.addr)["moderated"];
    assert_eq!(
        (
            moderated["delete"].as_u64(),
            moderated["own_delete"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Past the window, the author may not.
    let server = start(smolchat::Config {
        delete_window: Duration::ZERO,
        ..with_hosts()
    });
    smol::block_on(async {
        let (mut ann, _) = enter(server.addr, "lobby", "Ann", "").await;
        let id = said(&mut ann, "forever").await;
        act(&mut ann, serde_json::json!({"action": "delete", "id": id})).await;
        assert_eq!(next_of(&mut ann, "error").await["code"], "too_late");
        assert_eq!(replayed(server.addr, "lobby", "late", None).await, [id]);
    });
}

#[test]
fn deleted_and_cleared_messages_never_come_back() {
    let dir = temp_dir("moderation-delete");
    let server = start(with_hosts_on_disk(&dir, 4));
    let ids = smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let mut ids = Vec::new();
        for n in 1..=3 {
            ids.push(said(&mut boss, &format!("m{n}")).await);
        }
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": ids[1]}),
        )
        .await;
        next_of(&mut boss, "delete").await;
        // Not for a newcomer, not for a catch-up.
        assert_eq!(
            replayed(server.addr, "lobby", "late", None).await,
            [ids[0], ids[2]]
        );
        assert_eq!(
            replayed(server.addr, "lobby", "back", Some(ids[0])).await,
            [ids[2]]
        );
        ids
    });
    assert!(server.shutdown());
    let server = start(with_hosts_on_disk(&dir, 4));
    smol::block_on(async {
        assert_eq!(
            replayed(server.addr, "lobby", "late", None).await,
            [ids[0], ids[2]]
        );
        // Enough more to compact the file (past twice the history of 4), deleting the newest.
        let mut boss = host(server.addr, "lobby").await;
        let mut newest = 0;
        for n in 4..=12 {
            newest = said(&mut boss, &format!("m{n}")).await;
        }
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": newest}),
        )
        .await;
        next_of(&mut boss, "delete").await;
    });
    assert!(server.shutdown());
    let server = start(with_hosts_on_disk(&dir, 4));
    smol::block_on(async {
        // The newest standing messages, as many as the file kept (compaction may have run
        // before or after the delete), never the deleted newest.
        let ids = replayed(server.addr, "lobby", "late", None).await;
        let first = ids.first().copied().unwrap_or(0);
        assert!(
            ids.len() >= 3 && ids == (first..=11).collect::<Vec<_>>(),
            "{ids:?}"
        );
        let log = std::fs::metadata(dir.join("rooms/lobby.log"))
            .unwrap()
            .len();
        assert!(log < 13 * 80, "the file was never compacted: {log} bytes");
        let mut boss = host(server.addr, "lobby").await;
        // Ids are never reused, not even the deleted newest one's.
        assert_eq!(said(&mut boss, "next").await, 13);
        act(&mut boss, serde_json::json!({"action": "clear"})).await;
        let clear = next_of(&mut boss, "clear").await;
        assert_eq!(clear["id"], 13);
        assert_eq!(
            next_of(&mut boss, "notice").await["text"],
            "A host cleared the room's history."
        );
        assert!(replayed(server.addr, "lobby", "late", None)
            .await
            .is_empty());
    });
    assert!(server.shutdown());
    let server = start(with_hosts_on_disk(&dir, 4));
    smol::block_on(async {
        assert!(replayed(server.addr, "lobby", "late", None)
            .await
            .is_empty());
        let mut boss = host(server.addr, "lobby").await;
        assert_eq!(said(&mut boss, "after the clear").await, 14);
    });
}

#[test]
fn kill_9_straight_after_a_delete_keeps_it_deleted() {
    let dir = temp_dir("moderation-kill9");
    let spawn = || spawn_on_disk(&["--admin-passcode", ADMIN], &dir);
    let (mut child, addr, log) = spawn();
    smol::block_on(async {
        let mut boss = host(addr, "lobby").await;
        let first = said(&mut boss, "kept").await;
        let doomed = said(&mut boss, "doomed").await;
        let last = said(&mut boss, "also kept").await;
        assert_eq!((first, doomed, last), (1, 2, 3));
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": doomed}),
        )
        .await;
        next_of(&mut boss, "delete").await;
    });
    child.kill().unwrap(); // SIGKILL the moment the delete went out: no flush, no goodbye.
    child.wait().unwrap();
    // The host action was logged before it was announced.
    let audit: Vec<String> = log.iter().collect(); // Until the killed server's stderr ends.
    assert!(
        audit.iter().any(|l| l.contains("a host deleted message 2")),
        "{audit:?}"
    );
    let (mut child, addr, _log) = spawn();
    smol::block_on(async {
        // The messages said before the delete were written with its tombstone.
        assert_eq!(replayed(addr, "lobby", "late", None).await, [1, 3]);
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_muted_person_reads_but_is_refused_until_the_mute_ends() {
    let server = start(with_hosts());
    smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let (mut bob, _) = enter(server.addr, "lobby", "Bob", "").await;
        act(
            &mut boss,
            serde_json::json!({"action": "mute", "name": "Bob", "minutes": 0.03}),
        )
        .await;
        assert_eq!(
            next_of(&mut bob, "notice").await["text"],
            "Bob was muted for 2 s."
        );
        say(&mut bob, "let me talk").await;
        let error = next_of(&mut bob, "error").await;
        assert_eq!(error["code"], "muted");
        assert!(
            error["text"].as_str().unwrap().contains("until 20"),
            "{error}"
        );
        // He still reads.
        let id = said(&mut boss, "you can read this").await;
        assert_eq!(next_message(&mut bob).await["id"], id);
        // The mute ends by itself: try until a message goes through, within a bounded time.
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "the mute never ended");
            say(&mut bob, "am I back?").await;
            let frame = loop {
                let frame = next_json(&mut bob).await;
                if frame["type"] == "message" || frame["type"] == "error" {
                    break frame;
                }
            };
            if frame["type"] == "message" {
                assert_eq!(frame["text"], "am I back?");
                break;
            }
            Timer::after(Duration::from_millis(200)).await; // Between tries, not to sync.
        }
        // Nothing Bob sent while muted reached the host: the next message it sees is his.
        let seen = next_message(&mut boss).await;
        assert_eq!(
            (seen["name"].as_str(), seen["text"].as_str()),
            (Some("Bob"), Some("am I back?"))
        );
        // A long mute, lifted early.
        act(
            &mut boss,
            serde_json::json!({"action": "mute", "name": "Bob", "minutes": 60}),
        )
        .await;
        assert_eq!(
            next_of(&mut bob, "notice").await["text"],
            "Bob was muted for 60 min."
        );
        act(
            &mut boss,
            serde_json::json!({"action": "unmute", "name": "Bob"}),
        )
        .await;
        assert_eq!(
            next_of(&mut bob, "notice").await["text"],
            "Bob may write again."
        );
        assert!(said(&mut bob, "thanks").await > id);
    });
}

#[test]
fn a_ban_holds_by_session_and_address_in_every_room_and_across_a_restart() {
    let dir = temp_dir("moderation-ban");
    let server = start(with_hosts_on_disk(&dir, 10));
    let (mallory_cookie, host_cookie) = smol::block_on(async {
        let (mut boss, host_cookie) = enter(server.addr, "lobby", "Host", ADMIN).await;
        let (mut mallory, cookie) = enter(server.addr, "lobby", "Mallory", "").await;
        let mut elsewhere = tab(server.addr, "side", &cookie, "Mallory").await;
        act(
            &mut boss,
            serde_json::json!({"action": "ban", "name": "Mallory", "reason": "spam"}),
        )
        .await;
        assert_eq!(
            close_frame(&mut mallory).await,
            (4403, "banned: spam".into())
        );
        assert_eq!(
            close_frame(&mut elsewhere).await,
            (4403, "banned: spam".into())
        );
        assert_eq!(
            next_of(&mut boss, "notice").await["text"],
            "A host banned Mallory: spam"
        );
        act(&mut boss, serde_json::json!({"action": "bans"})).await;
        let bans = next_of(&mut boss, "bans").await;
        let listed = &bans["bans"][0];
        assert_eq!(
            (
                listed["kind"].as_str(),
                listed["name"].as_str(),
                listed["by"].as_str()
            ),
            (Some("ban"), Some("Mallory"), Some("Host"))
        );
        assert_eq!(listed["until"], serde_json::Value::Null);
        (cookie, host_cookie)
    });
    let refused = |addr: SocketAddr| {
        let mallory = format!("Cookie: {mallory_cookie}");
        let mallory_cookie = mallory_cookie.as_str();
        smol::block_on(async {
            // By session: her page and her WebSocket.
            assert_eq!(get(addr, "/", &[&mallory]).await.status, 403);
            let upgrade = try_ws_with(addr, "/ws/lobby", &[("Cookie", mallory_cookie)]).await;
            assert!(upgrade.is_err(), "a banned session got a WebSocket");
            // By address (every test client is 127.0.0.1): a fresh sign-in and a nameless socket.
            let fresh = post_login(addr, "NotMallory", "", "/").await;
            assert_eq!(fresh.status, 403);
            assert!(fresh.text().contains("spam"), "{}", fresh.text());
            assert!(try_ws(addr, "/ws/lobby?name=anon").await.is_err());
        })
    };
    refused(server.addr);
    assert!(healthz(server.addr)["refused"]["banned"].as_u64().unwrap() >= 4);
    assert!(server.shutdown());

    let server = start(with_hosts_on_disk(&dir, 10));
    refused(server.addr);
    smol::block_on(async {
        // A host is never shut out by an address ban: the old session and a new sign-in work.
        let mut boss = tab(server.addr, "lobby", &host_cookie, "Host").await;
        host(server.addr, "side").await;
        act(
            &mut boss,
            serde_json::json!({"action": "unban", "name": "Mallory"}),
        )
        .await;
        assert_eq!(
            next_of(&mut boss, "notice").await["text"],
            "A host lifted the ban on Mallory."
        );
        assert_eq!(
            post_login(server.addr, "Mallory", "", "/").await.status,
            303
        );
    });
}

#[test]
fn a_locked_room_is_read_only_for_guests_and_says_so_to_newcomers() {
    let dir = temp_dir("moderation-lock");
    let server = start(with_hosts_on_disk(&dir, 10));
    smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let (mut bob, _) = enter(server.addr, "lobby", "Bob", "").await;
        act(&mut boss, serde_json::json!({"action": "lock"})).await;
        let room = next_of(&mut bob, "room").await;
        assert_eq!(room["locked"], true);
        say(&mut bob, "hello?").await;
        assert_eq!(next_of(&mut bob, "error").await["code"], "locked");
        let id = said(&mut boss, "hosts still talk").await;
        assert_eq!(
            next_message(&mut bob).await["id"],
            id,
            "Bob's words were not broadcast"
        );
        let mut late = ws(server.addr, "/ws/lobby?name=late").await;
        assert_eq!(next_json(&mut late).await["locked"], true);
    });
    assert!(server.shutdown());
    // The lock outlasts a restart; unlocking lets everyone write again.
    let server = start(with_hosts_on_disk(&dir, 10));
    smol::block_on(async {
        let mut late = ws(server.addr, "/ws/lobby?name=late").await;
        assert_eq!(next_json(&mut late).await["locked"], true);
        let mut boss = host(server.addr, "lobby").await;
        act(&mut boss, serde_json::json!({"action": "unlock"})).await;
        assert_eq!(next_of(&mut boss, "room").await["locked"], false);
        let (mut bob, _) = enter(server.addr, "lobby", "Bob", "").await;
        said(&mut bob, "free at last").await;
    });
    assert_eq!(healthz(server.addr)["moderated"]["unlock"], 1);
}

#[test]
fn an_announcement_is_shown_to_everyone_and_to_newcomers() {
    let server = start(with_hosts());
    smol::block_on(async {
        let mut boss = host(server.addr, "lobby").await;
        let mut bob = join(server.addr, "lobby", "bob").await;
        let id = said(&mut boss, "before").await;
        act(
            &mut boss,
            serde_json::json!({"action": "announce", "text": "  Wi-Fi closes at 6  "}),
        )
        .await;
        let announced = next_of(&mut bob, "notice").await;
        assert_eq!(
            (announced["text"].as_str(), announced["standing"].as_bool()),
            (Some("Wi-Fi closes at 6"), Some(true))
        );
        // A newcomer gets it after the history, before its own join.
        let mut late = ws(server.addr, "/ws/lobby?name=late").await;
        assert_eq!(next_json(&mut late).await["type"], "welcome");
        assert_eq!(next_json(&mut late).await["id"], id);
        assert_eq!(next_json(&mut late).await, announced);
        // Taken down, it is no longer sent.
        act(
            &mut boss,
            serde_json::json!({"action": "announce", "text": ""}),
        )
        .await;
        let down = next_of(&mut bob, "notice").await;
        assert_eq!(
            (down["text"].as_str(), down["standing"].as_bool()),
            (Some(""), Some(true))
        );
        let line = next_of(&mut bob, "notice").await;
        assert_eq!(line["text"], "A host took the announcement down.");
        assert_eq!(line.get("standing"), None, "a one-off line is not standing");
        let mut later = ws(server.addr, "/ws/lobby?name=later").await;
        next_json(&mut later).await;
        assert_eq!(next_json(&mut later).await["id"], id);
        assert_eq!(next_json(&mut later).await["type"], "join");
    });
}

#[test]
fn guessing_the_admin_passcode_is_locked_out_like_the_passcode() {
    let server = start(with_hosts());
    smol::block_on(async {
        for guess in 0..5 {
            let reply = post_login(server.addr, "Eve", &format!("guess {guess}"), "/").await;
            assert_eq!(reply.status, 401, "guess {guess}");
        }
        // Locked out now, even with the right one.
        assert_eq!(post_login(server.addr, "Eve", ADMIN, "/").await.status, 429);
        // Guests without a passcode still get in (no passcode is needed to chat).
        assert_eq!(post_login(server.addr, "Ann", "", "/").await.status, 303);
    });
    assert_eq!(healthz(server.addr)["refused"]["passcode"], 1);

    // Without --admin-passcode there are no hosts: no passcode makes one.
    let server = start(config());
    smol::block_on(async {
        let (ws, _) = enter(server.addr, "lobby", "Ann", "anything").await;
        let mut ws = ws;
        act(&mut ws, serde_json::json!({"action": "lock"})).await;
        assert_eq!(next_of(&mut ws, "error").await["code"], "forbidden");
        let page = get(server.addr, "/login", &[]).await.text();
        assert!(
            !page.contains("Host passcode"),
            "host controls shown without hosts"
        );
    });
}
