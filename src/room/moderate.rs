//! What hosts ask of a room, and an author's deletion of their own message: the room checks
//! who may, carries it out, tells everyone (a `notice` line for each host action) and writes
//! it in the moderation book, which outlasts the room and the server.
//!
//! Only the room knows who is seated under which name, from which address, and who said which
//! message, so every action is an event in its loop. A deletion is on disk (a tombstone after
//! the history's pending appends) before any page hears of it: the loop waits for the disk
//! thread here, which is rare and short, rather than announce what a crash could undo. A ban
//! reaches the other rooms as events of their own.
//!
//! In a shared room (`--redis`) each action is carried out here first, for this box's members,
//! then handed to the other boxes as a [`Ruling`] (`ruled.rs` carries theirs out here). A
//! name seated only on another box may be kicked, muted or banned from here: that box lets
//! them go and adds who they are to the book. While Redis cannot be reached, actions are
//! refused rather than kept by this box alone.

use super::{ClientId, Delivery, Event, Room, Seat};
use crate::bus::{Erase, Notice, Ruling, ShutOut};
use crate::message::{timestamp, Action, Encoded, Outbound};
use crate::meter::{Meter, SLOT_BYTES};
use crate::moderation::{
    announcement_entry, lock_entry, sanction_entry, unix_now, Announcement, Kind, Sanction,
};
use crate::queue::{Dismissal, Pushed};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest mute, in minutes: a week.
const MAX_MUTE_MINUTES: f64 = 7.0 * 24.0 * 60.0;

/// Someone a host banned, for every room to let go of.
#[derive(Debug)]
pub(crate) struct Banished {
    pub(super) persons: Vec<u64>,
    pub(super) addresses: Vec<IpAddr>,
    /// The close reason.
    pub(super) reason: Arc<str>,
}

/// What a host is told when their action cannot reach the other boxes.
pub(super) const CUT_OFF: &str =
    "The other boxes cannot be reached now, so this was not done; try again in a moment.";
/// What a host is told when their action, done here, did not reach the other boxes.
pub(super) const UNHEARD: &str =
    "Done on this box, but the other boxes may not have heard of it; do it again in a moment.";

/// The `notice` frame of `room`'s standing announcement (empty text: taken down).
pub(super) fn standing_frame(
    room: &str,
    announcement: &Announcement,
    meter: &Arc<Meter>,
) -> Encoded {
    Outbound::Notice {
        room,
        text: &announcement.text,
        when: &announcement.when,
        standing: true,
        event: "",
        name: "",
        detail: "",
    }
    .encode_metered(meter)
}

/// Why a member may not write: the error code and the words for them.
type Refusal = (&'static str, String);

impl Room {
    /// Whether `seat` may write here now: not muted, and the room not locked (hosts always may).
    pub(super) fn may_write(&self, seat: &Seat) -> Result<(), Refusal> {
        if seat.host {
            return Ok(());
        }
        let moderation = &self.shared.moderation;
        if let Some(until) = moderation.muted_until(seat.person, seat.address, seat.host) {
            let until = timestamp(UNIX_EPOCH + Duration::from_secs(until));
            return Err(("muted", format!("A host muted you until {until}.")));
        }
        if self.locked {
            return Err((
                "locked",
                "This room is locked: only hosts can write in it.".into(),
            ));
        }
        Ok(())
    }

    /// Sends member `id` alone an `error` frame.
    pub(super) fn tell(&self, id: ClientId, code: &str, text: &str) {
        self.tell_keyed(id, code, text, None);
    }

    /// [`Room::tell`], naming the key of the message it is about.
    pub(super) fn tell_keyed(&self, id: ClientId, code: &str, text: &str, key: Option<&str>) {
        let Some(seat) = self.members.get(&id) else {
            return;
        };
        let frame = Outbound::Error {
            room: &self.name,
            code,
            text,
            key,
        }
        .encode_metered(&self.shared.meter);
        if let Pushed::Queued(_) = seat.outbox.frames.push_within(frame, seat.outbox.limit) {
            self.shared.meter.charge(SLOT_BYTES);
        }
    }

    /// Tells everyone a line about what a host did: `text` in English, and the `event` with
    /// whom it was about (`name`) and its `detail`, for pages in other languages. Returns it,
    /// for the other boxes.
    pub(super) fn notice(&mut self, text: &str, event: &str, name: &str, detail: &str) -> Notice {
        let when = timestamp(SystemTime::now());
        let frame = Outbound::Notice {
            room: &self.name,
            text,
            when: &when,
            standing: false,
            event,
            name,
            detail,
        }
        .encode_metered(&self.shared.meter);
        self.broadcast(frame, Delivery::Every);
        Notice {
            text: text.to_owned(),
            event: event.to_owned(),
            name: name.to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// Hands `ruling`, given by member `id` and carried out here, to the other boxes (in a
    /// shared room; nothing otherwise).
    fn rule(&self, id: ClientId, ruling: Ruling) {
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            link.rule(id, ruling);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (id, ruling); // No link without Redis.
    }

    /// A ruling in this room that sets `entry` to what the book now holds for it.
    fn entry_ruling(&self, entry: String, notice: Option<Notice>) -> Ruling {
        Ruling {
            room: self.name.clone(),
            value: self.shared.moderation.entry(&entry),
            entry: Some(entry),
            notice,
            ..Ruling::default()
        }
    }

    /// Carries out `action` for member `id`, if they may.
    pub(super) async fn act(&mut self, id: ClientId, action: Action) {
        let Some(seat) = self.members.get(&id) else {
            return; // Asked just before leaving.
        };
        let (actor, person, host) = (seat.name.clone(), seat.person, seat.host);
        let kind = action.name();
        let cut_off = self.link.as_ref().is_some_and(|link| !link.connected());
        if cut_off && (host || matches!(action, Action::Delete { .. })) && action != Action::Bans {
            log::info!(
                "room {}: refused {kind} from {actor}: Redis is unreachable",
                self.name
            );
            return self.tell(id, "unavailable", CUT_OFF);
        }
        let done = match action {
            // Anyone may ask; `delete` checks whose message it is.
            Action::Delete { id: message } => return self.delete(id, message, person, host).await,
            _ if !host => {
                log::info!(
                    "room {}: refused {kind} from {actor}: not a host",
                    self.name
                );
                return self.tell(id, "forbidden", "Only hosts can do that.");
            }
            Action::Kick { name, reason } => self.kick(id, &name, &reason, &actor),
            Action::Mute { name, minutes } => self.mute(id, &name, minutes, &actor).await,
            Action::Unmute { name } => self.lift(id, Kind::Mute, &name, &actor).await,
            Action::Ban { name, reason } => self.ban(id, &name, &reason, &actor).await,
            Action::Unban { name } => self.lift(id, Kind::Ban, &name, &actor).await,
            Action::Bans => {
                self.list_bans(id);
                None
            }
            Action::Lock => self.lock(id, true, &actor).await,
            Action::Unlock => self.lock(id, false, &actor).await,
            Action::Announce { text } => self.announce(id, text.trim(), &actor).await,
            Action::Clear => self.clear(id, &actor).await,
        };
        if let Some(what) = done {
            log::info!("room {}: host {actor} {kind}: {what}", self.name);
            self.shared.stats.moderated(kind);
        }
    }

    /// Deletes message `message` for member `id`: any message for a host, their own within the
    /// delete window for its author.
    async fn delete(&mut self, id: ClientId, message: u64, person: u64, host: bool) {
        let Some(entry) = self.history.get(message) else {
            return self.tell(
                id,
                "not_found",
                "That message is not in this room's history.",
            );
        };
        let own = entry.origin.is_some_and(|origin| origin.person == person);
        if !host {
            let window = self.shared.moderation.delete_window;
            match entry.origin {
                Some(origin) if origin.person != person => {
                    return self.tell(
                        id,
                        "forbidden",
                        "Only hosts can delete other people's messages.",
                    );
                }
                Some(origin) if origin.at.elapsed() <= window => {}
                _ => {
                    let text = format!(
                        "Your messages can be deleted for {} minutes after you send them.",
                        window.as_secs() / 60
                    );
                    return self.tell(id, "too_late", &text);
                }
            }
        }
        let tombstone = Outbound::Delete {
            room: &self.name,
            id: message,
        }
        .encode_metered(&self.shared.meter);
        if !self.erase(id, &tombstone).await {
            return;
        }
        if let Some(entry) = self.history.remove(message) {
            self.forget_file(&entry.frame);
        }
        // Logged before it is announced: the log holds every deletion anyone has seen.
        if host {
            log::info!("room {}: a host deleted message {message}", self.name);
            self.shared.stats.moderated("delete");
        } else {
            log::debug!(
                "room {}: message {message} deleted by its author",
                self.name
            );
            self.shared.stats.moderated("own_delete");
        }
        self.broadcast(tombstone, Delivery::Every);
        let notice =
            (host && !own).then(|| self.notice("A host removed a message.", "removed", "", ""));
        self.rule(
            id,
            Ruling {
                room: self.name.clone(),
                erase: Some(Erase::Message(message)),
                notice,
                ..Ruling::default()
            },
        );
    }

    /// Writes `tombstone` to the room's file and waits until it is on disk; false (and the
    /// asker told) if it could not be written: then nothing is announced. A shared room's
    /// history is in Redis, not on disk: the ruling removes it there.
    async fn erase(&self, id: ClientId, tombstone: &Encoded) -> bool {
        let Some(store) = self.shared.store.clone().filter(|_| self.link.is_none()) else {
            return true; // Memory only: forgetting it is all there is.
        };
        match store.erase(&self.name, tombstone).await {
            Ok(()) => true,
            Err(e) => {
                log::error!("room {}: removal not saved: {e}", self.name);
                self.tell(
                    id,
                    "not_saved",
                    "The server could not save that; try again.",
                );
                false
            }
        }
    }

    /// A removed message's file goes too (off the executor: the store writes its index).
    pub(super) fn forget_file(&self, frame: &Encoded) {
        let (Some(files), Some(file_id)) =
            (self.shared.files.clone(), super::share::file_id(frame))
        else {
            return;
        };
        let task = smol::unblock(move || match files.remove(&file_id) {
            Ok(_) => log::debug!("files: removed {file_id} with its message"),
            Err(e) => log::warn!("files: cannot remove {file_id}: {e}"),
        });
        self.shared.executor.spawn(task).detach();
    }

    /// The members seated under `name`, or (after telling the host why) `None`.
    fn targets(&self, id: ClientId, name: &str) -> Option<Vec<ClientId>> {
        let seats: Vec<ClientId> = self
            .members
            .iter()
            .filter(|(_, seat)| seat.name == name)
            .map(|(id, _)| *id)
            .collect();
        let elsewhere = || {
            self.elsewhere
                .values()
                .any(|names| names.contains_key(name))
        };
        if seats.is_empty() && self.link.is_some() && elsewhere() {
            return Some(seats); // Seated on another box: that box lets them go.
        }
        if seats.is_empty() {
            self.tell(
                id,
                "not_found",
                &format!("Nobody called {name} is in this room."),
            );
            return None;
        }
        if seats.iter().any(|s| self.members[s].host) {
            self.tell(id, "forbidden", "Hosts cannot be kicked, muted or banned.");
            return None;
        }
        Some(seats)
    }

    /// Lets go of members `ids` with a 4403 close carrying `reason`.
    pub(super) fn shut_out(&mut self, ids: &[ClientId], reason: &Arc<str>) {
        let mut departed = Vec::new();
        for id in ids {
            if let Some(seat) = self.members.remove(id) {
                seat.outbox
                    .frames
                    .dismiss(Dismissal::ShutOut(reason.clone()));
                departed.push(seat.name);
            }
        }
        self.announce_departures(departed);
    }

    fn kick(&mut self, id: ClientId, name: &str, reason: &str, actor: &str) -> Option<String> {
        let seats = self.targets(id, name)?;
        let reason = reason.trim();
        let close = format!("kicked: {reason}").trim_end().to_owned();
        self.shut_out(&seats, &Arc::from(close.as_str()));
        let line = match reason {
            "" => format!("A host removed {name} from the room."),
            why => format!("A host removed {name} from the room: {why}"),
        };
        let notice = self.notice(&line, "kicked", name, reason);
        self.rule(
            id,
            Ruling {
                room: self.name.clone(),
                shut_out: Some(ShutOut {
                    name: name.to_owned(),
                    reason: close,
                }),
                notice: Some(notice),
                ..Ruling::default()
            },
        );
        Some(format!(
            "{name} ({} connections) by {actor}: {reason}",
            seats.len()
        ))
    }

    /// Who is seated in `seats`, for the book.
    fn sanction(
        &self,
        kind: Kind,
        seats: &[ClientId],
        name: &str,
        reason: &str,
        actor: &str,
    ) -> Sanction {
        let mut persons: Vec<u64> = seats.iter().map(|s| self.members[s].person).collect();
        let mut addresses: Vec<IpAddr> = seats
            .iter()
            .filter_map(|s| self.members[s].address)
            .collect();
        persons.dedup();
        addresses.sort();
        addresses.dedup();
        Sanction {
            kind,
            name: name.to_owned(),
            persons,
            addresses,
            reason: reason.trim().to_owned(),
            by: actor.to_owned(),
            since: unix_now(),
            until: None,
        }
    }

    async fn mute(
        &mut self,
        id: ClientId,
        name: &str,
        minutes: f64,
        actor: &str,
    ) -> Option<String> {
        if !(minutes.is_finite() && minutes > 0.0 && minutes <= MAX_MUTE_MINUTES) {
            self.tell(
                id,
                "bad_action",
                "Mute for between a moment and a week (minutes).",
            );
            return None;
        }
        let seats = self.targets(id, name)?;
        let seconds = (minutes * 60.0).ceil() as u64;
        let mut sanction = self.sanction(Kind::Mute, &seats, name, "", actor);
        sanction.until = Some(unix_now() + seconds);
        self.shared.moderation.add(sanction);
        self.shared.moderation.save().await;
        let span = if seconds < 60 {
            format!("{seconds} s")
        } else {
            format!("{} min", seconds.div_ceil(60))
        };
        let notice = self.notice(
            &format!("{name} was muted for {span}."),
            "muted",
            name,
            &span,
        );
        let ruling = self.entry_ruling(sanction_entry(Kind::Mute, name), Some(notice));
        self.rule(id, ruling);
        Some(format!("{name} for {span} by {actor}"))
    }

    async fn ban(&mut self, id: ClientId, name: &str, reason: &str, actor: &str) -> Option<String> {
        let seats = self.targets(id, name)?;
        let sanction = self.sanction(Kind::Ban, &seats, name, reason, actor);
        let banished = Arc::new(Banished {
            persons: sanction.persons.clone(),
            addresses: sanction.addresses.clone(),
            reason: Arc::from(format!("banned: {}", reason.trim()).trim_end()),
        });
        self.shared.moderation.add(sanction);
        self.shared.moderation.save().await;
        self.shut_out(&seats, &banished.reason);
        self.banish_elsewhere(banished.clone());
        let line = match reason.trim() {
            "" => format!("A host banned {name}."),
            why => format!("A host banned {name}: {why}"),
        };
        let notice = self.notice(&line, "banned", name, reason.trim());
        let mut ruling = self.entry_ruling(sanction_entry(Kind::Ban, name), Some(notice));
        ruling.shut_out = Some(ShutOut {
            name: name.to_owned(),
            reason: banished.reason.to_string(),
        });
        self.rule(id, ruling);
        Some(format!(
            "{name} by {actor} ({} sessions, {} addresses)",
            banished.persons.len(),
            banished.addresses.len()
        ))
    }

    /// Tells every other room to let the banned person's connections go. From a task of its
    /// own: a room never waits on another room's channel.
    pub(super) fn banish_elsewhere(&self, banished: Arc<Banished>) {
        let shared = self.shared.clone();
        let here = self.name.clone();
        let task = async move {
            let rooms: Vec<_> = {
                let rooms = shared.rooms.lock().await;
                rooms
                    .iter()
                    .filter(|(name, _)| **name != here)
                    .map(|(_, entry)| entry.events.clone())
                    .collect()
            };
            for events in rooms {
                // A room that ended meanwhile has nobody to let go.
                let _ = events.send(Event::Banish(banished.clone())).await;
            }
        };
        self.shared.executor.spawn(task).detach();
    }

    /// Lets go of whoever `banished` names (a ban given in another room).
    pub(super) fn banish(&mut self, banished: &Banished) {
        let seats: Vec<ClientId> = self
            .members
            .iter()
            .filter(|(_, seat)| {
                banished.persons.contains(&seat.person)
                    || (!seat.host
                        && seat
                            .address
                            .is_some_and(|a| banished.addresses.contains(&a)))
            })
            .map(|(id, _)| *id)
            .collect();
        if !seats.is_empty() {
            self.shut_out(&seats, &banished.reason);
        }
    }

    async fn lift(&mut self, id: ClientId, kind: Kind, name: &str, actor: &str) -> Option<String> {
        if !self.shared.moderation.lift(kind, name) {
            let what = if kind == Kind::Ban { "ban" } else { "mute" };
            self.tell(id, "not_found", &format!("There is no {what} for {name}."));
            return None;
        }
        self.shared.moderation.save().await;
        let (line, event) = match kind {
            Kind::Ban => (format!("A host lifted the ban on {name}."), "unbanned"),
            Kind::Mute => (format!("{name} may write again."), "unmuted"),
        };
        let notice = self.notice(&line, event, name, "");
        let ruling = self.entry_ruling(sanction_entry(kind, name), Some(notice));
        self.rule(id, ruling);
        Some(format!("{name} by {actor}"))
    }

    fn list_bans(&self, id: ClientId) {
        let Some(seat) = self.members.get(&id) else {
            return;
        };
        let frame = self.shared.moderation.with_list(|bans| {
            Outbound::Bans {
                room: &self.name,
                bans,
            }
            .encode_metered(&self.shared.meter)
        });
        if let Pushed::Queued(_) = seat.outbox.frames.push_within(frame, seat.outbox.limit) {
            self.shared.meter.charge(SLOT_BYTES);
        }
    }

    async fn lock(&mut self, id: ClientId, locked: bool, actor: &str) -> Option<String> {
        self.locked = locked;
        self.shared.moderation.set_locked(&self.name, locked);
        self.shared.moderation.save().await;
        let frame = Outbound::Room {
            room: &self.name,
            locked,
        }
        .encode_metered(&self.shared.meter);
        self.broadcast(frame, Delivery::Every);
        let (line, event) = if locked {
            ("A host locked the room: only hosts can write.", "locked")
        } else {
            (
                "A host unlocked the room: everyone can write again.",
                "unlocked",
            )
        };
        let notice = self.notice(line, event, "", "");
        let ruling = self.entry_ruling(lock_entry(&self.name), Some(notice));
        self.rule(id, ruling);
        Some(format!("by {actor}"))
    }

    /// Announces `text` (or, if empty, takes the standing announcement down).
    async fn announce(&mut self, id: ClientId, text: &str, actor: &str) -> Option<String> {
        if text.is_empty() && self.announcement.is_none() {
            self.tell(id, "bad_action", "Say what to announce.");
            return None;
        }
        let standing = (!text.is_empty()).then(|| Announcement {
            text: text.to_owned(),
            when: timestamp(SystemTime::now()),
        });
        self.announcement = standing
            .as_ref()
            .map(|a| standing_frame(&self.name, a, &self.shared.meter));
        self.shared.moderation.announce(&self.name, standing);
        self.shared.moderation.save().await;
        let notice = match self.announcement.clone() {
            Some(frame) => {
                self.broadcast(frame, Delivery::Every);
                None
            }
            None => {
                self.take_down();
                Some(self.notice("A host took the announcement down.", "taken_down", "", ""))
            }
        };
        let ruling = self.entry_ruling(announcement_entry(&self.name), notice);
        self.rule(id, ruling);
        Some(format!("by {actor}: {text}"))
    }

    /// Tells everyone the standing announcement is down (an empty one).
    pub(super) fn take_down(&mut self) {
        let down = Announcement {
            text: String::new(),
            when: timestamp(SystemTime::now()),
        };
        let down = standing_frame(&self.name, &down, &self.shared.meter);
        self.broadcast(down, Delivery::Every);
    }

    async fn clear(&mut self, id: ClientId, actor: &str) -> Option<String> {
        let last = self.history.last_id();
        let tombstone = Outbound::Clear {
            room: &self.name,
            id: last,
        }
        .encode_metered(&self.shared.meter);
        if !self.erase(id, &tombstone).await {
            return None;
        }
        let removed = self.history.clear(last);
        for entry in &removed {
            self.forget_file(&entry.frame);
        }
        self.broadcast(tombstone, Delivery::Every);
        let notice = self.notice("A host cleared the room's history.", "cleared", "", "");
        self.rule(
            id,
            Ruling {
                room: self.name.clone(),
                erase: Some(Erase::Through(last)),
                notice: Some(notice),
                ..Ruling::default()
            },
        );
        Some(format!(
            "{} messages up to {last} by {actor}",
            removed.len()
        ))
    }
}
