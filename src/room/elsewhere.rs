//! Shared rooms (`--redis`): the people on other boxes, and names that hold across boxes.
//!
//! The room counts people on other boxes in its presence beside its own members (one
//! "connection" per box a name is on), so welcomes, joins and leaves, summaries, the head count
//! and the member list cover every box, announced the same way as this box's own. A newcomer
//! whose name is not yet seated here waits while the bus asks Redis whether another person
//! holds it on another box; the room goes on meanwhile and seats them when the answer comes
//! ([`News::Claimed`](crate::bus::News::Claimed)). A name's last connection here releases it.

use super::{ClientId, JoinError, Joining, Room};
use crate::bus::Somebody;
use crate::message::ANONYMOUS;
use std::collections::HashSet;

impl Room {
    /// A newcomer to a shared room: refused if the name is taken (here or as far as this box
    /// knows elsewhere), seated at once if this person already has it here, else seated once
    /// Redis grants the name.
    pub(super) fn join_shared(&mut self, joining: Joining) {
        let Joining {
            id,
            mut request,
            reply,
        } = joining;
        if request.name.eq_ignore_ascii_case(ANONYMOUS) {
            request.name = self.anonymous_name();
        }
        if self.presence.taken(&request.name, request.person) {
            log::info!(
                "room {}: refused {}: the name is taken",
                self.name,
                request.name
            );
            let _ = reply.try_send(Err(JoinError::NameTaken));
            return;
        }
        let Some(link) = &self.link else {
            return;
        };
        if self.here.contains_key(&request.name.to_lowercase()) {
            // Not taken, so this person's own: claimed already.
            let _ = reply.try_send(self.join(id, request));
            return;
        }
        link.claim(id, request.person, &request.name);
        self.pending.insert(id, Joining { id, request, reply });
    }

    /// Redis answered a newcomer's claim.
    pub(super) fn claimed(&mut self, client: ClientId, granted: bool) {
        let Some(Joining {
            id,
            mut request,
            reply,
        }) = self.pending.remove(&client)
        else {
            return;
        };
        if !granted {
            let numbered = request
                .name
                .strip_prefix(ANONYMOUS)
                .and_then(|n| n.strip_prefix('-'));
            if numbered.is_some_and(|n| n.parse::<u64>().is_ok()) {
                // Another box gave out the same anonymous number: try the next one here.
                request.name = ANONYMOUS.to_owned();
                return self.join_shared(Joining { id, request, reply });
            }
            log::info!(
                "room {}: refused {}: the name is taken on another box",
                self.name,
                request.name
            );
            let _ = reply.try_send(Err(JoinError::NameTaken));
            return;
        }
        let name = request.name.clone();
        let joined = self.join(id, request);
        if let (Err(_), Some(link)) = (&joined, &self.link) {
            if !self.here.contains_key(&name.to_lowercase()) {
                link.release(&name); // Taken here meanwhile: give back what Redis granted.
            }
        }
        let _ = reply.try_send(joined);
        if self.shutting_down {
            self.dismiss_everyone();
        }
    }

    /// A connection named `name` left this box's room: its name's last releases the claim.
    pub(super) fn unseat_here(&mut self, name: &str) {
        let Some(link) = &self.link else {
            return;
        };
        let folded = name.to_lowercase();
        let Some((_, tabs)) = self.here.get_mut(&folded) else {
            return;
        };
        *tabs -= 1;
        if *tabs == 0 {
            self.here.remove(&folded);
            link.release(name);
        }
    }

    /// Somebody is in the room on another box.
    pub(super) fn came_elsewhere(&mut self, somebody: Somebody) {
        let Somebody { on, person, name } = somebody;
        let names = self.elsewhere.entry(on).or_default();
        if names.contains_key(&name) {
            return;
        }
        names.insert(name.clone(), person);
        if self.count_in(&name, person) {
            self.announce_name(&name);
        }
    }

    /// `name` left the room on box `on`.
    pub(super) fn went_elsewhere(&mut self, on: &str, name: String) {
        let Some(names) = self.elsewhere.get_mut(on) else {
            return;
        };
        if names.remove(&name).is_none() {
            return;
        }
        if names.is_empty() {
            self.elsewhere.remove(on);
        }
        self.announce_leaving(vec![(name, false)]);
    }

    /// Box `on` stopped heartbeating: everyone on it left.
    pub(super) fn gone_elsewhere(&mut self, on: &str) {
        let Some(names) = self.elsewhere.remove(on) else {
            return;
        };
        log::info!(
            "room {}: box {on} is gone; {} people with it",
            self.name,
            names.len()
        );
        self.announce_leaving(names.into_keys().map(|name| (name, false)).collect());
    }

    /// Everyone on other boxes, anew: who is no longer there leaves, who is new comes.
    pub(super) fn all_elsewhere(&mut self, here: Vec<Somebody>) {
        let now: HashSet<(&str, &str)> = here.iter().map(|s| (&*s.on, s.name.as_str())).collect();
        let mut went = Vec::new();
        for (on, names) in &self.elsewhere {
            for name in names.keys() {
                if !now.contains(&(&**on, name.as_str())) {
                    went.push((on.clone(), name.clone()));
                }
            }
        }
        for (on, name) in went {
            self.went_elsewhere(&on, name);
        }
        for somebody in here {
            self.came_elsewhere(somebody);
        }
    }
}
