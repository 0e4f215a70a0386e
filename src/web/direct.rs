//! Direct messages at the edge: the one check every route that names a room makes (a public
//! room's name, or a direct room the session is one of the two of: else 403), and
//! `POST /dm?room=ROOM&name=NAME`, which opens the direct room with the person called NAME in
//! ROOM now, tells their open connections (an `activity` frame), and answers
//! `{"room": "dm.…", "with": NAME}`. The rule itself is `crate::dm`'s, which knows no HTTP.

use super::{plain, query, session, State};
use crate::dm::{self, Refused};
use crate::message::{valid_room, Outbound};
use tide::{Request, Response, StatusCode};

/// What a route that names `room` must answer instead, if anything: 400 for a name that is
/// no room's, 401 or 403 for a direct room the request's session may not enter.
pub(super) fn check_room(req: &Request<State>, room: &str) -> Option<Response> {
    if valid_room(room) {
        return None;
    }
    if !dm::is_direct(room) {
        return Some(plain(
            StatusCode::BadRequest,
            "room names are 1-32 of a-z, 0-9, - and _",
        ));
    }
    match dm::may_enter(room, session(req).map(|s| s.person)) {
        Ok(()) => None,
        Err(Refused::NoSession) => Some(plain(
            StatusCode::Forbidden,
            "a direct room is for its two people: sign in first",
        )),
        Err(Refused::NotAParty) => Some(plain(
            StatusCode::Forbidden,
            "this direct room is for two other people",
        )),
    }
}

/// Adds the direct-message route.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/dm").post(open);
}

/// Opens the direct room of the session and the person called `name` in `room`.
async fn open(req: Request<State>) -> tide::Result {
    let state = req.state();
    let Some(me) = session(&req) else {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    };
    let (Some(room), Some(name)) = (query(&req, "room"), query(&req, "name")) else {
        return Ok(plain(
            StatusCode::BadRequest,
            "say with whom: ?room=ROOM&name=NAME",
        ));
    };
    if let Some(refused) = check_room(&req, &room) {
        return Ok(refused);
    }
    let notices = state.registry.notices();
    let Some(other) = notices.person_in(&room, &name) else {
        return Ok(plain(
            StatusCode::NotFound,
            &format!("nobody called {name} is in {room} now"),
        ));
    };
    let Some(direct) = state
        .directs
        .open_room((me.person, &me.name), (other, &name))
    else {
        return Ok(plain(
            StatusCode::BadRequest,
            "that is you (or too many direct rooms are open)",
        ));
    };
    log::debug!("{} opened a direct room with {name}", me.name);
    let notice = Outbound::Activity {
        room: &direct,
        id: 0,
        name: &me.name,
        direct: true,
        mention: false,
    };
    // Told on every connection, the one in `room` too: none of them is in the direct room yet.
    notices.tell(other, "", &notice, state.registry.meter());
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(
        &serde_json::json!({ "room": direct, "with": name }),
    )?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
