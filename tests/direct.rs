//! Direct messages over real sockets: opening one tells the other person on the room they are
//! in, its messages reach only its two people (and notices reach only them), everyone else is
//! refused with 403 on the page, the upgrade and the member list, and it has history and
//! catch-up like any room.

mod common;

use common::*;
use smolchat::Config;

const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

async fn post(addr: std::net::SocketAddr, path: &str, cookie: &str) -> Reply {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw_request(addr, &request).await
}

async fn ws_as(addr: std::net::SocketAddr, path: &str, cookie: &str) -> Ws {
    let header = cookie.trim_start_matches("Cookie: ");
    within("WebSocket", try_ws_with(addr, path, &[("Cookie", header)]))
        .await
        .unwrap_or_else(|e| panic!("WebSocket to {path}: {e}"))
}

/// The next frame that is neither a join, a leave nor a presence list.
async fn next_news(ws: &mut Ws) -> serde_json::Value {
    loop {
        let frame = next_json(ws).await;
        if !["join", "leave", "presence"].contains(&frame["type"].as_str().unwrap_or("")) {
            return frame;
        }
    }
}

fn rooms_of(reply: &Reply) -> Vec<serde_json::Value> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn a_direct_room_is_for_its_two_people_only() {
    let server = start(Config {
        passcode: Some("open sesame".into()),
        ..config()
    });
    let addr = server.addr;
    smol::block_on(async {
        let ann = sign_in(addr, "Ann", "open sesame").await;
        let bob = sign_in(addr, "Bob", "open sesame").await;
        let cy = sign_in(addr, "Cy", "open sesame").await;
        let mut bob_lobby = expect_welcome(ws_as(addr, "/ws/lobby", &bob).await, "Bob").await;
        let mut cy_lobby = expect_welcome(ws_as(addr, "/ws/lobby", &cy).await, "Cy").await;

        // Nobody called Dee is here; nor can one open a room with oneself, or unsigned.
        assert_eq!(
            post(addr, "/dm?room=lobby&name=Dee", &ann).await.status,
            404
        );
        assert_eq!(
            post(addr, "/dm?room=lobby&name=Bob", "X-No: cookie")
                .await
                .status,
            401
        );
        let opened = post(addr, "/dm?room=lobby&name=Bob", &ann).await;
        assert_eq!(opened.status, 200, "{}", opened.text());
        let opened: serde_json::Value = serde_json::from_slice(&opened.body).unwrap();
        let room = opened["room"].as_str().unwrap().to_owned();
        assert_eq!(opened["with"], "Bob");
        assert!(room.starts_with("dm."), "{room}");

        // Bob hears of it on the room he is in, and his rooms list has it, with Ann's name.
        let notice = next_news(&mut bob_lobby).await;
        assert_eq!(
            (
                &notice["type"],
                &notice["room"],
                &notice["name"],
                &notice["direct"],
                &notice["id"]
            ),
            (
                &"activity".into(),
                &room.as_str().into(),
                &"Ann".into(),
                &true.into(),
                &0.into()
            )
        );
        let listed = rooms_of(&get(addr, "/rooms", &[&bob]).await);
        let entry = listed
            .iter()
            .find(|r| r["room"] == room.as_str())
            .expect("listed");
        assert_eq!(entry["with"], "Ann");
        // Cy's list does not show it.
        let theirs = rooms_of(&get(addr, "/rooms", &[&cy]).await);
        assert!(
            theirs.iter().all(|r| r["room"] != room.as_str()),
            "{theirs:?}"
        );

        // Everyone else is refused: page, upgrade and member list; an impostor called Bob too.
        let impostor = sign_in(addr, "Bob", "open sesame").await;
        for stranger in [&cy, &impostor] {
            assert_eq!(
                get(addr, &format!("/r/{room}"), &[stranger]).await.status,
                403
            );
            let upgrade: Vec<&str> = UPGRADE.iter().copied().chain([stranger.as_str()]).collect();
            let status = status_of(addr, get_request(addr, &format!("/ws/{room}"), &upgrade)).await;
            assert_eq!(status, 403);
            let members = get(addr, &format!("/rooms/{room}/members"), &[stranger]).await;
            assert_eq!(members.status, 403);
        }
        // A name that is no one pair's spelling is no room at all.
        let (a, b) = room["dm.".len()..].split_once('.').unwrap();
        let swapped = format!("dm.{b}.{a}");
        assert_eq!(
            get(addr, &format!("/r/{swapped}"), &[&ann]).await.status,
            400
        );
        // The two may see the page.
        assert_eq!(get(addr, &format!("/r/{room}"), &[&ann]).await.status, 200);
        let page = get(addr, &format!("/r/{room}"), &[&bob]).await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains("data-direct-with=\"Ann\""));

        // Ann speaks in the direct room: Bob is told on the lobby, Cy is told nothing.
        let mut ann_dm =
            expect_welcome(ws_as(addr, &format!("/ws/{room}"), &ann).await, "Ann").await;
        say(&mut ann_dm, "psst, Bob").await;
        assert_eq!(next_message(&mut ann_dm).await["text"], "psst, Bob");
        let notice = next_news(&mut bob_lobby).await;
        assert_eq!(
            (
                &notice["type"],
                &notice["room"],
                &notice["id"],
                &notice["name"]
            ),
            (
                &"activity".into(),
                &room.as_str().into(),
                &1.into(),
                &"Ann".into()
            )
        );
        say(&mut bob_lobby, "marker").await;
        // Cy's next news is the lobby's message: no notice of the direct room came first.
        let next = next_news(&mut cy_lobby).await;
        assert_eq!(
            (&next["type"], &next["text"]),
            (&"message".into(), &"marker".into())
        );

        // Bob opens it and reads the history; his answer reaches Ann.
        let mut bob_dm = ws_as(addr, &format!("/ws/{room}"), &bob).await;
        let welcome = next_json(&mut bob_dm).await;
        assert_eq!(
            (&welcome["type"], &welcome["last_id"]),
            (&"welcome".into(), &1.into())
        );
        assert_eq!(next_message(&mut bob_dm).await["text"], "psst, Bob");
        say(&mut bob_dm, "hello Ann").await;
        assert_eq!(next_message(&mut ann_dm).await["text"], "hello Ann");
        let listed = rooms_of(&get(addr, "/rooms", &[&ann]).await);
        let entry = listed.iter().find(|r| r["room"] == room.as_str()).unwrap();
        assert_eq!(
            (&entry["with"], &entry["last_id"]),
            (&"Bob".into(), &2.into())
        );

        // Catch-up: Ann comes back asking for what came after id 1.
        drop(ann_dm);
        let mut again = ws_as(addr, &format!("/ws/{room}?since=1"), &ann).await;
        let welcome = next_json(&mut again).await;
        assert_eq!(
            (&welcome["last_id"], &welcome["complete"]),
            (&2.into(), &true.into())
        );
        assert_eq!(next_message(&mut again).await["text"], "hello Ann");
    });
    assert!(server.shutdown());
}

#[test]
fn a_mention_elsewhere_is_a_notice_to_the_person_mentioned_only() {
    let server = start(config());
    let addr = server.addr;
    smol::block_on(async {
        let ann = sign_in(addr, "Ann", "").await;
        let bob = sign_in(addr, "Bob", "").await;
        // Bob is in the kitchen and in the lobby; Ann speaks in the kitchen.
        let mut bob_lobby = expect_welcome(ws_as(addr, "/ws/lobby", &bob).await, "Bob").await;
        let mut bob_kitchen = expect_welcome(ws_as(addr, "/ws/kitchen", &bob).await, "Bob").await;
        let mut ann_kitchen = expect_welcome(ws_as(addr, "/ws/kitchen", &ann).await, "Ann").await;
        say(&mut ann_kitchen, "tea, @bob?").await;
        let seen = next_message(&mut bob_kitchen).await;
        assert_eq!(seen["mentions"], serde_json::json!(["Bob"]));
        let notice = next_news(&mut bob_lobby).await;
        assert_eq!(
            (
                &notice["type"],
                &notice["room"],
                &notice["mention"],
                &notice["id"]
            ),
            (
                &"activity".into(),
                &"kitchen".into(),
                &true.into(),
                &1.into()
            )
        );
        // The kitchen's connection had the message itself, not a notice on top.
        say(&mut ann_kitchen, "no mention").await;
        assert_eq!(next_news(&mut bob_kitchen).await["text"], "no mention");
        // Unread counts: the rooms list knows the kitchen's newest id.
        let listed = rooms_of(&get(addr, "/rooms", &[&ann]).await);
        let kitchen = listed.iter().find(|r| r["room"] == "kitchen").unwrap();
        assert_eq!(kitchen["last_id"], 2);
    });
    assert!(server.shutdown());
}
