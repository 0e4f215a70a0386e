//! HTTP over real sockets: the page, assets, headers, `/healthz`, and upgrade checks.

mod common;

use common::*;

const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// Every `http://` or `https://` in `text`, except the SVG namespace name (an identifier that
/// is never fetched).
fn external_urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in text.match_indices(scheme) {
            let url: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            if url != "http://www.w3.org/2000/svg" {
                found.push(url);
            }
        }
    }
    found
}

#[test]
fn the_page_has_the_host_injected_and_refers_to_no_other_host() {
    let server = start(config());
    smol::block_on(async {
        let cookie = sign_in(server.addr, "Ann", "").await;
        let page = raw_request(
            server.addr,
            &format!("GET / HTTP/1.1\r\nHost: chatbox.local:8080\r\n{cookie}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), Some("text/html;charset=utf-8"));
        let html = page.text();
        assert!(html.contains(r#"data-host="chatbox.local:8080""#), "{html}");
        assert!(html.contains(r#"data-room="lobby""#));
        let csp = page
            .header("content-security-policy")
            .expect("a CSP header");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        let inline_handler = html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest.as_bytes().get(name_len) == Some(&b'=')
        });
        assert!(
            !html.contains("<script>") && !inline_handler,
            "inline script in the page"
        );

        let mut everything = html.clone();
        for (path, mime) in [
            ("/assets/chat.js", "text/javascript; charset=utf-8"),
            ("/assets/moderation.js", "text/javascript; charset=utf-8"),
            ("/assets/chat.css", "text/css; charset=utf-8"),
            ("/assets/icon.svg", "image/svg+xml"),
        ] {
            assert!(html.contains(path), "page does not load {path}");
            let asset = get(server.addr, path, &[]).await;
            assert_eq!(asset.status, 200, "{path}");
            assert_eq!(asset.header("content-type"), Some(mime), "{path}");
            assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
            let etag = asset.header("etag").expect("an ETag").to_owned();
            let again = get(server.addr, path, &[&format!("If-None-Match: {etag}")]).await;
            assert_eq!(again.status, 304, "{path} revalidation");
            assert!(again.body.is_empty());
            everything.push_str(&asset.text());
        }
        // The Invite panel shows the page's own address (the host the browser used), as text.
        let others: Vec<String> = external_urls(&everything)
            .into_iter()
            .filter(|url| !url.starts_with("http://chatbox.local:8080/"))
            .collect();
        assert_eq!(others, Vec::<String>::new());
    });
}

#[test]
fn room_pages_and_their_names() {
    let server = start(config());
    smol::block_on(async {
        let cookie = sign_in(server.addr, "Ann", "").await;
        let page = get(server.addr, "/r/book-club_2", &[&cookie]).await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains(r#"data-room="book-club_2""#));
        for bad in [
            "/r/Book",
            "/r/has%20space",
            &format!("/r/{}", "x".repeat(33)),
        ] {
            assert_eq!(get(server.addr, bad, &[]).await.status, 400, "{bad}");
            assert_eq!(
                get(server.addr, &bad.replace("/r/", "/ws/"), &UPGRADE)
                    .await
                    .status,
                400
            );
        }
        let hostile = raw_request(
            server.addr,
            &format!("GET / HTTP/1.1\r\nHost: \"><script>x</script>\r\n{cookie}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(hostile.status, 400);
        assert_eq!(get(server.addr, "/nope", &[]).await.status, 404);
    });
}

#[test]
fn healthz_counts_rooms_connections_and_messages() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "one", "ann").await;
        let _bob = join(server.addr, "two", "bob").await;
        say(&mut ann, "counted").await;
        next_message(&mut ann).await;
        let health = get(server.addr, "/healthz", &[]).await;
        assert_eq!(health.status, 200);
        let mut json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
        // The accounted memory is the started server's share plus what two clients hold.
        let memory = json.as_object_mut().unwrap().remove("memory").unwrap();
        let accounted = memory["accounted_bytes"].as_u64().unwrap();
        let base = smolchat::meter::BASE_BYTES;
        let two = 2 * smolchat::meter::CONNECTION_BYTES;
        assert!(
            (base + two..base + two + 64 * 1024).contains(&accounted),
            "{memory}"
        );
        assert_eq!(memory["budget_bytes"], serde_json::Value::Null);
        // Two joins and the message at least; presence may add more.
        let delivered = json.as_object_mut().unwrap().remove("delivered").unwrap();
        assert!(delivered.as_u64().unwrap() >= 3, "{delivered}");
        assert_eq!(
            json,
            serde_json::json!({"rooms": 2, "connections": 2, "messages": 1, "dropped": 0, "disk_bytes": 0,
                "held_back": 0, "flooders_closed": 0, "dropped_for_backlog": 0,
                "refused": {"connections": 0, "per_address": 0, "new_rooms": 0, "sign_ins": 0,
                            "passcode": 0, "origin": 0, "memory": 0, "uploads": 0, "banned": 0},
                "moderated": {"delete": 0, "own_delete": 0, "kick": 0, "mute": 0, "unmute": 0,
                              "ban": 0, "unban": 0, "lock": 0, "unlock": 0, "announce": 0,
                              "clear": 0}})
        );
    });
}

#[test]
fn cross_origin_upgrades_are_refused_unless_allowed() {
    let mut config = config();
    config.allow_origins = vec!["http://friend.example:8080".into()];
    let server = start(config);
    smol::block_on(async {
        let host = server.addr.to_string();
        let upgrade_from = |origin: String| {
            let mut lines: Vec<String> = UPGRADE.iter().map(|l| l.to_string()).collect();
            lines.push(format!("Origin: {origin}"));
            lines
        };
        let try_origin = |origin: String| {
            let lines = upgrade_from(origin);
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            status_of(server.addr, get_request(server.addr, "/ws/lobby", &refs))
        };
        assert_eq!(try_origin("http://evil.example".into()).await, 403);
        assert_eq!(try_origin(format!("http://{host}")).await, 101);
        assert_eq!(try_origin("http://FRIEND.example:8080".into()).await, 101);
        assert_eq!(try_origin(format!("http://{host}.evil.example")).await, 403);
    });
}

#[test]
fn bad_upgrade_requests_are_refused() {
    let server = start(config());
    smol::block_on(async {
        assert_eq!(get(server.addr, "/ws/lobby", &[]).await.status, 400);
        let old_version = [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 8",
            "Sec-WebSocket-Key: x",
        ];
        assert_eq!(
            get(server.addr, "/ws/lobby", &old_version).await.status,
            400
        );
        let long_name = format!("/ws/lobby?name={}", "n".repeat(33));
        assert_eq!(get(server.addr, &long_name, &UPGRADE).await.status, 400);
        assert_eq!(
            get(server.addr, "/ws/lobby?name=%20%20", &UPGRADE)
                .await
                .status,
            400
        );
        // No name is fine: the server gives each nameless client a name of its own, so any
        // number of them share a room (the book's page sends no name).
        let mut anon = ws(server.addr, "/ws/lobby").await;
        assert_eq!(next_json(&mut anon).await["name"], "anonymous-1");
        let mut second = ws(server.addr, "/ws/lobby?name=anonymous").await;
        let welcome = next_json(&mut second).await;
        assert_eq!(welcome["name"], "anonymous-2");
        assert_eq!(
            welcome["members"],
            serde_json::json!(["anonymous-1", "anonymous-2"])
        );
        say(&mut second, "two of us").await;
        assert_eq!(next_message(&mut anon).await["name"], "anonymous-2");
    });
}

#[test]
fn expect_100_continue_is_answered_by_us_and_bodies_are_bounded() {
    let server = start(config());
    smol::block_on(async {
        let reply = raw_request(
            server.addr,
            "POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert_eq!(reply.status, 405, "tide answers POST to a GET route");

        let huge = raw_request(
            server.addr,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
        )
        .await;
        assert_eq!(huge.status, 413);
        let chunked = raw_request(
            server.addr,
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
        assert_eq!(chunked.status, 411);
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(9000)
        );
        assert_eq!(raw_request(server.addr, &big_head).await.status, 431);
        let http10 = raw_request(server.addr, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
        assert!(http10.status >= 400, "{}", http10.status);
    });
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(config());
    smol::block_on(async {
        let mut stream = smol::net::TcpStream::connect(server.addr).await.unwrap();
        let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        // The first answer arrives while the connection stays open.
        read_until(&mut stream, "\"dropped\"", "first response").await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        within("second response", stream.read_to_end(&mut rest))
            .await
            .unwrap();
        assert_eq!(parse_reply(&rest).status, 200);
    });
}
