//! What the server reports about itself: `/healthz` counters, the `/rooms` list (rooms with
//! people in them and the session's direct rooms, each with its newest message id), and a room's
//! member list page by page (`/rooms/:room/members?after=NAME&limit=N`): in a large room the
//! page pulls the list from here instead of being sent it (see `room::presence`).

use super::{plain, query, session, State};
use tide::{Request, Response, StatusCode};

/// Adds the status routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/rooms").get(rooms);
    app.at("/rooms/:room/members").get(members);
    app.at("/healthz").get(healthz);
}

async fn rooms(req: Request<State>) -> tide::Result {
    if req.state().live.get().passcode.is_some() && session(&req).is_none() {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    }
    #[derive(serde::Serialize)]
    struct RoomInfo {
        room: String,
        people: usize,
        /// The room's newest message id, when the server knows it (for unread counts).
        #[serde(skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
        /// Direct rooms only: the other person's name.
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<String>,
    }
    let state = req.state();
    let notices = state.registry.notices();
    let running = state.registry.list().await;
    let mut list: Vec<RoomInfo> = running
        .iter()
        .filter(|(room, _)| !crate::dm::is_direct(room))
        .map(|(room, people)| RoomInfo {
            room: room.clone(),
            people: *people,
            last_id: notices.last_id(room),
            with: None,
        })
        .collect();
    // The session's own direct rooms, whether anyone is in them or not.
    if let Some(me) = session(&req) {
        for direct in state.directs.of(me.person) {
            let people = running
                .iter()
                .find(|(room, _)| *room == direct.room)
                .map_or(0, |(_, people)| *people);
            list.push(RoomInfo {
                last_id: notices.last_id(&direct.room),
                room: direct.room,
                people,
                with: Some(direct.with),
            });
        }
    }
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(&list)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// One page of a room's members: `{"room","people","members":[..],"next":NAME|null}`; ask
/// again with `after=<next>` for the following page.
async fn members(req: Request<State>) -> tide::Result {
    if req.state().live.get().passcode.is_some() && session(&req).is_none() {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    }
    let room = req.param("room")?;
    if let Some(refused) = super::direct::check_room(&req, room) {
        return Ok(refused);
    }
    let limit = match query(&req, "limit").map(|v| v.parse::<usize>()) {
        None => crate::room::PAGE_LIMIT,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            return Ok(plain(
                StatusCode::BadRequest,
                "limit must be a positive number",
            ))
        }
    };
    let page = req
        .state()
        .registry
        .members(room, query(&req, "after"), limit)
        .await;
    let next = page.more.then(|| page.names.last().cloned()).flatten();
    let body = serde_json::json!({
        "room": room,
        "people": page.people,
        "members": page.names,
        "next": next,
    });
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(&body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// The counters, and the accounted memory against the budget (`budget` null: none set); with
/// `--redis`, `"redis":"up"` or `"down"` (absent without it).
async fn healthz(req: Request<State>) -> tide::Result {
    let meter = req.state().registry.meter();
    let mut body = serde_json::to_value(req.state().stats.snapshot())?;
    body["memory"] = serde_json::json!({
        "accounted_bytes": meter.used(),
        "budget_bytes": meter.budget(),
    });
    if let Some(up) = req.state().registry.redis_connected() {
        body["redis"] = serde_json::json!(if up { "up" } else { "down" });
    }
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(&body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
