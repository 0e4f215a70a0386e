//! Shared rooms (`--redis`): hosts' rulings given on other boxes, carried out for this box's
//! members. The listener has already written the ruling's entry in this box's book; the room
//! lets go of whom it names, removes the messages it removes, tells its members the notice,
//! and brings its lock and standing announcement in line with the book.
//!
//! A ban or mute against a name seated here is widened: the room adds its members' sessions
//! and addresses under that name to the book entry and hands the wider entry back to every
//! box, so the sanction holds against them wherever they come back, not only by name.

use super::moderate::{standing_frame, Banished};
use super::{ClientId, Delivery, Room};
use crate::bus::{Erase, Ruling};
use crate::message::Outbound;
use crate::moderation::{sanction_entry, Kind};
use std::net::IpAddr;
use std::sync::Arc;

impl Room {
    /// A ruling from another box, or (`anew`) the whole book read again.
    pub(super) fn ruled(&mut self, ruling: &Ruling) {
        if ruling.room == self.name {
            self.ruled_here(ruling);
        }
        self.follow_book();
        let ban = ruling.sanctioned().is_some_and(|(ban, _)| ban);
        if ruling.anew || (ban && ruling.value.is_some()) {
            self.shut_out_banned();
        }
        // Last, as on the box it was given on.
        if let Some(n) = ruling.notice.as_ref().filter(|_| ruling.room == self.name) {
            self.notice(&n.text, &n.event, &n.name, &n.detail);
        }
    }

    /// What a ruling given in this room does to its members and history.
    fn ruled_here(&mut self, ruling: &Ruling) {
        if let (Some((ban, name)), Some(_)) = (ruling.sanctioned(), &ruling.value) {
            let reason = ruling.shut_out.as_ref().map(|out| out.reason.as_str());
            self.widen(ban, name, reason.unwrap_or("banned"));
        }
        if let Some(out) = &ruling.shut_out {
            let seats = self.guests_named(&out.name);
            self.shut_out(&seats, &Arc::from(out.reason.as_str()));
        }
        match ruling.erase {
            Some(Erase::Message(id)) => {
                // A file it shared goes too, on the box that holds it.
                if let Some(entry) = self.history.remove(id) {
                    self.forget_file(&entry.frame);
                }
                let tombstone = Outbound::Delete {
                    room: &self.name,
                    id,
                };
                let tombstone = tombstone.encode_metered(&self.shared.meter);
                self.broadcast(tombstone, Delivery::Every);
            }
            Some(Erase::Through(id)) => {
                for entry in self.history.clear(id) {
                    self.forget_file(&entry.frame);
                }
                let tombstone = Outbound::Clear {
                    room: &self.name,
                    id,
                };
                let tombstone = tombstone.encode_metered(&self.shared.meter);
                self.broadcast(tombstone, Delivery::Every);
            }
            None => {}
        }
    }

    /// This box's guests (not hosts) seated under `name`.
    fn guests_named(&self, name: &str) -> Vec<ClientId> {
        (self.members.iter())
            .filter(|(_, seat)| seat.name == name && !seat.host)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Adds the sessions and addresses of the guests seated here under `name` to the ban (or
    /// mute) given under it on another box, and hands the wider entry to every box. A ban
    /// also lets them go in this box's other rooms (`reason` closes them).
    fn widen(&mut self, ban: bool, name: &str, reason: &str) {
        let seats = self.guests_named(name);
        if seats.is_empty() {
            return;
        }
        let mut persons: Vec<u64> = seats.iter().map(|s| self.members[s].person).collect();
        let mut addresses: Vec<IpAddr> = (seats.iter())
            .filter_map(|s| self.members[s].address)
            .collect();
        persons.sort_unstable();
        persons.dedup();
        addresses.sort();
        addresses.dedup();
        let kind = if ban { Kind::Ban } else { Kind::Mute };
        let moderation = self.shared.moderation.clone();
        let Some(value) = moderation.widen(kind, name, &persons, &addresses) else {
            return; // It held against them all already.
        };
        log::info!(
            "room {}: the {} of {name} from another box now holds against {} sessions and {} addresses here",
            self.name,
            if ban { "ban" } else { "mute" },
            persons.len(),
            addresses.len()
        );
        let saving = async move { moderation.save().await };
        self.shared.executor.spawn(saving).detach();
        if let Some(link) = &self.link {
            let ruling = Ruling {
                room: self.name.clone(),
                entry: Some(sanction_entry(kind, name)),
                value: Some(value),
                ..Ruling::default()
            };
            // Given by no member here: client 0 is nobody, so a failure is only logged.
            link.rule(0, ruling);
        }
        if ban {
            self.banish_elsewhere(Arc::new(Banished {
                persons,
                addresses,
                reason: Arc::from(reason),
            }));
        }
    }

    /// Brings the room's lock and standing announcement in line with the book, telling the
    /// members of each change.
    fn follow_book(&mut self) {
        let moderation = &self.shared.moderation;
        let locked = moderation.locked(&self.name);
        let standing = (moderation.announcement(&self.name))
            .map(|a| standing_frame(&self.name, &a, &self.shared.meter));
        if locked != self.locked {
            self.locked = locked;
            let frame = Outbound::Room {
                room: &self.name,
                locked,
            };
            let frame = frame.encode_metered(&self.shared.meter);
            self.broadcast(frame, Delivery::Every);
        }
        let same = match (&standing, &self.announcement) {
            (Some(now), Some(was)) => now.bytes() == was.bytes(),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.announcement = standing.clone();
            match standing {
                Some(frame) => self.broadcast(frame, Delivery::Every),
                None => self.take_down(),
            }
        }
    }

    /// Lets go of every member the book now bans.
    fn shut_out_banned(&mut self) {
        let moderation = &self.shared.moderation;
        let banned: Vec<(ClientId, String)> = (self.members.iter())
            .filter_map(|(id, seat)| {
                let reason = moderation.banned(Some(seat.person), seat.address, seat.host)?;
                Some((*id, reason))
            })
            .collect();
        for (id, reason) in banned {
            let close = format!("banned: {}", reason.trim());
            self.shut_out(&[id], &Arc::from(close.trim_end()));
        }
    }
}
