//! Telling members who is here, at a cost that grows with the room, not with its square.
//!
//! A small room (up to [`LIVE_UP_TO`] people) hears of each join and leave as it happens, and a
//! newcomer's welcome lists everyone, as the book's chat does. Past that, announcing every join
//! to every member costs N frames per join, N² for a whole floor reconnecting at once. So a
//! large room collects its joins and leaves and sums them up once per [`SUMMARY_INTERVAL`] in one
//! `presence` frame per member, naming at most [`SUMMARY_NAMES`] of each; a welcome names at most
//! [`WELCOME_NAMES`]. Every frame carries the head count; the whole list is pulled page by page
//! (`GET /rooms/<room>/members`), never pushed. Whatever happens to the membership, the room
//! sends O(members) presence bytes per interval.

use super::{ClientId, Delivery, Room};
use crate::message::{timestamp, Encoded, Outbound};
use crate::meter::SLOT_BYTES;
use crate::queue::Pushed;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// Rooms up to this many people hear of each join and leave as it happens.
pub const LIVE_UP_TO: usize = 64;
/// A large room goes back to live joins and leaves only below this many people, so one person
/// coming and going at the boundary does not flip it back and forth (each flip to live sends
/// everyone the whole list).
const LIVE_AGAIN_BELOW: usize = 48;
/// Names a welcome carries at most (the first, in order).
pub const WELCOME_NAMES: usize = 64;
/// Names of each kind, joined and left, that one summary carries at most.
pub const SUMMARY_NAMES: usize = 32;
/// How often a large room sums up who came and went.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);
/// Most names one page of the member list holds.
pub const PAGE_LIMIT: usize = 500;

/// Who is in a room, as the room loop keeps it.
#[derive(Default)]
pub(super) struct Presence {
    /// Connections per name: a person with two tabs is one name here, announced once.
    present: BTreeMap<String, usize>,
    /// Whose each name is, by its lowercase form: a name is one person's in a room.
    owners: HashMap<String, (u64, usize)>,
    /// Past [`LIVE_UP_TO`]: joins and leaves are summed up, not sent one by one.
    large: bool,
    /// Changes since the last summary: `true` came, `false` went. A name that came and went
    /// within one interval is not mentioned at all.
    changes: BTreeMap<String, bool>,
}

/// One page of the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersPage {
    /// People in the room now.
    pub people: usize,
    /// Names after the one asked for, in order.
    pub names: Vec<String>,
    /// Whether more names follow the last one.
    pub more: bool,
}

impl Presence {
    /// How many people (names) are here.
    pub fn people(&self) -> usize {
        self.present.len()
    }

    /// Whether `name` belongs to someone other than `person` here.
    pub fn taken(&self, name: &str, person: u64) -> bool {
        self.owners
            .get(&name.to_lowercase())
            .is_some_and(|(owner, _)| *owner != person)
    }

    /// Everyone's names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.present.keys().map(String::as_str)
    }

    /// Whether `name` is here at all.
    pub fn contains(&self, name: &str) -> bool {
        self.owners.contains_key(&name.to_lowercase())
    }

    /// A connection of `person` named `name` arrived; true if it is that name's first.
    fn arrive(&mut self, name: &str, person: u64) -> bool {
        self.owners
            .entry(name.to_lowercase())
            .or_insert((person, 0))
            .1 += 1;
        let tabs = self.present.entry(name.to_owned()).or_insert(0);
        *tabs += 1;
        *tabs == 1
    }

    /// A connection named `name` went; true if it was that name's last.
    fn depart(&mut self, name: &str) -> bool {
        let folded = name.to_lowercase();
        if let Some((_, tabs)) = self.owners.get_mut(&folded) {
            *tabs -= 1;
            if *tabs == 0 {
                self.owners.remove(&folded);
            }
        }
        let Some(tabs) = self.present.get_mut(name) else {
            return false;
        };
        *tabs -= 1;
        if *tabs > 0 {
            return false;
        }
        self.present.remove(name);
        true
    }

    /// The first `limit` names after `after` (from the start if `None`).
    pub fn page(&self, after: Option<&str>, limit: usize) -> MembersPage {
        let start = match after {
            Some(name) => Bound::Excluded(name),
            None => Bound::Unbounded,
        };
        let mut range = self.present.range::<str, _>((start, Bound::Unbounded));
        let names: Vec<String> = range.by_ref().take(limit).map(|(n, _)| n.clone()).collect();
        MembersPage {
            people: self.people(),
            names,
            more: range.next().is_some(),
        }
    }

    /// Forgets everyone (the server is stopping).
    pub fn clear(&mut self) {
        *self = Presence::default();
    }

    /// Whether a summary is waiting to be sent.
    pub fn summary_due(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Notes a change for the next summary; a change that undoes one not yet sent cancels it.
    fn note(&mut self, name: &str, came: bool) {
        match self.changes.get(name) {
            Some(&noted) if noted != came => {
                self.changes.remove(name);
            }
            _ => {
                self.changes.insert(name.to_owned(), came);
            }
        }
    }
}

impl Room {
    /// Counts a newcomer's connection in the room's presence; true if it is that name's
    /// first. Its welcome comes next, then [`Room::announce_arrival`].
    pub(super) fn seat_presence(&mut self, name: &str, person: u64) -> bool {
        if self.link.is_some() {
            let here = self.here.entry(name.to_lowercase());
            here.or_insert_with(|| (name.to_owned(), 0)).1 += 1;
        }
        self.count_in(name, person)
    }

    /// Counts a connection (or a person on another box) in; true if it is the name's first.
    pub(super) fn count_in(&mut self, name: &str, person: u64) -> bool {
        let first_tab = self.presence.arrive(name, person);
        self.people.store(self.presence.people(), Ordering::Relaxed);
        if self.presence.people() > LIVE_UP_TO {
            self.presence.large = true;
        }
        first_tab
    }

    /// Tells the others of a newcomer (member `id`), or notes it for the next summary. In a
    /// small room the newcomer hears its own join too, as the book's clients expect.
    pub(super) fn announce_arrival(&mut self, id: ClientId, first_tab: bool) {
        let Some(seat) = self.members.get(&id) else {
            return;
        };
        if first_tab {
            let name = seat.name.clone();
            return self.announce_name(&name);
        }
        if self.presence.large {
            return;
        }
        let when = timestamp(SystemTime::now());
        let frame = Outbound::Join {
            room: &self.name,
            name: &seat.name,
            when: &when,
            people: self.presence.people(),
        }
        .encode_metered(&self.shared.meter);
        // Another tab of someone already here: only this tab hears of it.
        if let Pushed::Queued(_) = seat.outbox.frames.push_within(frame, seat.outbox.limit) {
            self.shared.meter.charge(SLOT_BYTES);
        }
    }

    /// Tells everyone that `name` came (its first connection, here or on another box), or
    /// notes it for the summary in a large room.
    pub(super) fn announce_name(&mut self, name: &str) {
        if self.presence.large {
            self.presence.note(name, true);
            return;
        }
        let when = timestamp(SystemTime::now());
        let frame = Outbound::Join {
            room: &self.name,
            name,
            when: &when,
            people: self.presence.people(),
        }
        .encode_metered(&self.shared.meter);
        self.broadcast(frame, Delivery::Spare);
    }

    /// Tells the room that these connections left (announcing a person when their last tab
    /// goes, or noting it for the summary), repeating while announcing drops someone else.
    pub(super) fn announce_departures(&mut self, departed: Vec<String>) {
        self.announce_leaving(departed.into_iter().map(|name| (name, true)).collect());
    }

    /// [`Room::announce_departures`] for names that left here (`true`) or on another box.
    pub(super) fn announce_leaving(&mut self, mut departed: Vec<(String, bool)>) {
        while let Some((name, here)) = departed.pop() {
            if here {
                self.shared.tracer.trace("Client left");
                log::debug!("room {}: {name} left", self.name);
                self.unseat_here(&name);
            }
            if !self.presence.depart(&name) {
                continue;
            }
            self.people.store(self.presence.people(), Ordering::Relaxed);
            if self.presence.large {
                self.presence.note(&name, false);
                if self.presence.people() < LIVE_AGAIN_BELOW {
                    let dropped = self.become_small();
                    departed.extend(dropped.into_iter().map(|name| (name, true)));
                }
                continue;
            }
            let when = timestamp(SystemTime::now());
            let frame = Outbound::Leave {
                room: &self.name,
                name: &name,
                when: &when,
                people: self.presence.people(),
            }
            .encode_metered(&self.shared.meter);
            let dropped = self.offer(&frame, Delivery::Spare);
            departed.extend(dropped.into_iter().map(|name| (name, true)));
        }
    }

    /// A large room has become small: it sends everyone the whole list once (no more than
    /// [`LIVE_AGAIN_BELOW`] names), and from now on each join and leave as it happens.
    /// Returns who was dropped meanwhile.
    fn become_small(&mut self) -> Vec<String> {
        self.presence.large = false;
        self.presence.changes.clear();
        let frame = self.whole_list();
        self.offer(&frame, Delivery::Spare)
    }

    /// Sends the summary of who came and went since the last one (large rooms).
    pub(super) fn summarize(&mut self) {
        if !self.presence.summary_due() {
            return;
        }
        let changes = std::mem::take(&mut self.presence.changes);
        let (mut joined, mut left) = (Vec::new(), Vec::new());
        let mut partial = false;
        for (name, came) in changes {
            let names = if came { &mut joined } else { &mut left };
            if names.len() < SUMMARY_NAMES {
                names.push(name);
            } else {
                partial = true;
            }
        }
        let frame = Outbound::Presence {
            room: &self.name,
            people: self.presence.people(),
            members: None,
            joined: &joined,
            left: &left,
            partial,
        }
        .encode_metered(&self.shared.meter);
        let departed = self.offer(&frame, Delivery::Spare);
        self.announce_departures(departed);
    }

    /// What a member that missed presence frames gets once it has room again: the whole list
    /// in a small room; in a large one, the count and word that its list is out of date.
    pub(super) fn repair_frame(&self) -> Encoded {
        if !self.presence.large {
            return self.whole_list();
        }
        Outbound::Presence {
            room: &self.name,
            people: self.presence.people(),
            members: None,
            joined: &[],
            left: &[],
            partial: true,
        }
        .encode_metered(&self.shared.meter)
    }

    fn whole_list(&self) -> Encoded {
        let members = self.presence.page(None, usize::MAX).names;
        Outbound::Presence {
            room: &self.name,
            people: members.len(),
            members: Some(&members),
            joined: &[],
            left: &[],
            partial: false,
        }
        .encode_metered(&self.shared.meter)
    }

    /// The names a welcome carries: everyone in a small room, the first few in a large one.
    pub(super) fn welcome_names(&self) -> Vec<String> {
        self.presence.page(None, WELCOME_NAMES).names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_persons_and_tabs_count_once() {
        let mut presence = Presence::default();
        assert!(presence.arrive("Ann", 1));
        assert!(!presence.arrive("Ann", 1));
        assert!(presence.taken("ann", 2));
        assert!(!presence.taken("ANN", 1));
        assert_eq!(presence.people(), 1);
        assert!(!presence.depart("Ann"));
        assert!(presence.depart("Ann"));
        assert!(!presence.taken("ann", 2));
        assert_eq!(presence.people(), 0);
    }

    #[test]
    fn pages_cover_every_name_once_in_order() {
        let mut presence = Presence::default();
        for n in (0..25).rev() {
            presence.arrive(&format!("p{n:02}"), n);
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = presence.page(after.as_deref(), 10);
            assert_eq!(page.people, 25);
            seen.extend(page.names.iter().cloned());
            after = page.names.last().cloned();
            if !page.more {
                break;
            }
        }
        let expected: Vec<String> = (0..25).map(|n| format!("p{n:02}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_change_undone_within_an_interval_is_not_mentioned() {
        let mut presence = Presence::default();
        presence.note("a", true);
        presence.note("b", false);
        presence.note("a", false);
        assert_eq!(presence.changes.len(), 1);
        assert_eq!(presence.changes.get("b"), Some(&false));
    }
}
