//! Telling members who is here: joins and leaves as they happen, and the whole list for a
//! member that missed some.

use super::{Delivery, Room};
use crate::message::{timestamp, Outbound};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

impl Room {
    /// Everyone's names, sorted, each once.
    pub(super) fn names(&self) -> Vec<String> {
        self.present.keys().cloned().collect()
    }

    /// Tells the room that these connections left (announcing a person when their last tab
    /// goes), repeating while announcing drops someone else.
    pub(super) fn announce_departures(&mut self, mut departed: Vec<String>) {
        while let Some(name) = departed.pop() {
            self.shared.tracer.trace("Client left");
            log::debug!("room {}: {name} left", self.name);
            let Some(tabs) = self.present.get_mut(&name) else {
                continue;
            };
            *tabs -= 1;
            if *tabs > 0 {
                continue;
            }
            self.present.remove(&name);
            self.people.store(self.present.len(), Ordering::Relaxed);
            let when = timestamp(SystemTime::now());
            let frame = Outbound::Leave {
                room: &self.name,
                name: &name,
                when: &when,
                people: self.present.len(),
            }
            .encode();
            departed.extend(self.offer(&frame, Delivery::Spare));
        }
    }
}
