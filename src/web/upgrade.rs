//! The WebSocket upgrade: checks the request (room, key, origin, session, the per-address
//! caps on sockets and new rooms, the connection cap),
//! answers 101 and starts the client's task on the connection async-h1 hands over.

use super::{peer_ip, plain, query, random_person, refuse, session, too_many, State};
use crate::client::{self, Client};
use crate::coalesce::Coalesce;
use crate::message::{display_name, ANONYMOUS};
use crate::meter::{Meter, CONNECTION_BYTES};
use crate::stats::{Refusal, Stats};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::WebSocketStream;
use std::sync::Arc;
use tide::{Request, Response, StatusCode};

/// Checks the upgrade request, answers 101 and starts the client once the connection is ours.
pub(super) async fn upgrade(req: Request<State>) -> tide::Result {
    let state = req.state();
    let live = state.live.get();
    let room = req.param("room")?;
    if let Some(refused) = super::direct::check_room(&req, room) {
        return Ok(refused);
    }
    let key = match websocket_key(&req) {
        Ok(key) => key,
        Err(why) => return Ok(plain(StatusCode::BadRequest, why)),
    };
    let peer = req.peer_addr().unwrap_or("unknown").to_owned();
    if let Err(origin) = check_origin(&req, &live.allow_origins) {
        refuse(
            state,
            Refusal::Origin,
            &peer,
            &format!("WebSocket from origin {origin}"),
        );
        return Ok(plain(
            StatusCode::Forbidden,
            "cross-origin WebSocket refused",
        ));
    }
    let session = session(&req);
    if let Some(refusal) = super::banned(&req, session.as_ref()) {
        return Ok(refusal);
    }
    let (name, person, host) = match session {
        Some(session) => (session.name, session.person, session.host),
        None if live.passcode.is_some() => {
            return Ok(plain(StatusCode::Unauthorized, "sign in first"));
        }
        // Without a passcode, non-browser clients may name themselves (each connection is its
        // own person, so two of them cannot share a name in a room).
        None => match query(&req, "name") {
            None => (ANONYMOUS.to_owned(), random_person(), false),
            Some(raw) => match display_name(&raw) {
                Ok(name) => (name.to_owned(), random_person(), false),
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
    // Per address first: one address at its cap must not use up the server's.
    let ip = peer_ip(&req);
    let address_slot = match ip {
        Some(ip) => match state.sockets.try_take(ip) {
            Some(slot) => Some(slot),
            None => {
                refuse(
                    state,
                    Refusal::PerAddress,
                    &peer,
                    "WebSocket: its address holds the most allowed at once",
                );
                return Ok(too_many(
                    "too many connections from your address: close a tab, or try again later",
                    None,
                ));
            }
        },
        None => None,
    };
    if let Some(ip) = ip {
        if !state.registry.has_room(room).await {
            if let Err(wait) = state.new_rooms.try_count(ip) {
                refuse(
                    state,
                    Refusal::NewRoom,
                    &peer,
                    &format!("WebSocket that would start room {room}: too many new rooms"),
                );
                return Ok(too_many(
                    "too many new rooms from your address, try again in a minute",
                    Some(wait),
                ));
            }
        }
    }
    if !state.stats.try_open_connection(live.max_connections) {
        refuse(
            state,
            Refusal::Connections,
            &peer,
            &format!("WebSocket: {} connections open", live.max_connections),
        );
        return Ok(plain(
            StatusCode::ServiceUnavailable,
            "too many connections, try again later",
        ));
    }
    let meter = state.registry.meter();
    if !meter.admits_connection() {
        state.stats.connection_closed();
        let why = format!(
            "WebSocket: {} KiB of the {} KiB memory budget in use",
            meter.used() >> 10,
            meter.budget().unwrap_or(0) >> 10
        );
        refuse(state, Refusal::Memory, &peer, &why);
        return Ok(plain(
            StatusCode::ServiceUnavailable,
            "the server's memory is full, try again later",
        ));
    }
    meter.charge(CONNECTION_BYTES);
    let slot = ConnectionSlot(state.stats.clone(), meter.clone());

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
        address: ip,
        host,
    };
    // The upgrade itself is a boxed future of its own, and only what the client needs goes
    // into its task: that task lives as long as the connection.
    let config = client::websocket_config(&live.limits);
    let websocket = Box::pin(async move {
        let connection = upgraded.await?; // None: the 101 never reached the client.
        let socket = Coalesce::new(connection);
        let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await;
        Some(Box::new(ws))
    });
    let lease = (slot, address_slot, state.alive.clone());
    state
        .executor
        .spawn(client::serve(Box::new(client::Start {
            upgrade: websocket,
            client: Box::new(client),
            limits: live.limits.clone(),
            registry: state.registry.clone(),
            executor: state.executor.clone(),
            stats: state.stats.clone(),
            lease,
        })))
        .detach();
    Ok(res)
}

/// Gives a connection slot back when the client task ends, however it ends.
/// Gives its memory charge back too.
struct ConnectionSlot(Arc<Stats>, Arc<Meter>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connection_closed();
        self.1.release(CONNECTION_BYTES);
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
