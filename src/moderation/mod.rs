//! What hosts have decided and what must outlast a restart: bans and mutes (by session and by
//! address), locked rooms and standing announcements.
//!
//! Rooms decide who may act (`room::moderate`); this is the book they write in, shared by every
//! room and by the web layer, which turns banned sessions and addresses away at the door (sign-in,
//! page, upgrade). The book is small and changes only when a host acts, so it sits behind one
//! lock and is written whole after each change, crash-safe (`file.rs`). A host is never shut out
//! or muted by an address: hosts share networks with the people they moderate.
//!
//! Boxes sharing rooms (`--redis`) share the book too, entry by entry (`entries.rs`): a change
//! on one box is one entry set on every box, and each box still keeps its copy on disk.

mod entries;
mod file;

pub use entries::{announcement_entry, lock_entry, sanction_entry};

use crate::message::{timestamp, SanctionRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file in the data directory that keeps the book.
pub const FILE_NAME: &str = "moderation.json";

/// A ban or a mute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Shut out of every room and of sign-in.
    Ban,
    /// May read, may not write.
    Mute,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::Mute => "mute",
        }
    }
}

/// One ban or mute, with whom it holds against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    /// Ban or mute.
    pub kind: Kind,
    /// The name it was given under (what hosts see and lift it by).
    pub name: String,
    /// The sessions (person ids) it holds against.
    pub persons: Vec<u64>,
    /// The addresses it holds against (never against a host).
    pub addresses: Vec<IpAddr>,
    /// Why, as the host said.
    pub reason: String,
    /// The host who gave it.
    pub by: String,
    /// When it was given, seconds since the Unix epoch.
    pub since: u64,
    /// When it ends, seconds since the Unix epoch (`None`: until lifted).
    pub until: Option<u64>,
}

impl Sanction {
    fn holds_against(&self, person: Option<u64>, address: Option<IpAddr>, host: bool) -> bool {
        person.is_some_and(|p| self.persons.contains(&p))
            || (!host && address.is_some_and(|a| self.addresses.contains(&a)))
    }

    fn in_force(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// A standing announcement of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// What was announced.
    pub text: String,
    /// When, RFC 3339 UTC.
    pub when: String,
}

/// Everything the book keeps, as it is written to disk.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Book {
    sanctions: Vec<Sanction>,
    /// Rooms only hosts may write in.
    locked: Vec<String>,
    announcements: BTreeMap<String, Announcement>,
}

/// The hosts' book, shared by the rooms and the web layer.
pub struct Moderation {
    book: Mutex<Book>,
    /// Where the book is kept; `None`: in memory only (`--data-dir none`).
    path: Option<PathBuf>,
    /// Serialises writes, so the last change is the one left on disk.
    writing: smol::lock::Mutex<()>,
    /// How long an author may delete their own message.
    pub delete_window: Duration,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Moderation {
    /// The book kept in `dir` (read if it is there), or in memory without one.
    pub fn open(dir: Option<&Path>, delete_window: Duration) -> io::Result<Moderation> {
        let path = dir.map(|d| d.join(FILE_NAME));
        let book = match &path {
            Some(path) => file::load(path)?.unwrap_or_default(),
            None => Book::default(),
        };
        let in_force = book.sanctions.len();
        if in_force > 0 {
            log::info!("moderation: {in_force} bans and mutes in force");
        }
        Ok(Moderation {
            book: Mutex::new(book),
            path,
            writing: smol::lock::Mutex::new(()),
            delete_window,
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("moderation lock")
    }

    /// The reason a ban in force holds against this session or address, if one does.
    pub fn banned(
        &self,
        person: Option<u64>,
        address: Option<IpAddr>,
        host: bool,
    ) -> Option<String> {
        let now = unix_now();
        self.book()
            .sanctions
            .iter()
            .find(|s| {
                s.kind == Kind::Ban && s.in_force(now) && s.holds_against(person, address, host)
            })
            .map(|s| s.reason.clone())
    }

    /// Until when a mute holds against this person or address, if one does (hosts: never).
    pub fn muted_until(&self, person: u64, address: Option<IpAddr>, host: bool) -> Option<u64> {
        if host {
            return None;
        }
        let now = unix_now();
        let book = self.book();
        book.sanctions
            .iter()
            .filter(|s| s.kind == Kind::Mute && s.in_force(now))
            .filter(|s| s.holds_against(Some(person), address, false))
            .map(|s| s.until.unwrap_or(u64::MAX))
            .max()
    }

    /// Records a ban or mute (replacing one of the same kind under the same name).
    pub fn add(&self, sanction: Sanction) {
        let mut book = self.book();
        let now = unix_now();
        book.sanctions
            .retain(|s| s.in_force(now) && !(s.kind == sanction.kind && s.name == sanction.name));
        book.sanctions.push(sanction);
    }

    /// Lifts the ban or mute given under `name`; false if there was none.
    pub fn lift(&self, kind: Kind, name: &str) -> bool {
        let mut book = self.book();
        let before = book.sanctions.len();
        book.sanctions
            .retain(|s| !(s.kind == kind && s.name == name));
        book.sanctions.len() < before
    }

    /// The bans and mutes in force, oldest first, as the `bans` frame lists them; `by` is
    /// borrowed by the caller's closure.
    pub fn with_list<R>(&self, answer: impl FnOnce(&[SanctionRef<'_>]) -> R) -> R {
        let now = unix_now();
        let book = self.book();
        let stamps: Vec<(String, Option<String>)> = book
            .sanctions
            .iter()
            .map(|s| (stamp(s.since), s.until.map(stamp)))
            .collect();
        let list: Vec<SanctionRef<'_>> = book
            .sanctions
            .iter()
            .zip(&stamps)
            .filter(|(s, _)| s.in_force(now))
            .map(|(s, (when, until))| SanctionRef {
                kind: s.kind.name(),
                name: &s.name,
                reason: &s.reason,
                by: &s.by,
                when,
                until: until.as_deref(),
            })
            .collect();
        answer(&list)
    }

    /// Whether only hosts may write in `room`.
    pub fn locked(&self, room: &str) -> bool {
        self.book().locked.iter().any(|r| r == room)
    }

    /// Locks or unlocks `room`.
    pub fn set_locked(&self, room: &str, locked: bool) {
        let mut book = self.book();
        book.locked.retain(|r| r != room);
        if locked {
            book.locked.push(room.to_owned());
        }
    }

    /// The standing announcement of `room`.
    pub fn announcement(&self, room: &str) -> Option<Announcement> {
        self.book().announcements.get(room).cloned()
    }

    /// Sets (or, with `None`, removes) the standing announcement of `room`.
    pub fn announce(&self, room: &str, announcement: Option<Announcement>) {
        let mut book = self.book();
        match announcement {
            Some(a) => book.announcements.insert(room.to_owned(), a),
            None => book.announcements.remove(room),
        };
    }

    /// Writes the book to disk (crash-safe) off the executor; a failure is logged, and the
    /// book in memory still holds.
    pub async fn save(&self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let _writing = self.writing.lock().await;
        let book = self.book().clone();
        let written = smol::unblock(move || file::save(&path, &book)).await;
        if let Err(e) = written {
            log::error!("moderation: not saved, it holds until a restart: {e}");
        }
    }
}

/// Seconds since the epoch as RFC 3339.
fn stamp(secs: u64) -> String {
    timestamp(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanction(kind: Kind, until: Option<u64>) -> Sanction {
        Sanction {
            kind,
            name: "Bob".into(),
            persons: vec![7],
            addresses: vec!["10.0.0.7".parse().unwrap()],
            reason: "spam".into(),
            by: "Host".into(),
            since: unix_now(),
            until,
        }
    }

    #[test]
    fn bans_hold_by_session_and_address_but_not_against_hosts_by_address() {
        let book = Moderation::open(None, Duration::ZERO).unwrap();
        book.add(sanction(Kind::Ban, None));
        let bob_ip = Some("10.0.0.7".parse().unwrap());
        assert_eq!(book.banned(Some(7), None, false).as_deref(), Some("spam"));
        assert!(book.banned(Some(8), bob_ip, false).is_some());
        assert!(book.banned(Some(8), bob_ip, true).is_none());
        assert!(
            book.banned(Some(7), None, true).is_some(),
            "a banned session stays banned"
        );
        assert!(book
            .banned(None, Some("10.0.0.8".parse().unwrap()), false)
            .is_none());
        assert!(book.lift(Kind::Ban, "Bob"));
        assert!(book.banned(Some(7), bob_ip, false).is_none());
    }

    #[test]
    fn mutes_expire_and_are_listed_while_in_force() {
        let book = Moderation::open(None, Duration::ZERO).unwrap();
        book.add(sanction(Kind::Mute, Some(unix_now() + 60)));
        assert!(book.muted_until(7, None, false).is_some());
        assert!(book.muted_until(7, None, true).is_none());
        assert_eq!(book.with_list(|l| l.len()), 1);
        book.add(sanction(Kind::Mute, Some(unix_now() - 1)));
        assert!(book.muted_until(7, None, false).is_none());
        assert_eq!(book.with_list(|l| l.len()), 0);
    }

    #[test]
    fn the_book_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("smolchat-moderation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let book = Moderation::open(Some(&dir), Duration::ZERO).unwrap();
        book.add(sanction(Kind::Ban, None));
        book.set_locked("lobby", true);
        smol::block_on(book.save());
        let again = Moderation::open(Some(&dir), Duration::ZERO).unwrap();
        assert!(again.banned(Some(7), None, false).is_some());
        assert!(again.locked("lobby") && !again.locked("other"));
        std::fs::write(dir.join(FILE_NAME), "{not json").unwrap();
        let broken = Moderation::open(Some(&dir), Duration::ZERO).err().unwrap();
        assert!(broken.to_string().contains(FILE_NAME), "{broken}");
    }
}
