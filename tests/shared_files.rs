//! Files in rooms shared across boxes (`--redis`), over real sockets and a real
//! `redis-server`: a file shared on one box reaches every box's members with one id, and every
//! box serves it, fetched from the box that holds it (passcode, ranges and the file policy
//! kept); deleting its message removes it everywhere; a holder that is down is a clear 502.

#![cfg(feature = "redis")]

mod common;

use common::redis::*;
use common::*;
use std::path::Path;

const PASSCODE: &str = "open sesame";
const ADMIN: &str = "host secret";

/// A box on `redis` that keeps files in `dir`, behind a passcode, with hosts.
fn files_box(redis: &RedisServer, dir: &Path) -> TestServer {
    start(smolchat::Config {
        data_dir: Some(dir.to_owned()),
        passcode: Some(PASSCODE.into()),
        admin_passcode: Some(ADMIN.into()),
        ..redis.config(50)
    })
}

/// Signs in on `addr` and takes a seat in `room`; the cookie line and the socket.
async fn seated_with_passcode(addr: std::net::SocketAddr, name: &str) -> (String, Ws) {
    let (ws, cookie) = enter(addr, "lobby", name, PASSCODE).await;
    (format!("Cookie: {cookie}"), ws)
}

#[test]
fn a_file_shared_on_one_box_is_served_by_every_box() {
    let redis = RedisServer::start("shared-files");
    let (dir_a, dir_b) = (temp_dir("shared-files-a"), temp_dir("shared-files-b"));
    let a = files_box(&redis, &dir_a);
    let b = files_box(&redis, &dir_b);
    let photo = gif(4000);
    smol::block_on(async {
        let (ann, mut ann_ws) = seated_with_passcode(a.addr, "ann").await;
        let (bob, mut bob_ws) = seated_with_passcode(b.addr, "bob").await;
        let reply = post(a.addr, "/files/lobby?name=cat.gif", &ann, &photo).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let frame = json(&reply);
        assert_eq!(frame["id"], 1, "numbered by Redis: {frame}");
        assert_eq!(
            next_file(&mut bob_ws).await,
            frame,
            "box B's members get it"
        );
        assert_eq!(next_file(&mut ann_ws).await, frame);
        let url = frame["file"]["url"].as_str().unwrap().to_owned();

        // Box B serves it, fetched from box A, with the file's own headers and policy.
        let got = get(b.addr, &url, &[&bob]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body, photo);
        assert_eq!(got.header("content-type"), Some("image/gif"));
        let policy = got.header("content-security-policy").unwrap_or_default();
        assert!(policy.starts_with("sandbox"), "{policy}");
        let part = get(b.addr, &url, &[&bob, "Range: bytes=0-9"]).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.body, photo[..10]);
        let total = photo.len();
        assert_eq!(
            part.header("content-range"),
            Some(format!("bytes 0-9/{total}").as_str())
        );
        // The passcode holds on box B, and box A wants a box's token, not just any header.
        assert_eq!(get(b.addr, &url, &[]).await.status, 401);
        let forged = get(a.addr, &url, &["X-Smolchat-Box: guess"]).await;
        assert_eq!(forged.status, 401);
        // Nothing of it was stored on box B.
        let on_b = std::fs::read_dir(dir_b.join("files"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert!(on_b <= 1, "box B stored the file ({on_b} entries)");

        // Its author deletes the message on box A: the file is gone on every box.
        act(
            &mut ann_ws,
            serde_json::json!({"action": "delete", "id": 1}),
        )
        .await;
        assert_eq!(next_of(&mut bob_ws, "delete").await["id"], 1);
        assert_eq!(get(a.addr, &url, &[&ann]).await.status, 404);
        assert_eq!(get(b.addr, &url, &[&bob]).await.status, 404);
    });
}

#[test]
fn a_file_deleted_from_another_box_goes_and_a_holder_that_is_down_is_a_502() {
    let redis = RedisServer::start("shared-files-down");
    let (dir_a, dir_b) = (temp_dir("shared-down-a"), temp_dir("shared-down-b"));
    let a = files_box(&redis, &dir_a);
    let b = files_box(&redis, &dir_b);
    smol::block_on(async {
        let (ann, mut ann_ws) = seated_with_passcode(a.addr, "ann").await;
        let (bob, mut bob_ws) = seated_with_passcode(b.addr, "bob").await;
        let first = json(&post(a.addr, "/files/lobby?name=one.gif", &ann, &gif(10)).await);
        let second = json(&post(a.addr, "/files/lobby?name=two.gif", &ann, &gif(20)).await);
        for frame in [&first, &second] {
            assert_eq!(next_file(&mut bob_ws).await, *frame);
        }
        let (one, two) = (
            first["file"]["url"].as_str().unwrap().to_owned(),
            second["file"]["url"].as_str().unwrap().to_owned(),
        );
        // A host on box B removes the first: box A, which holds the file, removes it.
        let (mut boss, _) = enter(b.addr, "lobby", "Host", ADMIN).await;
        act(
            &mut boss,
            serde_json::json!({"action": "delete", "id": first["id"]}),
        )
        .await;
        assert_eq!(next_of(&mut ann_ws, "delete").await["id"], first["id"]);
        within("box A removing the file", async {
            while get(a.addr, &one, &[&ann]).await.status != 404 {
                smol::Timer::after(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(get(b.addr, &one, &[&bob]).await.status, 404);
        assert_eq!(get(b.addr, &two, &[&bob]).await.status, 200);

        // Box A stops: its files cannot be fetched, and box B says so.
        drop(ann_ws);
        assert!(a.shutdown());
        let down = get(b.addr, &two, &[&bob]).await;
        assert_eq!(down.status, 502, "{}", down.text());
    });
}

#[test]
fn an_upload_while_redis_is_away_is_refused_and_leaves_nothing() {
    let mut redis = RedisServer::start("shared-files-away");
    let dir = temp_dir("shared-away");
    let a = files_box(&redis, &dir);
    smol::block_on(async {
        let (ann, _ann_ws) = seated_with_passcode(a.addr, "ann").await;
        redis.kill();
        until_redis_is(a.addr, "down").await;
        let refused = post(a.addr, "/files/lobby?name=late.gif", &ann, &gif(100)).await;
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert!(refused.text().contains("Not sent"), "{}", refused.text());
    });
    // Only the store's index is left.
    let left: Vec<_> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.iter().all(|name| name == "index.json"), "{left:?}");
}
