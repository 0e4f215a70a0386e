//! News for a person from rooms their page is not showing: every connection is listed here
//! under its person id, so a room can tell someone, on their connections in other rooms, of a
//! message in one of their direct rooms or of a mention of them (an `Outbound::Activity`), and
//! the web side can find who is who in a room (to open a direct room with them). It also keeps
//! each room's newest message id, for the rooms list's unread counts.
//!
//! An activity frame costs O(that person's connections), never O(everyone): the room never tells the
//! whole server about a message. Like the room's broadcast it never waits: a notice goes only
//! into a queue less than half full (a busy connection keeps its room for messages) and is
//! otherwise dropped, as the page's next look at the rooms list makes up for it.

use super::{ClientId, Room};
use crate::message::Outbound;
use crate::meter::{Meter, SLOT_BYTES};
use crate::queue::{FrameSink, Pushed};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Rooms whose newest id is remembered; past it, an entry for some other room is let go (its
/// count then shows only once it speaks again).
const LAST_IDS: usize = 4096;

/// One connection as notices reach it.
struct Listener {
    client: ClientId,
    room: Box<str>,
    name: Box<str>,
    frames: Arc<dyn FrameSink>,
    limit: usize,
}

#[derive(Default)]
struct Book {
    /// Person → their connections.
    persons: HashMap<u64, Vec<Listener>>,
    /// Connection → person, to take it out again.
    clients: HashMap<ClientId, u64>,
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

    /// Lists connection `client` of `person`, named `name` in `room`.
    pub(super) fn listen(
        &self,
        client: ClientId,
        person: u64,
        room: &str,
        name: &str,
        frames: Arc<dyn FrameSink>,
        limit: usize,
    ) {
        let mut book = self.book();
        book.clients.insert(client, person);
        book.persons.entry(person).or_default().push(Listener {
            client,
            room: room.into(),
            name: name.into(),
            frames,
            limit,
        });
    }

    /// Takes connection `client` off the list.
    pub(super) fn forget(&self, client: ClientId) {
        let mut book = self.book();
        let Some(person) = book.clients.remove(&client) else {
            return;
        };
        if let Some(list) = book.persons.get_mut(&person) {
            list.retain(|l| l.client != client);
            if list.is_empty() {
                book.persons.remove(&person);
            }
        }
    }

    /// The person called `name` in `room` now, if anyone is.
    pub fn person_in(&self, room: &str, name: &str) -> Option<u64> {
        let book = self.book();
        book.persons.iter().find_map(|(person, list)| {
            list.iter()
                .any(|l| &*l.room == room && &*l.name == name)
                .then_some(*person)
        })
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

    /// Sends `person` a notice on each of their connections outside `room`.
    pub fn tell(&self, person: u64, room: &str, notice: &Outbound<'_>, meter: &Arc<Meter>) {
        let book = self.book();
        let Some(list) = book.persons.get(&person) else {
            return;
        };
        let mut frame = None;
        let mut queued = 0;
        for listener in list.iter().filter(|l| &*l.room != room) {
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
