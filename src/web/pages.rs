//! The chat page, rendered per request with the host the browser used (the book's template
//! with the host injected); without a session it shows the sign-in form instead.

use super::login::login_form;
use super::{html_response, plain, request_host, session, State};
use crate::message::{valid_room, DEFAULT_ROOM};
use askama::Template;
use tide::{Request, StatusCode};

/// The page, rendered per request with the host the browser used.
#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage<'a> {
    host: &'a str,
    room: &'a str,
    name: &'a str,
    /// The largest file one may share, 0 when sharing is off (the page hides the button).
    max_file_bytes: u64,
    /// The room's address for the Invite panel.
    invite_url: &'a str,
    /// The Wi-Fi network the Invite panel offers, if any.
    ssid: Option<&'a str>,
    /// The words, in the request's language.
    t: &'a super::i18n::Strings,
    /// In a direct room: the other person's name.
    direct_with: Option<String>,
}

/// Adds the page routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/")
        .get(|req: Request<State>| async move { page(&req, DEFAULT_ROOM) });
    app.at("/r/:room")
        .get(|req: Request<State>| async move { page(&req, req.param("room")?) });
}

fn page(req: &Request<State>, room: &str) -> tide::Result {
    let direct = crate::dm::is_direct(room);
    if !direct && !valid_room(room) {
        return Ok(plain(
            StatusCode::BadRequest,
            "room names are 1-32 of a-z, 0-9, - and _",
        ));
    }
    let Some(host) = request_host(req) else {
        return Ok(plain(
            StatusCode::BadRequest,
            "missing or malformed Host header",
        ));
    };
    let session = session(req);
    if let Some(refusal) = super::banned(req, session.as_ref()) {
        return Ok(refusal);
    }
    let Some(session) = session else {
        // First visit (or a cookie that does not check out): ask for a name here.
        return login_form(
            req.state(),
            super::i18n::for_request(req),
            "",
            req.url().path(),
            None,
            StatusCode::Ok,
        );
    };
    if let Some(refused) = super::direct::check_room(req, room) {
        return Ok(refused);
    }
    // A direct room shows the other person's name; "someone" if the table forgot it.
    let direct_with = direct.then(|| {
        let directs = &req.state().directs;
        directs
            .other_name(room, session.person)
            .unwrap_or_else(|| "someone".to_owned())
    });
    let invite_url = super::invite::invite_url(req, room);
    let html = ChatPage {
        host,
        room,
        name: &session.name,
        max_file_bytes: req
            .state()
            .files
            .as_ref()
            .map_or(0, |files| files.limits().max_file_bytes),
        invite_url: &invite_url,
        ssid: req.state().invite.ssid.as_deref(),
        t: super::i18n::for_request(req),
        direct_with,
    }
    .render()?;
    Ok(html_response(StatusCode::Ok, html))
}
