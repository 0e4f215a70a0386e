//! Serving a shared file another box holds (rooms shared through Redis, `--redis`): this box
//! asks Redis which box holds it, fetches it from there over HTTP/1.1 (async-h1's client, on
//! smol) and passes it on as it arrives, with the holder's headers for it (type, length,
//! range, validator, disposition) and this box's file policy. Nothing is kept here: the box
//! that holds a file is the one that deletes it, expires it or loses it, and a box that is
//! down takes its files with it until it is back (`502`).
//!
//! A box shows the holder the boxes' token ([`BOX_TOKEN_HEADER`]): the holder serves it
//! without a session, and never asks another box on its behalf, so two boxes can never pass
//! a request back and forth.

use super::files::file_response;
use super::{plain, State};
use crate::bus::BOX_TOKEN_HEADER;
use smol::future::or;
use smol::net::TcpStream;
use smol::Timer;
use std::future::Future;
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// Longest connecting to the holding box, and its answer's head, may take.
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// The holder's headers passed on with the file.
const PASSED_ON: [&str; 6] = [
    "Content-Type",
    "Content-Range",
    "Content-Disposition",
    "ETag",
    "Accept-Ranges",
    "Cache-Control",
];
/// The request's headers passed to the holder.
const ASKED_ON: [&str; 3] = ["Range", "If-Range", "If-None-Match"];

/// Whether `req` comes from another box sharing rooms with this one.
pub(super) fn from_a_box(req: &Request<State>) -> bool {
    req.header(BOX_TOKEN_HEADER).is_some_and(|token| {
        req.state()
            .registry
            .bus()
            .is_box_token(token.last().as_str())
    })
}

/// The file `req` asks for, from the box that holds it; `None` if no live box does.
pub(super) async fn fetch(req: &Request<State>, id: &str) -> Option<Response> {
    let located = req.state().registry.bus().locate(id).await?;
    let host = located.url.strip_prefix("http://")?.to_owned();
    let url = http_types::Url::parse(&format!("{}{}", located.url, req.url().path())).ok()?;
    let mut ask = http_types::Request::new(http_types::Method::Get, url);
    ask.insert_header(BOX_TOKEN_HEADER, &*located.token);
    for name in ASKED_ON {
        if let Some(value) = req.header(name) {
            ask.insert_header(name, value.last().as_str());
        }
    }
    let answer = within(async {
        let stream = TcpStream::connect(host.as_str()).await?;
        async_h1::connect(stream, ask)
            .await
            .map_err(|e| std::io::Error::other(format!("{}: {e}", e.status())))
    })
    .await;
    let mut answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            log::warn!("files: cannot fetch {id} from the box at {host}: {e}");
            return Some(plain(
                StatusCode::BadGateway,
                "the box that holds this file cannot be reached; try again later",
            ));
        }
    };
    let mut res = file_response(answer.status());
    for name in PASSED_ON {
        if let Some(value) = answer.header(name) {
            res.insert_header(name, value.last().as_str());
        }
    }
    res.set_body(answer.take_body());
    Some(res)
}

/// `step`, or a timeout error after [`FETCH_WAIT`].
async fn within<T>(step: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    or(step, async {
        Timer::after(FETCH_WAIT).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}
