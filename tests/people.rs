//! Identity over real sockets: the sign-in page, signed cookies, the passcode and its rate
//! limit, name clashes, presence and the rooms list.

mod common;

use async_tungstenite::tungstenite::Message;
use common::*;
use smol::stream::StreamExt;

fn with_passcode(code: &str) -> smolchat::Config {
    smolchat::Config {
        passcode: Some(code.into()),
        ..config()
    }
}

#[test]
fn a_first_visit_gets_the_sign_in_page_and_a_signed_cookie_opens_the_chat() {
    let server = start(config());
    smol::block_on(async {
        let first = get(server.addr, "/r/kitchen", &[]).await;
        assert_eq!(first.status, 200);
        let html = first.text();
        assert!(
            html.contains(r#"action="/login""#) && html.contains(r#"name="name""#),
            "{html}"
        );
        assert!(
            html.contains(r#"value="/r/kitchen""#),
            "the form does not lead back to the room"
        );
        assert!(!html.contains("passcode"), "no passcode is set");

        let reply = post_login(server.addr, "  Ann Lee ", "", "/r/kitchen").await;
        assert_eq!(reply.status, 303);
        assert_eq!(reply.header("location"), Some("/r/kitchen"));
        let set = reply.header("set-cookie").unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        let cookie = session_cookie(&reply);
        let page = get(server.addr, "/r/kitchen", &[&cookie]).await;
        assert!(page.text().contains(r#"data-name="Ann Lee""#));

        // The WebSocket takes the name from the cookie; ?name= cannot override it.
        let header = cookie.trim_start_matches("Cookie: ");
        let ws = try_ws_with(
            server.addr,
            "/ws/kitchen?name=Mallory",
            &[("Cookie", header)],
        )
        .await
        .unwrap();
        let mut ws = expect_welcome(ws, "Ann Lee").await;
        say(&mut ws, "hi").await;
        assert_eq!(next_message(&mut ws).await["name"], "Ann Lee");
    });
}

#[test]
fn altered_cookies_are_refused() {
    let server = start(with_passcode("sesame"));
    smol::block_on(async {
        let cookie = sign_in(server.addr, "ann", "sesame").await;
        // Claim to be bob: flip the name in the signed value, keep the signature.
        let forged = cookie.replace(&hex("ann"), &hex("bob"));
        assert_ne!(forged, cookie);
        let page = get(server.addr, "/", &[&forged]).await;
        assert!(
            page.text().contains(r#"action="/login""#),
            "a forged cookie opened the chat"
        );
        let refused = try_ws_with(
            server.addr,
            "/ws/lobby",
            &[("Cookie", forged.trim_start_matches("Cookie: "))],
        )
        .await;
        assert!(refused.is_err(), "a forged cookie opened a WebSocket");
        let garbage = get(server.addr, "/", &["Cookie: smolchat=abc.def"]).await;
        assert!(garbage.text().contains(r#"action="/login""#));
    });
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn with_a_passcode_nobody_gets_in_without_it() {
    let server = start(with_passcode("open sesame"));
    smol::block_on(async {
        let page = get(server.addr, "/", &[]).await;
        assert!(page.text().contains(r#"name="passcode""#));
        let wrong = post_login(server.addr, "ann", "open barley", "/").await;
        assert_eq!(wrong.status, 401);
        assert!(wrong.text().contains("Wrong passcode"));
        assert!(wrong.header("set-cookie").is_none());
        // No cookie, no WebSocket: not even with ?name=.
        let status = status_of(
            server.addr,
            get_request(server.addr, "/ws/lobby?name=ann", &UPGRADE),
        )
        .await;
        assert_eq!(status, 401);

        assert_eq!(get(server.addr, "/rooms", &[]).await.status, 401);
        assert_eq!(get(server.addr, "/session", &[]).await.status, 401);

        let cookie = sign_in(server.addr, "ann", "open sesame").await;
        assert_eq!(get(server.addr, "/rooms", &[&cookie]).await.status, 200);
        let me = get(server.addr, "/session", &[&cookie]).await;
        assert_eq!(me.text(), r#"{"name":"ann"}"#);
        let header = cookie.trim_start_matches("Cookie: ");
        let ws = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", header)])
            .await
            .unwrap();
        expect_welcome(ws, "ann").await;
    });
}

const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

#[test]
fn wrong_passcodes_are_rate_limited_per_address() {
    let server = start(with_passcode("right"));
    smol::block_on(async {
        for _ in 0..5 {
            assert_eq!(
                post_login(server.addr, "eve", "guess", "/").await.status,
                401
            );
        }
        let limited = post_login(server.addr, "eve", "guess", "/").await;
        assert_eq!(limited.status, 429);
        assert!(limited.header("retry-after").is_some());
        // Even the right passcode waits now: guessing must not be able to continue.
        assert_eq!(
            post_login(server.addr, "eve", "right", "/").await.status,
            429
        );
    });
}

#[test]
fn bad_names_are_refused_with_the_reason() {
    let server = start(config());
    smol::block_on(async {
        let blank = post_login(server.addr, "   ", "", "/").await;
        assert_eq!(blank.status, 400);
        assert!(blank.text().contains("at least one visible character"));
        let long = post_login(server.addr, &"x".repeat(33), "", "/").await;
        assert_eq!(long.status, 400);
        // An outside address as "next" is ignored.
        let reply = post_login(server.addr, "ann", "", "http://evil.example/").await;
        assert_eq!(reply.header("location"), Some("/"));
    });
}

#[test]
fn two_people_cannot_share_a_name_in_a_room_but_one_person_can_use_two_tabs() {
    let server = start(config());
    smol::block_on(async {
        let ann = sign_in(server.addr, "Ann", "").await;
        let other_ann = sign_in(server.addr, "ann", "").await;
        let header = |c: &str| c.trim_start_matches("Cookie: ").to_owned();

        let tab1 = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", &header(&ann))])
            .await
            .unwrap();
        let _tab1 = expect_welcome(tab1, "Ann").await;
        let tab2 = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", &header(&ann))])
            .await
            .unwrap();
        let _tab2 = expect_welcome(tab2, "Ann").await;

        let mut clash = try_ws_with(server.addr, "/ws/lobby", &[("Cookie", &header(&other_ann))])
            .await
            .unwrap();
        let (code, reason) = close_frame(&mut clash).await;
        assert_eq!(code, 4409);
        assert!(reason.contains("taken"), "{reason}");
        // Elsewhere the name is free.
        let elsewhere = try_ws_with(
            server.addr,
            "/ws/kitchen",
            &[("Cookie", &header(&other_ann))],
        )
        .await
        .unwrap();
        expect_welcome(elsewhere, "ann").await;
    });
}

#[test]
fn presence_lists_who_is_here_and_rooms_lists_where_people_are() {
    let server = start(config());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        let bob = ws(server.addr, "/ws/lobby?name=bob").await;
        let mut bob = expect_welcome(bob, "bob").await;
        let joined = next_json(&mut ann).await;
        assert_eq!(
            (joined["name"].as_str(), joined["people"].as_u64()),
            (Some("bob"), Some(2))
        );
        let _cat = join(server.addr, "kitchen", "cat").await;

        let rooms: serde_json::Value =
            serde_json::from_slice(&get(server.addr, "/rooms", &[]).await.body).unwrap();
        assert_eq!(
            rooms,
            serde_json::json!([{"room": "kitchen", "people": 1}, {"room": "lobby", "people": 2}])
        );

        bob.close(None).await.unwrap();
        while within("bob's close", bob.next()).await.is_some() {}
        let left = next_json(&mut ann).await;
        assert_eq!(
            (left["type"].as_str(), left["people"].as_u64()),
            (Some("leave"), Some(1))
        );
        // Everything the page shows comes from text frames; nothing else was sent.
        say(&mut ann, "still here").await;
        match within("frame", ann.next()).await {
            Some(Ok(Message::Text(text))) => assert!(text.contains("still here")),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn the_names_given_to_nameless_clients_cannot_be_signed_in_under() {
    let server = start(config());
    smol::block_on(async {
        for kept in ["anonymous", "Anonymous", " ANONYMOUS-12 "] {
            let reply = post_login(server.addr, kept, "", "/").await;
            assert_eq!(reply.status, 400, "{kept}");
            assert!(
                reply.text().contains("kept for people who give none"),
                "{kept}"
            );
        }
        for free in ["anonymously", "anonymous-", "anonymous-x", "Anon"] {
            assert_eq!(
                post_login(server.addr, free, "", "/").await.status,
                303,
                "{free}"
            );
        }
    });
}
