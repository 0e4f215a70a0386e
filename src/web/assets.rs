//! The page's JS, CSS and icon, compiled into the binary and served with validators, so a
//! browser revalidates cheaply and sees a new binary's assets at once.

use super::State;
use tide::{Request, Response, StatusCode};

/// An asset compiled into the binary, with a validator computed at compile time.
struct Asset {
    body: &'static str,
    mime: &'static str,
    etag: &'static str,
}

const CHAT_JS: Asset = Asset {
    body: include_str!("../../templates/chat.js"),
    mime: "text/javascript; charset=utf-8",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-js\""),
};
const CHAT_CSS: Asset = Asset {
    body: include_str!("../../templates/chat.css"),
    mime: "text/css; charset=utf-8",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-css\""),
};
const SHARE_JS: Asset = Asset {
    body: include_str!("../../templates/share.js"),
    mime: "text/javascript; charset=utf-8",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-share-js\""),
};
const ICON: Asset = Asset {
    body: include_str!("../../templates/icon.svg"),
    mime: "image/svg+xml",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-svg\""),
};

const INVITE_CSS: Asset = Asset {
    body: include_str!("../../templates/invite.css"),
    mime: "text/css; charset=utf-8",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-invite-css\""),
};

/// The page's other scripts, icons and the web app manifest: (path, body, type, etag).
const MORE: [(&str, &[u8], &str, &str); 11] = [
    (
        "/assets/text.js",
        include_bytes!("../../templates/text.js"),
        "text/javascript; charset=utf-8",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-text-js\""),
    ),
    (
        "/assets/attention.js",
        include_bytes!("../../templates/attention.js"),
        "text/javascript; charset=utf-8",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-attention-js\""),
    ),
    (
        "/assets/rooms.js",
        include_bytes!("../../templates/rooms.js"),
        "text/javascript; charset=utf-8",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-rooms-js\""),
    ),
    (
        "/assets/moderation.js",
        include_bytes!("../../templates/moderation.js"),
        "text/javascript; charset=utf-8",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-moderation-js\""),
    ),
    (
        "/assets/mention-input.js",
        include_bytes!("../../templates/mention-input.js"),
        "text/javascript; charset=utf-8",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-mention-js\""),
    ),
    (
        "/assets/icon-badge.svg",
        include_bytes!("../../templates/icon-badge.svg"),
        "image/svg+xml",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-badge-svg\""),
    ),
    (
        "/assets/icon-maskable.svg",
        include_bytes!("../../templates/icon-maskable.svg"),
        "image/svg+xml",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-maskable-svg\""),
    ),
    (
        "/assets/icon-192.png",
        include_bytes!("../../templates/icon-192.png"),
        "image/png",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-192-png\""),
    ),
    (
        "/assets/icon-512.png",
        include_bytes!("../../templates/icon-512.png"),
        "image/png",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-512-png\""),
    ),
    (
        "/manifest.webmanifest",
        include_bytes!("../../templates/manifest.webmanifest"),
        "application/manifest+json",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-manifest\""),
    ),
    (
        "/apple-touch-icon.png",
        include_bytes!("../../templates/icon-192.png"),
        "image/png",
        concat!("\"", env!("CARGO_PKG_VERSION"), "-192-png\""),
    ),
];

/// Adds the asset routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/assets/chat.js")
        .get(|req| async move { asset(&req, &CHAT_JS) });
    app.at("/assets/share.js")
        .get(|req| async move { asset(&req, &SHARE_JS) });
    app.at("/assets/chat.css")
        .get(|req| async move { asset(&req, &CHAT_CSS) });
    app.at("/assets/icon.svg")
        .get(|req| async move { asset(&req, &ICON) });
    app.at("/assets/invite.css")
        .get(|req| async move { asset(&req, &INVITE_CSS) });
    for (path, body, mime, etag) in MORE {
        app.at(path)
            .get(move |req| async move { respond(&req, body, mime, etag) });
    }
    app.at("/favicon.ico")
        .get(|req| async move { asset(&req, &ICON) });
}

fn asset(req: &Request<State>, asset: &Asset) -> tide::Result {
    respond(req, asset.body.as_bytes(), asset.mime, asset.etag)
}

fn respond(req: &Request<State>, body: &'static [u8], mime: &str, etag: &str) -> tide::Result {
    let mut res = if req
        .header("If-None-Match")
        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == etag))
    {
        Response::new(StatusCode::NotModified)
    } else {
        let mut res = Response::new(StatusCode::Ok);
        res.set_body(body);
        res.insert_header("Content-Type", mime);
        res
    };
    // Revalidate every time: after an upgrade the new binary's assets must show at once.
    res.insert_header("Cache-Control", "no-cache");
    res.insert_header("ETag", etag);
    Ok(res)
}
