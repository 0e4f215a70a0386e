//! News for a person from rooms their page is not showing: every connection is listed here
//! with its person id, so a room can tell someone, on their connections in other rooms, of a
//! message in one of their direct rooms or of a mention of them (an `Outbound::Activity`). It
//! also keeps each room's newest message id, for the rooms list's unread counts.
//!
//! The list is kept small, as every connection has an entry for its whole life: a person id, the
//! room's shared name and the queue, in one map, about 80 bytes. Finding a person's connections
//! scans it under its lock, which happens only for a direct message or a mention (a few
//! microseconds for thousands of connections), never for a plain message. Like the room's
//! broadcast it never waits: an activity frame goes only into a queue less than half full (a busy
//! connection keeps its room for messages) and is otherwise dropped, as the page's next look at
//! the rooms list makes up for it.

use super::{ClientId, Event, Registry, Room};
use crate::message::Outbound;
use crate::meter::{Meter, SLOT_BYTES};
use crate::queue::{FrameSink, Pushed};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Rooms whose newest id is remembered; past it, an entry for some other room is let go (its
/// count then shows only once it speaks again).
const LAST_IDS: usize = 4096;

/// One connection as activity frames reach it.
struct Listener {
    person: u64,
    /// Its room's name, shared with the room's other connections.
    room: Arc<str>,
    frames: Arc<dyn FrameSink>,
    limit: usize,
}

#[derive(Default)]
struct Book {
    /// Every connection.
    clients: HashMap<ClientId, Listener>,
    /// Room → newest message id.
    last_ids: HashMap<Box<str>, u64>,
}

/// The connections by person, and the rooms' newest ids.
#[derive(Default)]
pub struct Notices {
    book: Mutex<Book>,
}

impl Notices {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Nothing here is left half-changed by a panic.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists connection `client` of `person` in `room`.
    pub(super) fn listen(
        &self,
        client: ClientId,
        person: u64,
        room: Arc<str>,
        frames: Arc<dyn FrameSink>,
        limit: usize,
    ) {
        let listener = Listener {
            person,
            room,
            frames,
            limit,
        };
        self.book().clients.insert(client, listener);
    }

    /// Takes connection `client` off the list.
    pub(super) fn forget(&self, client: ClientId) {
        self.book().clients.remove(&client);
    }

    /// Remembers `id` as `room`'s newest message.
    pub(super) fn kept(&self, room: &str, id: u64) {
        let mut book = self.book();
        if let Some(last) = book.last_ids.get_mut(room) {
            *last = (*last).max(id);
            return;
        }
        if book.last_ids.len() >= LAST_IDS {
            let some = book.last_ids.keys().next().cloned();
            if let Some(some) = some {
                book.last_ids.remove(&some);
            }
        }
        book.last_ids.insert(room.into(), id);
    }

    /// `room`'s newest message id, if known.
    pub fn last_id(&self, room: &str) -> Option<u64> {
        self.book().last_ids.get(room).copied()
    }

    /// Sends `person` an activity frame on each of their connections outside `room`.
    pub fn tell(&self, person: u64, room: &str, notice: &Outbound<'_>, meter: &Arc<Meter>) {
        let book = self.book();
        let mut frame = None;
        let mut queued = 0;
        let theirs = book.clients.values();
        for listener in theirs.filter(|l| l.person == person && &*l.room != room) {
            let frame = frame.get_or_insert_with(|| notice.encode_metered(meter));
            if let Pushed::Queued(_) = listener
                .frames
                .push_within(frame.clone(), listener.limit / 2)
            {
                queued += 1;
            }
        }
        meter.charge(queued * SLOT_BYTES);
    }
}

impl Registry {
    /// The person called `name` in `room` now, if anyone is (the room knows; a room that is
    /// not running has nobody in it).
    pub async fn person_in(&self, room: &str, name: &str) -> Option<u64> {
        let events = {
            let rooms = self.shared.rooms.lock().await;
            rooms.get(room).map(|entry| entry.events.clone())?
        };
        let (reply, answer) = async_channel::bounded(1);
        let name = name.to_owned();
        events.send(Event::Whois { name, reply }).await.ok()?;
        answer.recv().await.ok().flatten()
    }
}

impl Room {
    /// After message `id` from `sender` is kept: remembers the room's newest id, and tells
    /// the people it concerns on their other connections (both people of a direct room; the
    /// people `mentions` names, unless this is a direct room, which tells them anyway).
    pub(super) fn tell_elsewhere(&self, id: u64, sender: &str, mentions: &[String]) {
        let notices = &self.shared.notices;
        notices.kept(&self.name, id);
        let direct = crate::dm::parties(&self.name);
        let mut told: Vec<u64> = Vec::new();
        if let Some((a, b)) = direct {
            told.extend([a, b]);
        } else if !mentions.is_empty() {
            for seat in self.members.values() {
                if mentions.contains(&seat.name) && !told.contains(&seat.person) {
                    told.push(seat.person);
                }
            }
        }
        for person in told {
            let mentioned = self
                .members
                .values()
                .any(|s| s.person == person && mentions.contains(&s.name));
            let notice = Outbound::Activity {
                room: &self.name,
                id,
                name: sender,
                direct: direct.is_some(),
                mention: mentioned,
            };
            notices.tell(person, &self.name, &notice, &self.shared.meter);
        }
    }
}
