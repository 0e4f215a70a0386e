//! Hosts' rulings across boxes sharing rooms through one real `redis-server` (`--redis`): a ban,
//! mute, lock, announcement, deletion or clear given on one box holds on every box at once and
//! for a box started afterwards; a name seated only on another box can be banned from here;
//! while Redis is away, hosts' actions are refused rather than kept by one box alone.
//!
//! Every test client is 127.0.0.1, so a ban or mute (which also holds by address) reaches every
//! guest: bystanders here are hosts, whom an address never catches.

#![cfg(feature = "redis")]

mod common;

use common::redis::*;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const ADMIN: &str = "host secret";

/// A box on `redis` with hosts, keeping `history` messages per room. Sign-ins are not limited
/// per minute: the tests poll the door by signing in until a ruling reaches it.
fn shared_box(redis: &RedisServer, history: usize) -> TestServer {
    start(smolchat::Config {
        admin_passcode: Some(ADMIN.into()),
        sign_ins_per_minute: 100_000,
        ..redis.config(history)
    })
}

/// Polls (bounded) until `status` of a fresh sign-in on `addr` is `wanted`: another box's
/// ruling reaches this box's door shortly after its rooms.
async fn until_sign_in_is(addr: SocketAddr, wanted: u16) {
    within(&format!("a sign-in answered {wanted}"), async {
        while post_login(addr, "Newcomer", "", "/").await.status != wanted {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[test]
fn a_ban_given_on_one_box_shuts_out_and_refuses_on_every_box_and_after_a_restart() {
    let redis = RedisServer::start("shared-ban");
    let a = shared_box(&redis, 50);
    let b = shared_box(&redis, 50);
    smol::block_on(async {
        // Mallory is on box B only, in two rooms; the host who bans her is on box A.
        let (mut mallory, cookie) = enter(b.addr, "lobby", "Mallory", "").await;
        let mut side = tab(b.addr, "side", &cookie, "Mallory").await;
        let (mut watcher, _) = enter(b.addr, "lobby", "Watcher", ADMIN).await;
        let (mut boss, _) = enter(a.addr, "lobby", "Host", ADMIN).await;
        act(
            &mut boss,
            serde_json::json!({"action": "ban", "name": "Mallory", "reason": "spam"}),
        )
        .await;
        assert_eq!(
            next_of(&mut boss, "notice").await["text"],
            "A host banned Mallory: spam"
        );
        assert_eq!(
            close_frame(&mut mallory).await,
            (4403, "banned: spam".into())
        );
        assert_eq!(close_frame(&mut side).await, (4403, "banned: spam".into()));
        assert_eq!(
            next_of(&mut watcher, "notice").await["text"],
            "A host banned Mallory: spam",
            "box B's members are told too"
        );
        // Box B turns her session away at its door; both boxes turn her address away.
        let mallory = format!("Cookie: {cookie}");
        assert_eq!(get(b.addr, "/", &[&mallory]).await.status, 403);
        until_sign_in_is(b.addr, 403).await;
        until_sign_in_is(a.addr, 403).await;
        // Box A's host lists it.
        act(&mut boss, serde_json::json!({"action": "bans"})).await;
        let bans = next_of(&mut boss, "bans").await;
        assert_eq!(bans["bans"][0]["name"], "Mallory", "{bans}");
    });
    assert!(b.shutdown());

    // A box started afterwards, with nothing on disk, reads the book from Redis.
    let c = shared_box(&redis, 50);
    smol::block_on(async {
        until_sign_in_is(c.addr, 403).await;
        let nameless = try_ws(c.addr, "/ws/lobby?name=anon").await;
        assert!(
            nameless.is_err(),
            "a banned address got a WebSocket on box C"
        );
        // Lifted on box C, lifted on box A.
        let (mut boss, _) = enter(c.addr, "lobby", "Host", ADMIN).await;
        act(
            &mut boss,
            serde_json::json!({"action": "unban", "name": "Mallory"}),
        )
        .await;
        assert_eq!(
            next_of(&mut boss, "notice").await["text"],
            "A host lifted the ban on Mallory."
        );
        until_sign_in_is(a.addr, 303).await;
        until_sign_in_is(c.addr, 303).await;
    });
}

#[test]
fn a_lock_and_a_mute_given_on_one_box_hold_on_the_other() {
    let redis = RedisServer::start("shared-mute");
    let a = shared_box(&redis, 50);
    let b = shared_box(&redis, 50);
    smol::block_on(async {
        let (mut bob, _) = enter(b.addr, "lobby", "Bob", "").await;
        let (mut boss, _) = enter(a.addr, "lobby", "Host", ADMIN).await;

        act(&mut boss, serde_json::json!({"action": "lock"})).await;
        assert_eq!(next_of(&mut bob, "room").await["locked"], true);
        assert_eq!(
            next_of(&mut bob, "notice").await["event"],
            "locked",
            "box B's members hear why"
        );
        say(&mut bob, "hello?").await;
        assert_eq!(next_of(&mut bob, "error").await["code"], "locked");
        let mut late = ws(b.addr, "/ws/lobby?name=late").await;
        assert_eq!(next_json(&mut late).await["locked"], true);
        drop(late);

        act(&mut boss, serde_json::json!({"action": "unlock"})).await;
        assert_eq!(next_of(&mut bob, "room").await["locked"], false);
        said(&mut bob, "free again").await;

        act(
            &mut boss,
            serde_json::json!({"action": "mute", "name": "Bob", "minutes": 5}),
        )
        .await;
        assert_eq!(
            next_of(&mut bob, "notice").await["text"],
            "Bob was muted for 5 min."
        );
        say(&mut bob, "still here").await;
        assert_eq!(next_of(&mut bob, "error").await["code"], "muted");
        act(
            &mut boss,
            serde_json::json!({"action": "unmute", "name": "Bob"}),
        )
        .await;
        assert_eq!(
            next_of(&mut bob, "notice").await["text"],
            "Bob may write again."
        );
        said(&mut bob, "thank you").await;

        // A standing announcement shows on the other box, and comes down there too.
        act(
            &mut boss,
            serde_json::json!({"action": "announce", "text": "Dinner at six"}),
        )
        .await;
        let standing = next_of(&mut bob, "notice").await;
        assert_eq!(
            (standing["text"].as_str(), standing["standing"].as_bool()),
            (Some("Dinner at six"), Some(true))
        );
        let mut late = ws(b.addr, "/ws/lobby?name=later").await;
        let standing = next_of(&mut late, "notice").await;
        assert_eq!(standing["text"], "Dinner at six", "newcomers see it");
    });
}

#[test]
fn deleting_and_clearing_on_one_box_removes_the_messages_everywhere() {
    let redis = RedisServer::start("shared-delete");
    let a = shared_box(&redis, 50);
    let b = shared_box(&redis, 50);
    smol::block_on(async {
        let (mut ann, _) = enter(b.addr, "lobby", "Ann", "").await;
        let (mut boss, _) = enter(a.addr, "lobby", "Host", ADMIN).await;
        let mut ids = Vec::new();
        for n in 1..=3 {
            ids.push(said(&mut ann, &format!("m{n}")).await);
        }
        assert_eq!(messages_of(&mut boss, 3).await, ids);

        // A host on A removes Ann's second message.
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": ids[1]}),
        )
        .await;
        for ws in [&mut boss, &mut ann] {
            assert_eq!(next_of(ws, "delete").await["id"], ids[1]);
            assert_eq!(
                next_of(ws, "notice").await["text"],
                "A host removed a message."
            );
        }
        // Ann removes her own third, on B; A's members are told.
        act(
            &mut ann,
            serde_json::json!({"action": "delete", "id": ids[2]}),
        )
        .await;
        assert_eq!(next_of(&mut boss, "delete").await["id"], ids[2]);
        assert_eq!(next_of(&mut ann, "delete").await["id"], ids[2]);

        // Both boxes, and one started now (history from Redis alone), replay only the first.
        let c = shared_box(&redis, 50);
        // (A name is one person's across boxes, and a socket just dropped may still hold it.)
        for (addr, name) in [(a.addr, "late-a"), (b.addr, "late-b"), (c.addr, "late-c")] {
            assert_eq!(replayed(addr, "lobby", name, Some(0)).await, [ids[0]]);
        }

        let kept = said(&mut ann, "m4").await;
        act(&mut boss, serde_json::json!({"action": "clear"})).await;
        let clear = next_of(&mut ann, "clear").await;
        assert_eq!(clear["id"].as_u64(), Some(kept));
        assert_eq!(
            next_of(&mut ann, "notice").await["text"],
            "A host cleared the room's history."
        );
        for (addr, name) in [
            (a.addr, "later-a"),
            (b.addr, "later-b"),
            (c.addr, "later-c"),
        ] {
            assert!(replayed(addr, "lobby", name, Some(0)).await.is_empty());
        }
        // Ids go on after the clear.
        assert_eq!(said(&mut ann, "m5").await, kept + 1);
    });
}

#[test]
fn a_host_is_refused_while_redis_is_away_rather_than_rule_one_box_alone() {
    let mut redis = RedisServer::start("shared-away");
    let a = shared_box(&redis, 50);
    smol::block_on(async {
        let (mut boss, _) = enter(a.addr, "lobby", "Host", ADMIN).await;
        redis.kill();
        until_redis_is(a.addr, "down").await;
        act(&mut boss, serde_json::json!({"action": "lock"})).await;
        let refused = next_of(&mut boss, "error").await;
        assert_eq!(refused["code"], "unavailable", "{refused}");
        redis.restart();
        until_redis_is(a.addr, "up").await;
        act(&mut boss, serde_json::json!({"action": "lock"})).await;
        assert_eq!(next_of(&mut boss, "room").await["locked"], true);
    });
}

/// Reads `n` chat messages; returns their ids.
async fn messages_of(ws: &mut Ws, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        ids.push(next_message(ws).await["id"].as_u64().unwrap());
    }
    ids
}
