//! The floor: about the least any server can do for a fan-out on this machine. One thread, one
//! poller, no tasks and no queues: each message is parsed and encoded as smolchat does it, then
//! written to every client with one `write` each, straight from the reading loop.
//!
//! The load generator measures it exactly as it measures smolchat (`load floor`), so the
//! difference between the two is smolchat's own cost, and the floor itself is what the
//! machine's loopback TCP costs. It is a yardstick, not a chat server: a client that cannot take
//! a write at once is simply disconnected.

use super::wire;
use crate::message::{inbound, timestamp, Inbound, Outbound};
use polling::{Event, Events, PollMode, Poller};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::SystemTime;

/// The one room the floor has.
const ROOM: &str = "fanout";
/// The listener's poller key; clients use their slot index.
const LISTENER: usize = usize::MAX - 1;

/// One connected client.
struct Client {
    stream: TcpStream,
    name: String,
    /// Bytes of a frame not yet complete.
    pending: Vec<u8>,
}

/// Serves WebSocket clients on `listener` until the process ends.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let poller = Poller::new()?;
    // SAFETY (polling's contract): the listener outlives the poller's use of it (both live
    // until this function returns, the poller dropped first as it was made last).
    #[allow(unsafe_code)]
    unsafe {
        poller.add_with_mode(&listener, Event::readable(LISTENER), PollMode::Level)?;
    }
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut events = Events::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut last_id = 0u64;
    loop {
        events.clear();
        poller.wait(&mut events, None)?;
        for event in events.iter() {
            if event.key == LISTENER {
                while let Ok((stream, _)) = listener.accept() {
                    match welcome(stream) {
                        Ok(client) => {
                            let key = clients.len();
                            // SAFETY: deleted from the poller before it is dropped (`leave`).
                            #[allow(unsafe_code)]
                            unsafe {
                                poller.add_with_mode(
                                    &client.stream,
                                    Event::readable(key),
                                    PollMode::Level,
                                )?;
                            }
                            clients.push(Some(client));
                        }
                        Err(error) => eprintln!("floor: handshake failed: {error}"),
                    }
                }
                continue;
            }
            let key = event.key;
            let Some(client) = clients[key].as_mut() else {
                continue;
            };
            let n = match client.stream.read(&mut chunk) {
                Ok(0) => {
                    leave(&poller, &mut clients, key);
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    leave(&poller, &mut clients, key);
                    continue;
                }
            };
            client.pending.extend_from_slice(&chunk[..n]);
            let mut buf = std::mem::take(&mut client.pending);
            let name = client.name.clone();
            let mut at = 0;
            let mut gone = false;
            while let Ok(Some(frame)) = wire::parse(&mut buf[at..]) {
                let payload = &buf[at + frame.payload.start..at + frame.payload.end];
                match frame.opcode {
                    wire::TEXT => {
                        last_id += 1;
                        // The floor only relays chat; anything else relays as nothing.
                        let text = match inbound(std::str::from_utf8(payload).unwrap_or("")) {
                            Inbound::Say(text) => text,
                            _ => String::new(),
                        };
                        let when = timestamp(SystemTime::now());
                        let json = Outbound::Message {
                            id: last_id,
                            room: ROOM,
                            name: &name,
                            text: &text,
                            when: &when,
                            mentions: &[],
                            key: None,
                        }
                        .encode();
                        let mut bytes = Vec::with_capacity(json.bytes().len() + 4);
                        wire::frame(&mut bytes, wire::TEXT, json.bytes(), None);
                        broadcast(&poller, &mut clients, &bytes);
                    }
                    wire::CLOSE => gone = true,
                    _ => {}
                }
                at += frame.len;
            }
            if gone {
                leave(&poller, &mut clients, key);
            } else if let Some(client) = clients[key].as_mut() {
                buf.drain(..at);
                client.pending = buf;
            }
        }
    }
}

/// Answers the handshake, welcomes the client and tells it it joined (to it alone).
fn welcome(mut stream: TcpStream) -> io::Result<Client> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let path = wire::accept(&mut stream)?;
    let name = path
        .split_once("name=")
        .map(|(_, name)| name.to_owned())
        .ok_or_else(|| io::Error::other("no ?name= in the path"))?;
    let members = [name.clone()];
    let welcome = Outbound::Welcome {
        room: ROOM,
        name: &name,
        last_id: 0,
        complete: true,
        members: &members,
        people: 1,
        locked: false,
        host: false,
        delete_window: 0,
    }
    .encode();
    let when = timestamp(SystemTime::now());
    let joined = Outbound::Join {
        room: ROOM,
        name: &name,
        when: &when,
        people: 1,
    }
    .encode();
    let mut bytes = Vec::new();
    wire::frame(&mut bytes, wire::TEXT, welcome.bytes(), None);
    wire::frame(&mut bytes, wire::TEXT, joined.bytes(), None);
    stream.write_all(&bytes)?;
    stream.set_nonblocking(true)?;
    Ok(Client {
        stream,
        name,
        pending: Vec::new(),
    })
}

/// Writes `bytes` to every client; one that cannot take it whole at once is disconnected.
fn broadcast(poller: &Poller, clients: &mut [Option<Client>], bytes: &[u8]) {
    for key in 0..clients.len() {
        let Some(client) = clients[key].as_mut() else {
            continue;
        };
        if !matches!(client.stream.write(bytes), Ok(n) if n == bytes.len()) {
            eprintln!(
                "floor: {} could not take a message; disconnected",
                client.name
            );
            leave(poller, clients, key);
        }
    }
}

fn leave(poller: &Poller, clients: &mut [Option<Client>], key: usize) {
    if let Some(client) = clients[key].take() {
        let _ = poller.delete(&client.stream);
    }
}
