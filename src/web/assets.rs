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

/// Adds the asset routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/assets/chat.js")
        .get(|req| async move { asset(&req, &CHAT_JS) });
    app.at("/assets/chat.css")
        .get(|req| async move { asset(&req, &CHAT_CSS) });
    app.at("/assets/icon.svg")
        .get(|req| async move { asset(&req, &ICON) });
    app.at("/assets/invite.css")
        .get(|req| async move { asset(&req, &INVITE_CSS) });
    app.at("/favicon.ico")
        .get(|req| async move { asset(&req, &ICON) });
}

fn asset(req: &Request<State>, asset: &Asset) -> tide::Result {
    let mut res = if req
        .header("If-None-Match")
        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == asset.etag))
    {
        Response::new(StatusCode::NotModified)
    } else {
        let mut res = Response::new(StatusCode::Ok);
        res.set_body(asset.body);
        res.insert_header("Content-Type", asset.mime);
        res
    };
    // Revalidate every time: after an upgrade the new binary's assets must show at once.
    res.insert_header("Cache-Control", "no-cache");
    res.insert_header("ETag", asset.etag);
    Ok(res)
}
