//! The tide app: routes, and the helpers every route uses (plain and HTML answers, the session
//! lookup). This folder is the only place that imports tide; the upgrade hands a raw connection
//! to [`crate::client`], which speaks WebSocket from then on. One file per concern: `pages`,
//! `assets`, `login`, `upgrade`, `status`, `metrics`, `files` (and `elsewhere`: files other
//! boxes hold); `live` holds what a reload may change.
//!
//! | route            | answer                                                          |
//! |------------------|-----------------------------------------------------------------|
//! | `GET /`          | the chat page for room `lobby` (the sign-in page first)         |
//! | `GET /r/:room`   | the chat page for `room`                                        |
//! | `GET /login`     | the sign-in page: a name, and the passcode if one is set        |
//! | `POST /login`    | signs in: sets the session cookie, back to the room             |
//! | `POST /logout`   | signs out                                                       |
//! | `GET /ws/:room`  | WebSocket upgrade into `room` (`?since=` id to catch up from)   |
//! | `GET /rooms`     | JSON: rooms with people in them                                 |
//! | `GET /session`   | JSON: who the cookie says you are, or 401                       |
//! | `GET /assets/*`  | the page's JS, CSS and icon, compiled into the binary           |
//! | `GET /healthz`   | JSON counters                                                   |
//! | `GET /metrics`   | the same and more in the Prometheus text format                 |
//! | `POST /files/:room` | shares the body as a file into `room` (`?name=`), 201 + frame |
//! | `GET /files/:id/:name` | a shared file, typed by its bytes, sandboxed             |
//! | `GET /rooms/:room/members` | one page of a room's member list (`?after=&limit=`)  |
//! | `GET /invite[/:room]` | a printable invite card: QR codes of the URL and the Wi-Fi |
//! | `GET /qr/room/:room`, `/qr/wifi` | those QR codes as SVG                          |
//! | `GET /manifest.webmanifest` | the web app manifest for "Add to Home Screen"        |
//! | `POST /dm?room=&name=` | opens a direct room with someone in a room (`direct`)  |
//!
//! Direct rooms (`dm.<a>.<b>`) go through the same page, upgrade, members and files routes as
//! any room; each of those asks `direct::check_room` first.

mod assets;
mod direct;
#[cfg(feature = "redis")]
mod elsewhere;
mod files;
mod i18n;
mod invite;
mod live;
mod login;
mod metrics;
mod pages;
mod status;
mod upgrade;

use crate::addresses::{Concurrent, PerWindow};
use crate::room::Registry;
use crate::session::Session;
use crate::shutdown;
use crate::stats::{Refusal, Stats};
use smol::Executor;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tide::http::mime;
use tide::{Request, Response, StatusCode};

pub use live::Live;
pub use login::Failures;

/// Everything a request handler may need, shared by all of them.
#[derive(Clone)]
pub struct State {
    /// The rooms.
    pub registry: Registry,
    /// Counters for `/healthz` and the connection cap.
    pub stats: Arc<Stats>,
    /// What a reload may change (limits, passcodes, session key, origins): read per request.
    pub live: Live,
    /// Runs each client's tasks.
    pub executor: Arc<Executor<'static>>,
    /// Fires when the server stops.
    pub shutdown: shutdown::Signal,
    /// Held by each client task, so the server can wait for every client to finish.
    pub alive: async_channel::Sender<()>,
    /// Bans, mutes and locks, checked at the door.
    pub moderation: Arc<crate::moderation::Moderation>,
    /// Wrong passcodes per address, for rate limiting.
    pub login_failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
    /// Open WebSockets per address, against `--max-sockets-per-address`.
    pub sockets: Concurrent,
    /// Sign-ins and name changes per address, against `--sign-ins-per-minute`.
    pub sign_ins: Arc<PerWindow>,
    /// Rooms started per address, against `--new-rooms-per-minute`.
    pub new_rooms: Arc<PerWindow>,
    /// Uploads started per address, against `--uploads-per-minute`.
    pub uploads: Arc<PerWindow>,
    /// The store of shared files; `None`: sharing is off.
    pub files: Option<Arc<crate::files::Files>>,
    /// Where people reach the server, for the invite card and QR codes.
    pub invite: Arc<crate::invite::Invite>,
    /// Who has which direct rooms.
    pub directs: Arc<crate::dm::Directs>,
}

/// The page's policy: nothing but our own scripts, styles and WebSocket.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The app as the connection loop sees it: a request in, a response out.
#[derive(Clone)]
pub struct Endpoint(tide::Server<State>);

impl Endpoint {
    /// The app with every route.
    pub fn new(state: State) -> Self {
        Endpoint(app(state))
    }

    /// Answers one request.
    pub async fn respond(
        &self,
        req: http_types::Request,
    ) -> http_types::Result<http_types::Response> {
        self.0.respond(req).await
    }
}

/// Builds the app with every route.
fn app(state: State) -> tide::Server<State> {
    let mut app = tide::with_state(state);
    app.with(tide::utils::After(|mut res: Response| async move {
        res.insert_header("X-Content-Type-Options", "nosniff");
        res.insert_header("Referrer-Policy", "no-referrer");
        Ok(res)
    }));
    pages::routes(&mut app);
    login::routes(&mut app);
    assets::routes(&mut app);
    status::routes(&mut app);
    metrics::routes(&mut app);
    files::routes(&mut app);
    invite::routes(&mut app);
    direct::routes(&mut app);
    app.at("/ws/:room").get(upgrade::upgrade);
    app
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut res = Response::new(status);
    res.set_body(html);
    res.set_content_type(mime::HTML);
    res.insert_header("Content-Security-Policy", CONTENT_SECURITY_POLICY);
    res.insert_header("Cache-Control", "no-store");
    res
}

/// The request's session, if its cookie is there and genuine.
fn session(req: &Request<State>) -> Option<Session> {
    let header = req.header("Cookie")?;
    let live = req.state().live.get();
    header
        .iter()
        .find_map(|value| live.sessions.verify(value.as_str()))
}

/// A 403 for a banned session or address (sign-in, page, WebSocket), counted and logged; `None`
/// if no ban holds. A host is never shut out by an address ban, only by their own session's.
fn banned(req: &Request<State>, session: Option<&Session>) -> Option<Response> {
    banned_as(
        req,
        session.map(|s| s.person),
        session.is_some_and(|s| s.host),
    )
}

/// [`banned`] for `person` (if known), a host or not.
fn banned_as(req: &Request<State>, person: Option<u64>, host: bool) -> Option<Response> {
    let state = req.state();
    let reason = state.moderation.banned(person, peer_ip(req), host)?;
    let peer = req.peer_addr().unwrap_or("unknown");
    refuse(
        state,
        Refusal::Banned,
        peer,
        &format!("{}: banned", req.url().path()),
    );
    let text = match reason.as_str() {
        "" => "A host banned you from this chat.".to_owned(),
        why => format!("A host banned you from this chat: {why}"),
    };
    Some(plain(StatusCode::Forbidden, &text))
}

/// A fresh person id from the operating system's random source.
fn random_person() -> u64 {
    let bytes = crate::session::new_secret();
    u64::from_le_bytes(bytes[..8].try_into().expect("64 bytes of secret"))
}

/// One query parameter, decoded.
fn query(req: &Request<State>, key: &str) -> Option<String> {
    req.url()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The Host header, if it looks like a host name or address (it goes into the page).
fn request_host(req: &Request<State>) -> Option<&str> {
    let host = req.header("Host")?.last().as_str();
    let plausible = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plausible.then_some(host)
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut res = Response::new(status);
    res.set_body(format!("{text}\n"));
    res.set_content_type(mime::PLAIN);
    res
}

/// The client's address, if the connection has one.
fn peer_ip<S>(req: &Request<S>) -> Option<IpAddr> {
    req.peer_addr()
        .and_then(|peer| peer.parse::<SocketAddr>().ok())
        .map(|peer| peer.ip())
}

/// Counts a refusal for `/healthz` and logs it: a warning for the 1st, 2nd, 4th... of its
/// reason (a flood must not flood the log), a debug line for the others.
fn refuse(state: &State, why: Refusal, peer: &str, what: &str) {
    let (count, warn) = state.stats.refused(why);
    if warn {
        log::warn!("{peer}: refused {what} ({count} refused for this reason since start)");
    } else {
        log::debug!("{peer}: refused {what}");
    }
}

/// `429 Too Many Requests`, with `Retry-After` when the wait is known.
fn too_many(text: &str, wait: Option<std::time::Duration>) -> Response {
    let mut res = plain(StatusCode::TooManyRequests, text);
    if let Some(wait) = wait {
        res.insert_header("Retry-After", wait.as_secs().max(1).to_string());
    }
    res
}
