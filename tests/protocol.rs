//! The server as a client that is not our page sees it, over raw sockets: pipelined HTTP
//! requests, close frames that arrive before the connection ends (even while the client keeps
//! sending), the per-address limits, and the `/healthz` counts of refusals.

mod common;

use async_tungstenite::tungstenite::Message;
use common::*;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::net::SocketAddr;

/// Reads until the server closes; returns everything, or the error that ended the stream.
async fn read_all(stream: &mut TcpStream) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match within("reading until the server closes", stream.read(&mut chunk)).await {
            Ok(0) => return (bytes, None),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) => return (bytes, Some(error.kind())),
        }
    }
}

/// Splits a byte stream into the responses in it: (status, body), in order.
fn responses(bytes: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let text = String::from_utf8_lossy(rest);
        let head_len = text.find("\r\n\r\n").expect("a whole head") + 4;
        let head = &text[..head_len];
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("every answer has a Content-Length");
        let body = String::from_utf8_lossy(&rest[head_len..head_len + length]).into_owned();
        out.push((status, body));
        rest = &rest[head_len + length..];
    }
    out
}

/// Writes `requests` in one `write` and returns the answers, read until the server closes.
async fn pipelined(addr: SocketAddr, requests: &str) -> Vec<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let (bytes, error) = read_all(&mut stream).await;
    assert_eq!(error, None, "the connection was reset");
    responses(&bytes)
}

#[test]
fn pipelined_gets_are_all_answered_in_order() {
    let server = start(config());
    smol::block_on(async {
        let requests = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
                        GET /assets/nowhere HTTP/1.1\r\nHost: x\r\n\r\n\
                        GET /rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answers = pipelined(server.addr, requests).await;
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [200, 404, 200], "{answers:?}");
        assert!(answers[0].1.contains("\"connections\""), "{answers:?}");
        assert_eq!(answers[2].1, "[]");
    });
}

#[test]
fn pipelined_requests_with_and_without_bodies_are_all_answered_in_order() {
    let server = start(config());
    smol::block_on(async {
        let body = "name=Ann&next=%2Fr%2Fkitchen";
        let requests = format!(
            "GET /rooms HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}\
             GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /logout HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
             GET /session HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let answers = pipelined(server.addr, &requests).await;
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [200, 303, 200, 303, 401], "{answers:?}");
        assert!(answers[2].1.contains("\"rooms\""), "{answers:?}");
    });
}

#[test]
fn a_body_and_the_next_request_in_one_segment_are_both_used() {
    let server = start(config());
    smol::block_on(async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let body = "name=Bob";
        // The head alone first, then the body and the whole next request in one write.
        let head = format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let rest = format!("{body}GET /rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(rest.as_bytes()).await.unwrap();
        let (bytes, error) = read_all(&mut stream).await;
        assert_eq!(error, None);
        let answers = responses(&bytes);
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [303, 200], "{answers:?}");
    });
}

#[test]
fn frames_sent_right_behind_the_upgrade_request_reach_the_room() {
    let server = start(config());
    smol::block_on(async {
        let mut witness = join(server.addr, "lobby", "witness").await;
        let mut raw = TcpStream::connect(server.addr).await.unwrap();
        // The upgrade request and a first message in one write, before the 101 came back.
        let mut bytes = upgrade_request(server.addr, "/ws/lobby?name=eager").into_bytes();
        bytes.extend(client_frame(true, 1, br#"{"text":"first"}"#));
        raw.write_all(&bytes).await.unwrap();
        let message = next_message(&mut witness).await;
        assert_eq!(
            (message["name"].as_str(), message["text"].as_str()),
            (Some("eager"), Some("first"))
        );
    });
}

/// A WebSocket upgrade request for `path`.
fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// One masked client frame (`opcode` 1 text, 2 binary, 0 continuation) with the given payload.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(u8::from(fin) << 7 | opcode, payload)
}

/// A masked client frame whose first byte (FIN, RSV bits, opcode) is given as is.
fn client_frame_with(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Parses the server's (unmasked) frames from the start of `bytes`; returns the close code of
/// the first close frame, if a whole one is there.
fn close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, at) = match bytes[1] & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().unwrap())),
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        let payload = bytes.get(at..at + len)?;
        if opcode == 8 {
            return Some(u16::from_be_bytes(payload.get(..2)?.try_into().unwrap()));
        }
        bytes = &bytes[at + len..];
    }
    None
}

/// Opens a raw WebSocket as `name` in `room`, sends `offence`, and then keeps sending `filler`
/// (up to a mebibyte, or until the server stops taking it) while reading. Returns the close
/// code the client read, and how its stream ended after it: `None` is a clean end (FIN).
async fn offend_and_keep_sending(
    addr: SocketAddr,
    room: &str,
    name: &str,
    offence: Vec<u8>,
    filler: Vec<u8>,
) -> (u16, Option<std::io::ErrorKind>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request(addr, &format!("/ws/{room}?name={name}")).as_bytes())
        .await
        .unwrap();
    let head = read_until(&mut stream, "\r\n\r\n", "the 101").await;
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let after_head = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut received = head[after_head..].to_vec();

    let mut writer = stream.clone();
    let sender = smol::spawn(async move {
        writer.write_all(&offence).await?;
        // Bounded: a mebibyte of filler at most.
        for _ in 0..(1 << 20) / filler.len().max(1) {
            writer.write_all(&filler).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut chunk = [0u8; 4096];
    let code = loop {
        if let Some(code) = close_code(&received) {
            break code;
        }
        match within("the close frame", stream.read(&mut chunk)).await {
            Ok(0) => panic!("the connection ended without a close frame"),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("{error} before the close frame arrived"),
        }
    };
    let end = loop {
        match within("the end of the stream", stream.read(&mut chunk)).await {
            Ok(0) => break None,
            Ok(_) => continue,
            Err(error) => break Some(error.kind()),
        }
    };
    // Ignored: the server stops reading at some point, and then the sender fails.
    let _ = sender.await;
    (code, end)
}

#[test]
fn limit_closes_arrive_before_the_end_even_while_the_client_keeps_sending() {
    let server = start(config());
    smol::block_on(async {
        let filler = client_frame(false, 0, &[b'x'; 1000]);
        // An unfinished fragmented message that grows over the 4096-byte limit.
        let mut fragmented = client_frame(false, 1, &[b'a'; 3000]);
        fragmented.extend(client_frame(false, 0, &[b'b'; 3000]));
        let cases = [
            ("fragmented", fragmented, 1009),
            ("whole", client_frame(true, 1, &[b'c'; 5000]), 1009),
            ("garbled", client_frame(true, 1, &[0xff, 0xfe, 0x41]), 1007),
            ("binary", client_frame(true, 2, &[1, 2, 3]), 1003),
            // A reserved bit set without an extension: a protocol error.
            ("reserved", client_frame_with(0x80 | 0x40 | 1, b"hi"), 1002),
        ];
        for (name, offence, expected) in cases {
            let (code, end) =
                offend_and_keep_sending(server.addr, "lobby", name, offence, filler.clone()).await;
            assert_eq!(code, expected, "{name}");
            assert_eq!(
                end, None,
                "{name}: the stream after the close frame was reset"
            );
        }
    });
}

#[test]
fn http_refusals_are_read_before_the_connection_ends() {
    let server = start(config());
    smol::block_on(async {
        // A head that is too large, and the client goes on sending.
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let mut writer = stream.clone();
        let sender = smol::spawn(async move {
            writer.write_all(b"GET / HTTP/1.1\r\nX-Pad: ").await?;
            for _ in 0..32 {
                writer.write_all(&[b'p'; 1024]).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let (bytes, error) = read_all(&mut stream).await;
        let _ = sender.await;
        assert_eq!(error, None, "reset before the answer was read");
        assert_eq!(parse_reply(&bytes).status, 431);
    });
}

/// The `refused` counters `/healthz` shows.
async fn refused(addr: SocketAddr) -> serde_json::Value {
    let health = get(addr, "/healthz", &[]).await;
    assert_eq!(health.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    json["refused"].clone()
}

/// The status of a WebSocket upgrade that was refused.
async fn refused_upgrade(addr: SocketAddr, path: &str) -> (u16, Option<String>) {
    use async_tungstenite::tungstenite::Error as WsError;
    match within("a refused upgrade", try_ws(addr, path)).await {
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        Ok(_) => panic!("{path}: the upgrade was accepted"),
        Err(other) => panic!("{path}: {other}"),
    }
}

#[test]
fn one_address_holds_only_so_many_sockets_and_gets_them_back_when_they_close() {
    let server = start(smolchat::Config {
        max_sockets_per_address: 3,
        ..config()
    });
    smol::block_on(async {
        let mut tabs = Vec::new();
        for n in 0..3 {
            tabs.push(join(server.addr, "lobby", &format!("tab{n}")).await);
        }
        assert_eq!(
            refused_upgrade(server.addr, "/ws/lobby?name=tab3").await.0,
            429
        );
        assert_eq!(refused(server.addr).await["per_address"], 1);
        // A tab closes: its slot is free as soon as the close is seen.
        let mut gone = tabs.pop().unwrap();
        gone.close(None).await.unwrap();
        while let Some(Ok(_)) = within("the end of a tab", gone.next()).await {}
        let _again = join(server.addr, "lobby", "tab3").await;
        // A socket the server closed for a limit gives its slot back too.
        let mut rude = tabs.pop().unwrap();
        rude.send(Message::binary(vec![1u8])).await.unwrap();
        assert_eq!(close_frame(&mut rude).await.0, 1003);
        let _and_again = join(server.addr, "lobby", "tab4").await;
        assert_eq!(refused(server.addr).await["per_address"], 1);
        assert_eq!(server.stats().connections, 3);
    });
}

#[test]
fn one_address_starts_only_so_many_rooms_a_minute_but_may_join_any() {
    let server = start(smolchat::Config {
        new_rooms_per_minute: 2,
        ..config()
    });
    smol::block_on(async {
        let _one = join(server.addr, "one", "ann").await;
        let _two = join(server.addr, "two", "ann").await;
        let (status, retry_after) = refused_upgrade(server.addr, "/ws/three?name=ann").await;
        assert_eq!(status, 429);
        let wait: u64 = retry_after.expect("a Retry-After").parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        // Rooms that are running are joined freely.
        let _more = join(server.addr, "one", "bob").await;
        let _still = join(server.addr, "two", "bob").await;
        let counts = refused(server.addr).await;
        assert_eq!(
            (counts["new_rooms"].as_u64(), counts["per_address"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(server.stats().rooms, 2);
    });
}

#[test]
fn sign_ins_and_name_changes_are_limited_per_address() {
    let server = start(smolchat::Config {
        sign_ins_per_minute: 2,
        ..config()
    });
    smol::block_on(async {
        let cookie = sign_in(server.addr, "Ann", "").await;
        // A name change is a sign-in with a cookie.
        let body = "name=Annie";
        let change = format!(
            "POST /login HTTP/1.1\r\nHost: x\r\n{cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(raw_request(server.addr, &change).await.status, 303);
        let third = raw_request(server.addr, &change).await;
        assert_eq!(third.status, 429);
        let wait: u64 = third.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            third.text().contains("Too many sign-ins"),
            "{}",
            third.text()
        );
        assert_eq!(post_login(server.addr, "Bob", "", "/").await.status, 429);
        assert_eq!(refused(server.addr).await["sign_ins"], 2);
    });
}

#[test]
fn healthz_counts_refusals_per_reason() {
    let server = start(smolchat::Config {
        max_connections: 1,
        ..config()
    });
    smol::block_on(async {
        let _one = join(server.addr, "lobby", "ann").await;
        assert_eq!(
            refused_upgrade(server.addr, "/ws/lobby?name=bob").await.0,
            503
        );
        let foreign = get_request(
            server.addr,
            "/ws/lobby",
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                "Origin: http://evil.example",
            ],
        );
        assert_eq!(status_of(server.addr, foreign).await, 403);
        let counts = refused(server.addr).await;
        assert_eq!(
            counts,
            serde_json::json!({"connections": 1, "per_address": 0, "new_rooms": 0,
                               "sign_ins": 0, "passcode": 0, "origin": 1, "memory": 0, "uploads": 0, "banned": 0})
        );
    });
}

#[test]
fn requests_behind_a_connection_close_do_not_reset_its_answer() {
    let server = start(config());
    smol::block_on(async {
        let mut requests =
            String::from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        // Enough behind it that the server cannot have read it all with the first request.
        for _ in 0..200 {
            requests.push_str("GET /rooms HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        let answers = pipelined(server.addr, &requests).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].0, 200);
    });
}
