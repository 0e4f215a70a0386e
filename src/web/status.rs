//! What the server reports about itself: `/healthz` counters, the `/rooms` list, and a room's
//! member list page by page (`/rooms/:room/members?after=NAME&limit=N`): in a large room the
//! page pulls the list from here instead of being sent it (see `room::presence`).

use super::{plain, query, session, State};
use crate::message::valid_room;
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
    }
    let list: Vec<RoomInfo> = req
        .state()
        .registry
        .list()
        .await
        .into_iter()
        .map(|(room, people)| RoomInfo { room, people })
        .collect();
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
    if !valid_room(room) {
        return Ok(plain(
            StatusCode::BadRequest,
            "room names are 1-32 of a-z, 0-9, - and _",
        ));
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

/// The counters, and the accounted memory against the budget (`budget` null: none set).
async fn healthz(req: Request<State>) -> tide::Result {
    let meter = req.state().registry.meter();
    let mut body = serde_json::to_value(req.state().stats.snapshot())?;
    body["memory"] = serde_json::json!({
        "accounted_bytes": meter.used(),
        "budget_bytes": meter.budget(),
    });
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(&body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
