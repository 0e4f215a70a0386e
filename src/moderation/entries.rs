//! The book as named entries, the form boxes share it in (through Redis, `--redis`): one entry
//! per ban or mute (by the name it was given under), per locked room and per standing
//! announcement. A change on one box is one entry set or removed on every box, so two hosts
//! acting at once on different boxes change different entries instead of overwriting each
//! other's whole book.
//!
//! Entry names: `ban:<name>`, `mute:<name>`, `lock:<room>`, `announce:<room>`; values: the
//! sanction or announcement as JSON, and `1` for a lock.

// Without the `redis` feature (the routers' builds) only widening is used, by rooms' shape.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use super::{Announcement, Book, Kind, Moderation, Sanction};
use std::net::IpAddr;

/// The entry of a ban or mute given under `name`.
pub fn sanction_entry(kind: Kind, name: &str) -> String {
    format!("{}:{name}", kind.name())
}

/// The entry of `room`'s lock.
pub fn lock_entry(room: &str) -> String {
    format!("lock:{room}")
}

/// The entry of `room`'s standing announcement.
pub fn announcement_entry(room: &str) -> String {
    format!("announce:{room}")
}

/// What a value set under an entry does not hold.
#[derive(Debug)]
pub struct BadEntry(String);

impl std::fmt::Display for BadEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Moderation {
    /// The value of entry `name` now (`None`: not set).
    pub fn entry(&self, name: &str) -> Option<String> {
        entry(&self.book(), name)
    }

    /// Every entry of the book.
    pub fn entries(&self) -> Vec<(String, String)> {
        let book = self.book();
        let mut all = Vec::new();
        for s in &book.sanctions {
            let name = sanction_entry(s.kind, &s.name);
            all.push((
                name,
                serde_json::to_string(s).expect("a sanction serialises"),
            ));
        }
        for room in &book.locked {
            all.push((lock_entry(room), "1".to_owned()));
        }
        for (room, a) in &book.announcements {
            let value = serde_json::to_string(a).expect("an announcement serialises");
            all.push((announcement_entry(room), value));
        }
        all
    }

    /// Sets entry `name` to `value` (`None`: removes it).
    pub fn set_entry(&self, name: &str, value: Option<&str>) -> Result<(), BadEntry> {
        set(&mut self.book(), name, value)
    }

    /// Replaces the whole book with `entries` (another box's, or Redis's); entries that do not
    /// read are skipped and returned.
    pub fn replace(&self, entries: &[(String, String)]) -> Vec<BadEntry> {
        let mut fresh = Book::default();
        let bad = entries
            .iter()
            .filter_map(|(name, value)| set(&mut fresh, name, Some(value)).err())
            .collect();
        *self.book() = fresh;
        bad
    }

    /// Adds `persons` and `addresses` to the ban or mute under `name`, returning the entry's
    /// new value; `None` if there is no such sanction or it already held them all.
    pub fn widen(
        &self,
        kind: Kind,
        name: &str,
        persons: &[u64],
        addresses: &[IpAddr],
    ) -> Option<String> {
        let mut book = self.book();
        let sanction = (book.sanctions.iter_mut()).find(|s| s.kind == kind && s.name == name)?;
        let before = (sanction.persons.len(), sanction.addresses.len());
        for p in persons {
            if !sanction.persons.contains(p) {
                sanction.persons.push(*p);
            }
        }
        for a in addresses {
            if !sanction.addresses.contains(a) {
                sanction.addresses.push(*a);
            }
        }
        if (sanction.persons.len(), sanction.addresses.len()) == before {
            return None;
        }
        Some(serde_json::to_string(sanction).expect("a sanction serialises"))
    }
}

fn entry(book: &Book, name: &str) -> Option<String> {
    let (kind, key) = name.split_once(':')?;
    match kind {
        "ban" | "mute" => {
            let kind = if kind == "ban" { Kind::Ban } else { Kind::Mute };
            let s = book
                .sanctions
                .iter()
                .find(|s| s.kind == kind && s.name == key)?;
            Some(serde_json::to_string(s).expect("a sanction serialises"))
        }
        "lock" => book.locked.iter().any(|r| r == key).then(|| "1".to_owned()),
        "announce" => (book.announcements.get(key))
            .map(|a| serde_json::to_string(a).expect("an announcement serialises")),
        _ => None,
    }
}

fn set(book: &mut Book, name: &str, value: Option<&str>) -> Result<(), BadEntry> {
    let bad = |why: String| BadEntry(format!("moderation entry {name}: {why}"));
    let (kind, key) = name
        .split_once(':')
        .ok_or_else(|| bad("not <kind>:<name>".into()))?;
    match kind {
        "ban" | "mute" => {
            let kind = if kind == "ban" { Kind::Ban } else { Kind::Mute };
            let sanction = value
                .map(serde_json::from_str::<Sanction>)
                .transpose()
                .map_err(|e| bad(e.to_string()))?;
            if sanction
                .as_ref()
                .is_some_and(|s| s.kind != kind || s.name != key)
            {
                return Err(bad("its value is another sanction".into()));
            }
            book.sanctions
                .retain(|s| !(s.kind == kind && s.name == key));
            book.sanctions.extend(sanction);
        }
        "lock" => {
            book.locked.retain(|r| r != key);
            if value.is_some() {
                book.locked.push(key.to_owned());
            }
        }
        "announce" => {
            match value {
                Some(v) => {
                    let a: Announcement =
                        serde_json::from_str(v).map_err(|e| bad(e.to_string()))?;
                    book.announcements.insert(key.to_owned(), a);
                }
                None => {
                    book.announcements.remove(key);
                }
            };
        }
        other => return Err(bad(format!("unknown kind {other}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::unix_now;
    use std::time::Duration;

    fn bob(kind: Kind) -> Sanction {
        Sanction {
            kind,
            name: "Bob".into(),
            persons: vec![7],
            addresses: vec![],
            reason: "spam".into(),
            by: "Host".into(),
            since: unix_now(),
            until: None,
        }
    }

    #[test]
    fn entries_carry_a_book_to_another_book() {
        let here = Moderation::open(None, Duration::ZERO).unwrap();
        here.add(bob(Kind::Ban));
        here.add(bob(Kind::Mute));
        here.set_locked("lobby", true);
        here.announce(
            "lobby",
            Some(Announcement {
                text: "hi".into(),
                when: "now".into(),
            }),
        );
        let there = Moderation::open(None, Duration::ZERO).unwrap();
        there.set_locked("old", true);
        assert!(there.replace(&here.entries()).is_empty());
        assert!(there.banned(Some(7), None, false).is_some());
        assert!(there.muted_until(7, None, false).is_some());
        assert!(there.locked("lobby") && !there.locked("old"));
        assert_eq!(there.announcement("lobby").unwrap().text, "hi");
        assert_eq!(there.entries(), here.entries());
    }

    #[test]
    fn an_entry_is_set_removed_and_widened_alone() {
        let book = Moderation::open(None, Duration::ZERO).unwrap();
        let value = serde_json::to_string(&bob(Kind::Ban)).unwrap();
        book.set_entry("ban:Bob", Some(&value)).unwrap();
        book.set_entry("lock:lobby", Some("1")).unwrap();
        assert_eq!(book.entry("ban:Bob").as_deref(), Some(value.as_str()));
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let wider = book.widen(Kind::Ban, "Bob", &[7, 8], &[ip]).unwrap();
        assert!(book.banned(Some(8), None, false).is_some());
        assert!(book.banned(None, Some(ip), false).is_some());
        assert_eq!(book.entry("ban:Bob").as_deref(), Some(wider.as_str()));
        assert!(
            book.widen(Kind::Ban, "Bob", &[8], &[ip]).is_none(),
            "nothing new"
        );
        book.set_entry("ban:Bob", None).unwrap();
        assert!(book.banned(Some(7), None, false).is_none());
        assert!(book.locked("lobby"));
        assert!(
            book.set_entry("ban:Ann", Some(&value)).is_err(),
            "Bob's under Ann's name"
        );
        assert!(book.set_entry("nonsense", Some("1")).is_err());
    }
}
