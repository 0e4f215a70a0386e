//! What rooms hand the two Redis tasks: posts for `post`, and opens, closes, name claims and
//! hosts' rulings for `listen`. Apart from those tasks so that a build without the `redis` feature keeps the
//! bus's shape (rooms, links and news) with nothing of the Redis client in it.

use super::{News, Ruling};
use crate::message::Unnumbered;
use async_channel::Sender;
use std::net::IpAddr;
use std::sync::Arc;

/// One message on its way to Redis.
pub struct Post {
    /// The room it was said in.
    pub room: Arc<str>,
    /// The member's connection, to tell them if it is lost.
    pub client: u64,
    /// The author's person id.
    pub person: u64,
    /// The room's last id on this box (ids go on from at least there).
    pub seen: u64,
    /// The sender's key for the message, if any.
    pub key: Option<Box<str>>,
    /// The sender's address: its messages on every box draw on one budget.
    pub address: Option<IpAddr>,
    /// The id of the file the frame shares, if it shares one: Redis notes this box holds it.
    pub file: Option<Box<str>>,
    /// The frame, missing its id.
    pub frame: Unnumbered,
    /// The room's news channel, for [`News::Lost`].
    pub news: Sender<News>,
}

/// What rooms ask of the listener.
pub enum Command {
    /// A room started here: subscribe, send it its history, then its messages.
    Open {
        room: Arc<str>,
        /// Which link of the room (a room may end and start again before its close arrives).
        link: u64,
        news: Sender<News>,
    },
    /// A room ended here: stop bringing it news (if `link` is still the room's).
    Close { room: Arc<str>, link: u64 },
    /// A newcomer wants `name` in `room`: answered with [`News::Claimed`].
    Claim {
        room: Arc<str>,
        link: u64,
        client: u64,
        person: u64,
        name: String,
    },
    /// A host's ruling in `room`, carried out here already, for every other box; `client`,
    /// who gave it, hears ([`News::Unruled`]) if Redis did not take it.
    Rule {
        room: Arc<str>,
        link: u64,
        client: u64,
        ruling: Box<Ruling>,
    },
    /// Which box holds shared file `file`, and its URL: answered on `reply` (`None`: nobody
    /// live, or no connection).
    Locate {
        file: String,
        reply: Sender<Option<super::files::Located>>,
    },
    /// `name` has no connection left in `room` on this box.
    Release {
        room: Arc<str>,
        link: u64,
        name: String,
    },
}
