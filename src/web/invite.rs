//! The invite: a printable card (`/invite`, `/invite/:room`) and the QR codes on it and on the
//! chat page's Invite panel, drawn by the server as SVG so the page needs no script for them
//! and stays within its strict content policy (`<img>` from our own origin).
//!
//! Which URL a code carries: `--public-url` when given; else the address the browser used,
//! unless that is this machine's loopback (a person at the box's own screen), in which case the
//! first of the machine's LAN addresses.

use super::login::login_form;
use super::{html_response, plain, request_host, session, State};
use crate::invite::{qr_svg, room_url};
use crate::message::{valid_room, DEFAULT_ROOM};
use askama::Template;
use tide::{Request, Response, StatusCode};

/// The printable card.
#[derive(Template)]
#[template(path = "invite.html")]
struct InviteCard<'a> {
    room: &'a str,
    url: &'a str,
    ssid: Option<&'a str>,
    t: &'a super::i18n::Strings,
}

/// Adds the invite routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/invite")
        .get(|req: Request<State>| async move { card(&req, DEFAULT_ROOM) });
    app.at("/invite/:room")
        .get(|req: Request<State>| async move { card(&req, req.param("room")?) });
    app.at("/qr/room/:room").get(room_code);
    app.at("/qr/wifi").get(wifi_code);
}

/// The URL people should open for `room`, as the request's browser should show it.
pub(super) fn invite_url(req: &Request<State>, room: &str) -> String {
    let invite = &req.state().invite;
    let host = request_host(req).filter(|host| !is_loopback_host(host));
    let base = match (invite.public, host, invite.urls.first()) {
        (true, _, Some(public)) => public.clone(),
        (false, Some(host), _) => format!("http://{host}"),
        (false, None, Some(first)) => first.clone(),
        // Unreachable in practice (the list is never empty): fall back to what was asked.
        _ => format!("http://{}", request_host(req).unwrap_or("localhost")),
    };
    room_url(&base, room)
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn card(req: &Request<State>, room: &str) -> tide::Result {
    if !valid_room(room) {
        return Ok(plain(
            StatusCode::BadRequest,
            "room names are 1-32 of a-z, 0-9, - and _",
        ));
    }
    if session(req).is_none() {
        // The card carries the Wi-Fi password: only for people who are in.
        let next = room_url("", room);
        return login_form(
            req.state(),
            super::i18n::for_request(req),
            "",
            &next,
            None,
            StatusCode::Ok,
        );
    }
    let url = invite_url(req, room);
    let html = InviteCard {
        room,
        url: &url,
        ssid: req.state().invite.ssid.as_deref(),
        t: super::i18n::for_request(req),
    }
    .render()?;
    Ok(html_response(StatusCode::Ok, html))
}

async fn room_code(req: Request<State>) -> tide::Result {
    let room = req.param("room")?;
    if !valid_room(room) {
        return Ok(plain(StatusCode::BadRequest, "no such room name"));
    }
    if session(&req).is_none() {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    }
    Ok(svg(&invite_url(&req, room)))
}

async fn wifi_code(req: Request<State>) -> tide::Result {
    if session(&req).is_none() {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    }
    match &req.state().invite.wifi {
        Some(wifi) => Ok(svg(wifi)),
        None => Ok(plain(StatusCode::NotFound, "no Wi-Fi network configured")),
    }
}

fn svg(data: &str) -> Response {
    let Some(image) = qr_svg(data) else {
        return plain(StatusCode::InternalServerError, "too long for a QR code");
    };
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(image);
    res.insert_header("Content-Type", "image/svg+xml");
    // It depends on the Host header and the session: never shared, never stale.
    res.insert_header("Cache-Control", "private, no-cache");
    res
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "192.168.1.2:8080",
            "chat.lan",
            "[fd00::1]:80",
            "localhost.lan",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
