//! The tide app: routes, the page template, embedded assets, security headers, and the
//! WebSocket upgrade. This is the only file that imports tide; the upgrade hands a raw
//! connection to [`crate::client`], which speaks WebSocket from then on.
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

use crate::client::{self, Client, Limits};
use crate::coalesce::Coalesce;
use crate::message::{display_name, valid_room, ANONYMOUS, DEFAULT_ROOM};
use crate::room::Registry;
use crate::session::{Session, Sessions};
use crate::shutdown;
use crate::stats::Stats;
use askama::Template;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::WebSocketStream;
use serde::Deserialize;
use smol::Executor;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tide::http::mime;
use tide::{Request, Response, StatusCode};

/// Everything a request handler may need, shared by all of them.
#[derive(Clone)]
pub struct State {
    /// The rooms.
    pub registry: Registry,
    /// Counters for `/healthz` and the connection cap.
    pub stats: Arc<Stats>,
    /// Per-connection limits.
    pub limits: Limits,
    /// WebSockets allowed at once.
    pub max_connections: usize,
    /// Extra origins allowed to open WebSockets, lowercase `scheme://host[:port]`.
    pub allow_origins: Arc<[String]>,
    /// Runs each client's tasks.
    pub executor: Arc<Executor<'static>>,
    /// Fires when the server stops.
    pub shutdown: shutdown::Signal,
    /// Held by each client task, so the server can wait for every client to finish.
    pub alive: async_channel::Sender<()>,
    /// Signs and checks session cookies.
    pub sessions: Arc<Sessions>,
    /// The passcode, if the chat needs one.
    pub passcode: Option<Arc<str>>,
    /// Wrong passcodes per address, for rate limiting.
    pub login_failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
}

/// Wrong passcodes from one address within the current window.
#[derive(Debug, Clone, Copy)]
pub struct Failures {
    count: u32,
    since: Instant,
}

/// Wrong passcodes allowed per address per [`FAILURE_WINDOW`] before it must wait.
const FAILURES_ALLOWED: u32 = 5;
/// The rate-limit window for wrong passcodes.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered for rate limiting before expired ones are swept out.
const FAILURE_TABLE: usize = 4096;

/// The page, rendered per request with the host the browser used.
#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage<'a> {
    host: &'a str,
    room: &'a str,
    name: &'a str,
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    name: &'a str,
    next: &'a str,
    needs_passcode: bool,
    error: Option<&'a str>,
    version: &'a str,
}

/// What the sign-in form posts.
#[derive(Deserialize)]
struct LoginForm {
    name: String,
    #[serde(default)]
    passcode: String,
    #[serde(default)]
    next: String,
}

/// An asset compiled into the binary, with a validator computed at compile time.
struct Asset {
    body: &'static str,
    mime: &'static str,
    etag: &'static str,
}

const CHAT_JS: Asset = Asset {
    body: include_str!("../templates/chat.js"),
    mime: "text/javascript; charset=utf-8",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-js\""),
};
const CHAT_CSS: Asset = Asset {
    body: include_str!("../templates/chat.css"),
    mime: "text/css; charset=utf-8",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-css\""),
};
const ICON: Asset = Asset {
    body: include_str!("../templates/icon.svg"),
    mime: "image/svg+xml",
    etag: concat!("\"", env!("CARGO_PKG_VERSION"), "-svg\""),
};

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
    app.at("/")
        .get(|req: Request<State>| async move { page(&req, DEFAULT_ROOM) });
    app.at("/r/:room")
        .get(|req: Request<State>| async move { page(&req, req.param("room")?) });
    app.at("/ws/:room").get(upgrade);
    app.at("/login").get(login_page).post(login);
    app.at("/logout").post(logout);
    app.at("/rooms").get(rooms);
    app.at("/session").get(whoami);
    app.at("/assets/chat.js")
        .get(|req| async move { asset(&req, &CHAT_JS) });
    app.at("/assets/chat.css")
        .get(|req| async move { asset(&req, &CHAT_CSS) });
    app.at("/assets/icon.svg")
        .get(|req| async move { asset(&req, &ICON) });
    app.at("/favicon.ico")
        .get(|req| async move { asset(&req, &ICON) });
    app.at("/healthz").get(healthz);
    app
}

fn page(req: &Request<State>, room: &str) -> tide::Result {
    if !valid_room(room) {
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
    let Some(session) = session(req) else {
        // First visit (or a cookie that does not check out): ask for a name here.
        return login_form(req.state(), "", req.url().path(), None, StatusCode::Ok);
    };
    let html = ChatPage {
        host,
        room,
        name: &session.name,
    }
    .render()?;
    Ok(html_response(StatusCode::Ok, html))
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
    header
        .iter()
        .find_map(|value| req.state().sessions.verify(value.as_str()))
}

/// Where to go after signing in: the page asked for, if it is one of ours.
fn safe_next(next: &str) -> &str {
    match next.strip_prefix("/r/") {
        Some(room) if valid_room(room) => next,
        _ => "/",
    }
}

fn login_form(
    state: &State,
    name: &str,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> tide::Result {
    let html = LoginPage {
        name,
        next: safe_next(next),
        needs_passcode: state.passcode.is_some(),
        error,
        version: env!("CARGO_PKG_VERSION"),
    }
    .render()?;
    Ok(html_response(status, html))
}

async fn login_page(req: Request<State>) -> tide::Result {
    let next = query(&req, "next").unwrap_or_default();
    let name = session(&req).map(|s| s.name).unwrap_or_default();
    login_form(req.state(), &name, &next, None, StatusCode::Ok)
}

/// Checks the form (name, passcode with its rate limit), then sets the cookie and redirects.
async fn login(mut req: Request<State>) -> tide::Result {
    let form: LoginForm = match req.body_form().await {
        Ok(form) => form,
        Err(_) => return Ok(plain(StatusCode::BadRequest, "expected a sign-in form")),
    };
    let state = req.state().clone();
    let ip = req
        .peer_addr()
        .and_then(|peer| peer.parse::<std::net::SocketAddr>().ok())
        .map(|peer| peer.ip());
    let name = match display_name(&form.name) {
        Ok(name) => name.to_owned(),
        Err(why) => {
            return login_form(
                &state,
                &form.name,
                &form.next,
                Some(why),
                StatusCode::BadRequest,
            )
        }
    };
    if let Some(passcode) = &state.passcode {
        if let Some(wait) = ip.and_then(|ip| locked_out(&state, ip)) {
            let why = format!(
                "Too many wrong passcodes. Try again in {} s.",
                wait.as_secs().max(1)
            );
            let mut res = login_form(
                &state,
                &name,
                &form.next,
                Some(&why),
                StatusCode::TooManyRequests,
            )?;
            res.insert_header("Retry-After", wait.as_secs().max(1).to_string());
            return Ok(res);
        }
        if !same_secret(form.passcode.trim(), passcode) {
            if let Some(ip) = ip {
                count_failure(&state, ip);
            }
            log::warn!("{}: wrong passcode", req.peer_addr().unwrap_or("unknown"));
            return login_form(
                &state,
                &name,
                &form.next,
                Some("Wrong passcode."),
                StatusCode::Unauthorized,
            );
        }
        if let Some(ip) = ip {
            state
                .login_failures
                .lock()
                .expect("failures lock")
                .remove(&ip);
        }
    }
    // The same browser keeps its person id when it changes its name.
    let person = session(&req).map_or_else(random_person, |s| s.person);
    let cookie = state.sessions.issue(&Session { person, name });
    let mut res = Response::new(StatusCode::SeeOther);
    res.insert_header("Location", safe_next(&form.next));
    res.insert_header("Set-Cookie", cookie);
    Ok(res)
}

async fn logout(req: Request<State>) -> tide::Result {
    let mut res = Response::new(StatusCode::SeeOther);
    res.insert_header("Location", "/login");
    res.insert_header("Set-Cookie", req.state().sessions.clear());
    Ok(res)
}

/// How long `ip` must still wait, if it has used up its wrong passcodes.
fn locked_out(state: &State, ip: IpAddr) -> Option<Duration> {
    let failures = state.login_failures.lock().expect("failures lock");
    let entry = failures.get(&ip)?;
    let elapsed = entry.since.elapsed();
    (entry.count >= FAILURES_ALLOWED && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
}

fn count_failure(state: &State, ip: IpAddr) {
    let mut failures = state.login_failures.lock().expect("failures lock");
    if failures.len() >= FAILURE_TABLE {
        failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
    }
    let now = Instant::now();
    let entry = failures.entry(ip).or_insert(Failures {
        count: 0,
        since: now,
    });
    if entry.since.elapsed() >= FAILURE_WINDOW {
        *entry = Failures {
            count: 0,
            since: now,
        };
    }
    entry.count += 1;
}

/// Compares without an early exit, so timing tells nothing about how much of a guess was right.
fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut difference = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(i).copied().unwrap_or(0));
    }
    difference == 0
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

/// Lets the page find out whether its session still holds (after a refused WebSocket).
async fn whoami(req: Request<State>) -> tide::Result {
    let mut res = match session(&req) {
        Some(session) => {
            let mut res = Response::new(StatusCode::Ok);
            res.set_body(tide::Body::from_json(
                &serde_json::json!({ "name": session.name }),
            )?);
            res
        }
        None => plain(StatusCode::Unauthorized, "not signed in"),
    };
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
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

async fn healthz(req: Request<State>) -> tide::Result {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_json(&req.state().stats.snapshot())?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// Checks the upgrade request, answers 101 and starts the client once the connection is ours.
async fn upgrade(req: Request<State>) -> tide::Result {
    let state = req.state();
    let room = req.param("room")?;
    if !valid_room(room) {
        return Ok(plain(
            StatusCode::BadRequest,
            "room names are 1-32 of a-z, 0-9, - and _",
        ));
    }
    let key = match websocket_key(&req) {
        Ok(key) => key,
        Err(why) => return Ok(plain(StatusCode::BadRequest, why)),
    };
    let peer = req.peer_addr().unwrap_or("unknown").to_owned();
    if let Err(origin) = check_origin(&req, &state.allow_origins) {
        log::warn!("{peer}: refused WebSocket from origin {origin}");
        return Ok(plain(
            StatusCode::Forbidden,
            "cross-origin WebSocket refused",
        ));
    }
    let (name, person) = match session(&req) {
        Some(session) => (session.name, session.person),
        None if state.passcode.is_some() => {
            return Ok(plain(StatusCode::Unauthorized, "sign in first"));
        }
        // Without a passcode, non-browser clients may name themselves (each connection is its
        // own person, so two of them cannot share a name in a room).
        None => match query(&req, "name") {
            None => (ANONYMOUS.to_owned(), random_person()),
            Some(raw) => match display_name(&raw) {
                Ok(name) => (name.to_owned(), random_person()),
                Err(why) => return Ok(plain(StatusCode::BadRequest, why)),
            },
        },
    };
    let since = match query(&req, "since").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Ok(plain(StatusCode::BadRequest, "since must be a message id")),
    };
    if state.shutdown.fired() {
        return Ok(plain(
            StatusCode::ServiceUnavailable,
            "server shutting down",
        ));
    }
    if !state.stats.try_open_connection(state.max_connections) {
        log::warn!(
            "{peer}: refused WebSocket: {} connections open",
            state.max_connections
        );
        return Ok(plain(
            StatusCode::ServiceUnavailable,
            "too many connections, try again later",
        ));
    }
    let slot = ConnectionSlot(state.stats.clone());

    let mut res = Response::new(StatusCode::SwitchingProtocols);
    res.insert_header("Upgrade", "websocket");
    res.insert_header("Connection", "Upgrade");
    res.insert_header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()));
    let upgraded = AsMut::<tide::http::Response>::as_mut(&mut res)
        .recv_upgrade()
        .await;

    let client = Client {
        peer,
        room: room.to_owned(),
        name,
        person,
        since,
    };
    // The upgrade itself is a boxed future of its own, and only what the client needs goes
    // into its task: that task lives as long as the connection.
    let config = client::websocket_config(&state.limits);
    let websocket = Box::pin(async move {
        let connection = upgraded.await?; // None: the 101 never reached the client.
        let socket = Coalesce::new(connection);
        let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await;
        Some(Box::new(ws))
    });
    let lease = (slot, state.alive.clone());
    state
        .executor
        .spawn(client::serve(Box::new(client::Start {
            upgrade: websocket,
            client: Box::new(client),
            limits: state.limits.clone(),
            registry: state.registry.clone(),
            executor: state.executor.clone(),
            lease,
        })))
        .detach();
    Ok(res)
}

/// Gives a connection slot back when the client task ends, however it ends.
struct ConnectionSlot(Arc<Stats>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// The `Sec-WebSocket-Key` of a well-formed upgrade request.
fn websocket_key(req: &Request<State>) -> Result<String, &'static str> {
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("this address takes WebSocket connections only");
    }
    if header("Sec-WebSocket-Version").as_deref() != Some("13") {
        return Err("WebSocket version 13 required");
    }
    header("Sec-WebSocket-Key").ok_or("missing Sec-WebSocket-Key")
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

/// Allows a request with no Origin (not a browser), one from the page's own host, or one from
/// an allowed origin. Returns the refused origin otherwise.
fn check_origin(req: &Request<State>, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = req
        .header("Origin")
        .map(|v| v.last().as_str().to_ascii_lowercase())
    else {
        return Ok(());
    };
    let origin_host = origin.split_once("://").map_or("", |(_, host)| host);
    let same_host = req
        .header("Host")
        .is_some_and(|host| host.last().as_str().eq_ignore_ascii_case(origin_host));
    if same_host || allowed.contains(&origin) {
        Ok(())
    } else {
        Err(origin)
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut res = Response::new(status);
    res.set_body(format!("{text}\n"));
    res.set_content_type(mime::PLAIN);
    res
}
