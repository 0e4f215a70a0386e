//! What the server reports about itself: `/healthz` counters and the `/rooms` list.

use super::{plain, session, State};
use tide::{Request, Response, StatusCode};

/// Adds the status routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/rooms").get(rooms);
    app.at("/healthz").get(healthz);
}

async fn rooms(req: Request<State>) -> tide::Result {
    if req.state().passcode.is_some() && session(&req).is_none() {
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

async fn healthz(req: Request<State>) -> tide::Result {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(&req.state().stats.snapshot())?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
