//! smolchat: a LAN chat appliance. One static binary serves a chat page and WebSocket rooms.
//!
//! Start it in-process with [`Server::start`] on a listener you bound yourself (tests bind
//! `127.0.0.1:0`); `main.rs` does the same with the configured address.
//!
//! # Layout
//! - [`config`]: defaults, config file and flags, validated into a [`Config`].
//! - [`server`]: executor threads, accept loop, graceful shutdown, live reload.
//! - `reload`: which options a reload takes at once, and which need a restart.
//! - `http`: one HTTP/1.1 connection (async-h1 parsing, our own head reading).
//! - `web/`: the tide app, a file per concern: page, sign-in, assets, status, the upgrade.
//! - `addresses`: per-address limits (sockets at once; sign-ins, new rooms and uploads
//!   per minute).
//! - `client`: one WebSocket's read and write tasks and limits; `coalesce` gathers its writes.
//! - `room/`: the room loop (join / leave / forward), its registry, keepalive and presence.
//! - `bus/`: how a room's messages leave and reach the box: local, or shared over Redis
//!   (`--redis`); rooms talk to the bus, never to Redis.
//! - [`invite`]: the URLs the box is reachable at, the Wi-Fi string, QR codes.
//! - `history/`: each room's ring of recent messages and its file on disk, with tombstones.
//! - `message/`: the wire protocol (outbound frames, inbound text and actions, names, time).
//! - `moderation/`: the hosts' book: bans, mutes, locks, announcements, kept crash-safe.
//! - `dm`: direct rooms: their names, who may enter, who has which.
//! - [`meter`]: memory by measure, against `--memory-budget`.
//! - `files/`: the store of shared files: streamed writes, quota, eviction, the index.
//! - [`trace`]: the book's tracer.
//! - `atomic`: 64-bit counters on boards without 64-bit atomics (32-bit MIPS).
//!
//! Imports flow one way: server → http/web → client/room → bus → message/stats/trace; web also
//! uses addresses, which knows no HTTP.

// The one exception: registering sockets with a poller (`loadgen::receivers`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod addresses;
mod atomic;
mod bus;
mod client;
mod coalesce;
pub mod config;
mod dm;
mod files;
mod history;
mod http;
pub mod invite;
pub mod loadgen;
mod message;
pub mod meter;
mod moderation;
mod queue;
mod reload;
mod room;
pub mod server;
mod session;
mod shutdown;
mod stats;
pub mod trace;
mod web;

pub use config::Config;
pub use reload::Reloaded;
pub use server::Server;
pub use stats::Snapshot;
