//! Sharing files over real sockets: uploads within and over the limits, who may upload, hostile
//! names and contents, ranges, the quota, and a restart.

mod common;

use common::*;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use std::path::Path;

fn with_files(dir: &Path, max: u64, quota: u64) -> smolchat::Config {
    smolchat::Config {
        data_dir: Some(dir.to_owned()),
        max_file_bytes: max,
        files_quota: Some(quota),
        ..config()
    }
}

#[test]
fn a_shared_photo_reaches_the_room_and_is_served_inline() {
    let dir = temp_dir("files-photo");
    let server = start(with_files(&dir, 1 << 20, 10 << 20));
    smol::block_on(async {
        let (cookie, mut ann) = seated(server.addr, "ann", "lobby").await;
        let (_, mut bob) = seated(server.addr, "bob", "lobby").await;
        let photo = gif(1000);
        let reply = post(server.addr, "/files/lobby?name=cat.gif", &cookie, &photo).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let answer = json(&reply);
        let seen = next_file(&mut bob).await;
        assert_eq!(seen, answer);
        assert_eq!(next_file(&mut ann).await, answer);
        assert_eq!(seen["name"], "ann");
        let file = &seen["file"];
        assert_eq!(file["name"], "cat.gif");
        assert_eq!(file["size"], photo.len());
        assert_eq!(file["type"], "image/gif");
        assert_eq!(
            (file["width"].as_u64(), file["height"].as_u64()),
            (Some(3), Some(2))
        );
        let url = file["url"].as_str().unwrap();
        let got = get(server.addr, url, &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, photo);
        assert_eq!(got.header("content-type"), Some("image/gif"));
        assert!(got
            .header("content-disposition")
            .unwrap()
            .starts_with("inline"));
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        assert!(got
            .header("content-security-policy")
            .unwrap()
            .starts_with("sandbox"));
        // Revalidation: the ETag answers 304.
        let etag = got.header("etag").unwrap().to_owned();
        let again = get(server.addr, url, &[&format!("If-None-Match: {etag}")]).await;
        assert_eq!(again.status, 304);
        // Kept in history: a newcomer gets it replayed.
        let cookie = sign_in(server.addr, "cat", "").await;
        let value = cookie.trim_start_matches("Cookie: ").to_owned();
        let mut cat = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", &value)])
            .await
            .unwrap();
        assert_eq!(next_json(&mut cat).await["type"], "welcome");
        assert_eq!(next_json(&mut cat).await, answer);
    });
}

#[test]
fn who_may_upload_and_how_much() {
    let dir = temp_dir("files-who");
    let server = start(with_files(&dir, 4096, 1 << 20));
    smol::block_on(async {
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        // At the limit.
        let reply = post(server.addr, "/files/lobby?name=a.bin", &cookie, &[7; 4096]).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        // Over it: refused from the head alone, before any body byte is sent.
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /files/lobby?name=b.bin HTTP/1.1\r\nHost: x\r\n{cookie}\r\nContent-Length: 4097\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until(&mut stream, "\r\n\r\n", "the 413").await;
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
        // No session, no seat in that room, no name.
        let none = post(server.addr, "/files/lobby?name=a", "X-No: cookie", b"abc").await;
        assert_eq!(none.status, 401);
        let elsewhere = post(server.addr, "/files/kitchen?name=a", &cookie, b"abc").await;
        assert_eq!(elsewhere.status, 403, "{}", elsewhere.text());
        let unnamed = post(server.addr, "/files/lobby", &cookie, b"abc").await;
        assert_eq!(unnamed.status, 400);
    });
    // Nothing refused left anything behind: one file and the index.
    assert_eq!(std::fs::read_dir(dir.join("files")).unwrap().count(), 2);
}

#[test]
fn hostile_names_and_contents_are_made_harmless() {
    let dir = temp_dir("files-hostile");
    let server = start(with_files(&dir, 1 << 20, 10 << 20));
    smol::block_on(async {
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        // 10 KB of name does not fit a request head: refused, bounded, nothing stored.
        let huge = format!("/files/lobby?name={}", "n".repeat(10_000));
        assert_eq!(
            post(server.addr, &huge, &cookie, b"plain").await.status,
            431
        );
        let long = "n".repeat(4_000);
        for (raw, clean) in [
            ("..%2F..%2Fetc%2Fpasswd", "passwd".to_string()),
            ("a%00b.txt", "ab.txt".to_string()),
            ("photo%E2%80%AEgpj.exe", "photogpj.exe".to_string()),
            (long.as_str(), "n".repeat(120)),
        ] {
            let reply = post(
                server.addr,
                &format!("/files/lobby?name={raw}"),
                &cookie,
                b"plain",
            )
            .await;
            assert_eq!(reply.status, 201, "{raw}: {}", reply.text());
            assert_eq!(json(&reply)["file"]["name"], clean.as_str());
        }
        for (name, body) in [
            ("page.html", &b"<html><script>alert(1)</script></html>"[..]),
            (
                "x.svg",
                &b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>"[..],
            ),
            (
                "photo.jpg",
                &b"<!doctype html><script>alert(1)</script>"[..],
            ),
        ] {
            let reply = post(
                server.addr,
                &format!("/files/lobby?name={name}"),
                &cookie,
                body,
            )
            .await;
            assert_eq!(reply.status, 201);
            let url = json(&reply)["file"]["url"].as_str().unwrap().to_owned();
            let got = get(server.addr, &url, &[]).await;
            assert_eq!(got.body, body);
            assert_eq!(
                got.header("content-type"),
                Some("application/octet-stream"),
                "{name}"
            );
            assert!(got
                .header("content-disposition")
                .unwrap()
                .starts_with("attachment"));
            assert!(got
                .header("content-security-policy")
                .unwrap()
                .starts_with("sandbox"));
            assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        }
    });
    // On disk only ids and the index.
    for entry in std::fs::read_dir(dir.join("files")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "index.json"
                || (name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())),
            "{name}"
        );
    }
}

#[test]
fn ranges_quota_and_a_restart() {
    let dir = temp_dir("files-ranges");
    let server = start(with_files(&dir, 1000, 2500));
    // ASCII, so the test's reply parser (which reads heads as text) finds the body exactly.
    let body: Vec<u8> = (0..1000u32).map(|n| b'a' + (n % 26) as u8).collect();
    let (first, second) = smol::block_on(async {
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        let url = |reply: &Reply| json(reply)["file"]["url"].as_str().unwrap().to_owned();
        let first = url(&post(server.addr, "/files/lobby?name=a", &cookie, &body).await);
        for (range, status, want) in [
            ("bytes=0-9", 206, &body[0..10]),
            ("bytes=500-509", 206, &body[500..510]),
            ("bytes=-5", 206, &body[995..]),
        ] {
            let got = get(server.addr, &first, &[&format!("Range: {range}")]).await;
            assert_eq!((got.status, &got.body[..]), (status, want), "{range}");
        }
        let mid = get(server.addr, &first, &["Range: bytes=500-509"]).await;
        assert_eq!(mid.header("content-range"), Some("bytes 500-509/1000"));
        let past = get(server.addr, &first, &["Range: bytes=1000-"]).await;
        assert_eq!(past.status, 416);
        assert_eq!(past.header("content-range"), Some("bytes */1000"));

        let second = url(&post(server.addr, "/files/lobby?name=b", &cookie, &body).await);
        // A third does not fit beside both: the oldest goes.
        let third = post(server.addr, "/files/lobby?name=c", &cookie, &body).await;
        assert_eq!(third.status, 201);
        assert_eq!(get(server.addr, &first, &[]).await.status, 404);
        assert_eq!(get(server.addr, &second, &[]).await.status, 200);
        (first, second)
    });
    assert!(server.shutdown());
    // The index survives a restart; a quota smaller than what is there refuses what cannot fit.
    let server = start(with_files(&dir, 1000, 900));
    smol::block_on(async {
        assert_eq!(get(server.addr, &first, &[]).await.status, 404);
        assert_eq!(get(server.addr, &second, &[]).await.body, body);
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        let refused = post(server.addr, "/files/lobby?name=d", &cookie, &body).await;
        assert_eq!(refused.status, 507, "{}", refused.text());
        assert!(refused.text().contains("quota"));
    });
}

#[test]
fn concurrent_uploads_all_arrive_whole() {
    let dir = temp_dir("files-concurrent");
    let server = start(with_files(&dir, 1 << 20, 64 << 20));
    smol::block_on(async {
        let (cookie, mut ann) = seated(server.addr, "ann", "lobby").await;
        let uploads = (0..8u8).map(|n| {
            let cookie = cookie.clone();
            let addr = server.addr;
            smol::spawn(async move {
                let body = vec![n; 200_000];
                let reply = post(addr, &format!("/files/lobby?name=f{n}"), &cookie, &body).await;
                assert_eq!(reply.status, 201, "{}", reply.text());
                (json(&reply), body)
            })
        });
        let mut ids = Vec::new();
        for task in uploads.collect::<Vec<_>>() {
            let (frame, body) = task.await;
            let got = get(server.addr, frame["file"]["url"].as_str().unwrap(), &[]).await;
            assert_eq!(got.body, body);
            ids.push(frame["id"].as_u64().unwrap());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8);
        for _ in 0..8 {
            next_file(&mut ann).await;
        }
    });
}

#[test]
fn sharing_off_answers_404() {
    let server = start(config()); // no data directory
    smol::block_on(async {
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        let reply = post(server.addr, "/files/lobby?name=a", &cookie, b"abc").await;
        assert_eq!(reply.status, 404);
        let page = get(server.addr, "/", &[&cookie]).await;
        assert!(page.text().contains("data-max-file-bytes=\"0\""));
    });
}

#[test]
fn kill_9_mid_upload_leaves_no_partial_file_and_no_orphan() {
    let dir = temp_dir("files-kill9");
    let spawn = || spawn_on_disk(&["--files-quota", "10MiB"], &dir);
    let (mut child, addr, _log) = spawn();
    let kept = smol::block_on(async {
        let (cookie, _ann) = seated(addr, "ann", "lobby").await;
        let reply = post(addr, "/files/lobby?name=kept.bin", &cookie, &[1; 5000]).await;
        assert_eq!(reply.status, 201);
        let kept = json(&reply)["file"]["url"].as_str().unwrap().to_owned();
        // Half of a 1 MB upload, then the server dies.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /files/lobby?name=cut.bin HTTP/1.1\r\nHost: x\r\n{cookie}\r\nContent-Length: 1000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[2; 500_000]).await.unwrap();
        // The partial file exists (bounded wait on the disk, not on time).
        let parts = || {
            std::fs::read_dir(dir.join("files"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".part")
                })
                .count()
        };
        within("the partial file to appear", async {
            while parts() == 0 {
                smol::future::yield_now().await;
            }
        })
        .await;
        kept
    });
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, addr, log) = spawn();
    smol::block_on(async {
        let got = get(addr, &kept, &[]).await;
        assert_eq!((got.status, got.body.len()), (200, 5000));
    });
    let names: Vec<String> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the kept file and the index: {names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".part")));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(log);
}

#[test]
fn uploads_per_address_are_limited_per_minute() {
    let dir = temp_dir("files-rate");
    let server = start(smolchat::Config {
        uploads_per_minute: 3,
        ..with_files(&dir, 4096, 1 << 20)
    });
    smol::block_on(async {
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        // Refused before it could start (no seat): not counted.
        let elsewhere = post(server.addr, "/files/kitchen?name=a", &cookie, b"abc").await;
        assert_eq!(elsewhere.status, 403);
        for n in 0..3 {
            let reply = post(
                server.addr,
                &format!("/files/lobby?name={n}"),
                &cookie,
                b"abc",
            )
            .await;
            assert_eq!(reply.status, 201, "upload {n}: {}", reply.text());
        }
        // Another person from the same address shares the allowance.
        let (other, _bob) = seated(server.addr, "bob", "lobby").await;
        let over = post(server.addr, "/files/lobby?name=x", &other, b"abc").await;
        assert_eq!(over.status, 429, "{}", over.text());
        let wait: u64 = over.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        assert!(over.text().contains("try again"), "{}", over.text());
        let health = get(server.addr, "/healthz", &[]).await;
        let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
        assert_eq!(health["refused"]["uploads"], 1);
    });
    // The refused upload left nothing: three files and the index.
    assert_eq!(std::fs::read_dir(dir.join("files")).unwrap().count(), 4);
}

/// Moves the stored time of the file at `url` back by `days` in the index of a stopped
/// server (the time the age check reads), as if it had been shared that long ago.
fn age_in_index(dir: &Path, url: &str, days: u64) {
    let id = url.split('/').nth(2).unwrap();
    let path = dir.join("files").join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = index
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the index"));
    let created = entry["created"].as_u64().unwrap();
    entry["created"] = (created - days * 86_400).into();
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn files_older_than_file_days_are_removed_and_show_as_gone() {
    let dir = temp_dir("files-expiry");
    let config = || smolchat::Config {
        file_days: Some(2),
        ..with_files(&dir, 4096, 1 << 20)
    };
    let server = start(config());
    let (old, fresh) = smol::block_on(async {
        let (cookie, _ann) = seated(server.addr, "ann", "lobby").await;
        let url = |reply: &Reply| json(reply)["file"]["url"].as_str().unwrap().to_owned();
        let old = url(&post(server.addr, "/files/lobby?name=old.txt", &cookie, b"old").await);
        let fresh = url(&post(server.addr, "/files/lobby?name=new.txt", &cookie, b"new").await);
        (old, fresh)
    });
    assert!(server.shutdown());
    // Three days old is past --file-days 2; one day old is not.
    age_in_index(&dir, &old, 3);
    age_in_index(&dir, &fresh, 1);
    let server = start(config());
    smol::block_on(async {
        let gone = get(server.addr, &old, &[]).await;
        assert_eq!(gone.status, 404);
        assert!(gone.text().contains("gone"), "{}", gone.text());
        assert_eq!(get(server.addr, &fresh, &[]).await.body, b"new");
        // The room still replays both shares; the page asks for the file and shows the
        // expired one as gone on that 404 (tests/browser/files.test.mjs).
        let cookie = sign_in(server.addr, "cat", "").await;
        let value = cookie.trim_start_matches("Cookie: ").to_owned();
        let mut cat = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", &value)])
            .await
            .unwrap();
        assert_eq!(next_json(&mut cat).await["type"], "welcome");
        let replayed = [next_file(&mut cat).await, next_file(&mut cat).await];
        let urls: Vec<&str> = replayed
            .iter()
            .map(|f| f["file"]["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls, [old.as_str(), fresh.as_str()]);
    });
    // Its bytes are gone from the disk and from the index.
    let id = old.split('/').nth(2).unwrap();
    assert!(!dir.join("files").join(id).exists());
    let index = std::fs::read_to_string(dir.join("files").join("index.json")).unwrap();
    assert!(!index.contains(id), "{index}");
}

#[test]
fn deleting_a_file_message_removes_the_file() {
    let dir = temp_dir("files-delete");
    let server = start(with_files(&dir, 1 << 20, 10 << 20));
    smol::block_on(async {
        let (cookie, mut ann) = seated(server.addr, "ann", "lobby").await;
        let reply = post(server.addr, "/files/lobby?name=cat.gif", &cookie, &gif(100)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let shared = next_file(&mut ann).await;
        let url = shared["file"]["url"].as_str().unwrap().to_owned();
        assert_eq!(get(server.addr, &url, &[]).await.status, 200);
        let delete = serde_json::json!({"action": "delete", "id": shared["id"]});
        ann.send(async_tungstenite::tungstenite::Message::text(
            delete.to_string(),
        ))
        .await
        .unwrap();
        loop {
            let frame = next_json(&mut ann).await;
            if frame["type"] == "delete" {
                assert_eq!(frame["id"], shared["id"]);
                break;
            }
        }
        // The file goes off the disk right after its message (a task of its own): out of the
        // index first (no longer served), then its bytes.
        let on_disk = dir.join("files").join(url.split('/').nth(2).unwrap());
        let deadline = std::time::Instant::now() + STEP;
        while on_disk.exists() || get(server.addr, &url, &[]).await.status != 404 {
            assert!(std::time::Instant::now() < deadline, "{url} still there");
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
    });
}
