//! Direct messages: what a two-person room is called, who may enter it, and which of them a
//! person has (with whom), kept across restarts when there is a data directory.
//!
//! A direct room's name is `dm.<a>.<b>`: the two people's person ids (the random ids their
//! signed session cookies carry, 16 lowercase hex digits each), the smaller first. So the same
//! two people always meet in the same room, and the name can never be a public room's, as
//! those have no dots (`message::valid_room`). The name says who may enter, so the rule needs
//! no table and survives anything: a session whose person id is one of the two. Person ids,
//! not display names, decide because names are free to take: whoever signs in as "Bob"
//! tomorrow must not read Bob's conversations. The table here only remembers, for the side
//! panel, the names the two had when they met.

use crate::session::{hex, unhex};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What starts every direct room's name.
const PREFIX: &str = "dm.";
/// The file (in the data directory) that keeps who has which direct room.
const FILE: &str = "direct.tsv";
/// Direct rooms remembered at most; beyond it, no new one is opened.
pub const MAX_DIRECT_ROOMS: usize = 100_000;

/// The direct room of persons `a` and `b` (in either order).
pub fn room_for(a: u64, b: u64) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{PREFIX}{low:016x}.{high:016x}")
}

/// The two persons of a direct room's name, or `None` if `room` is not one.
pub fn parties(room: &str) -> Option<(u64, u64)> {
    let rest = room.strip_prefix(PREFIX)?;
    let (a, b) = rest.split_once('.')?;
    let person = |s: &str| {
        (s.len() == 16
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
    };
    let (a, b) = (person(a)?, person(b)?);
    // Only the one spelling: the smaller first (a person talking to themself is refused).
    (a < b).then_some((a, b))
}

/// Whether `room` is a direct room's name.
pub fn is_direct(room: &str) -> bool {
    parties(room).is_some()
}

/// Why a person may not enter a direct room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not signed in: direct rooms are between sessions.
    NoSession,
    /// Signed in, but not one of the two.
    NotAParty,
}

/// The one rule for entering direct room `room` (its name already checked with
/// [`is_direct`]): the session's person must be one of the two. Whatever else may refuse
/// someone (a ban, later) belongs here too.
pub fn may_enter(room: &str, person: Option<u64>) -> Result<(), Refused> {
    let person = person.ok_or(Refused::NoSession)?;
    match parties(room) {
        Some((a, b)) if person == a || person == b => Ok(()),
        _ => Err(Refused::NotAParty),
    }
}

/// One direct room as a person's side panel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct {
    /// The room's name.
    pub room: String,
    /// The other person's name when they met.
    pub with: String,
}

/// Who has which direct rooms, and the names they had when they met.
pub struct Directs {
    /// Room name → the two (person, name), smaller person first.
    rooms: Mutex<HashMap<String, [(u64, String); 2]>>,
    /// Where they are kept, if anywhere.
    file: Option<PathBuf>,
}

impl Directs {
    /// A table kept in memory only.
    pub fn in_memory() -> Directs {
        Directs {
            rooms: Mutex::new(HashMap::new()),
            file: None,
        }
    }

    /// The table kept in `dir`, read back from there (a torn last line is ignored).
    pub fn open(dir: &Path) -> io::Result<Directs> {
        let file = dir.join(FILE);
        let mut rooms = HashMap::new();
        match fs::read_to_string(&file) {
            Ok(text) => {
                for line in text.lines() {
                    if let Some((room, pair)) = parse_line(line) {
                        rooms.insert(room, pair);
                    }
                }
                if !text.is_empty() && !text.ends_with('\n') {
                    // End the torn line, so the next one appended stands on its own.
                    fs::OpenOptions::new()
                        .append(true)
                        .open(&file)
                        .and_then(|mut f| f.write_all(b"\n"))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", file.display()),
                ))
            }
        }
        Ok(Directs {
            rooms: Mutex::new(rooms),
            file: Some(file),
        })
    }

    /// Opens (or finds) the direct room of `me` and `other`, each `(person, name)`. `None`:
    /// the two are one person, or the table is full.
    pub fn open_room(&self, me: (u64, &str), other: (u64, &str)) -> Option<String> {
        if me.0 == other.0 {
            return None;
        }
        let room = room_for(me.0, other.0);
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut pair = [(me.0, me.1.to_owned()), (other.0, other.1.to_owned())];
        pair.sort_by_key(|(person, _)| *person);
        if rooms.get(&room) == Some(&pair) {
            return Some(room);
        }
        if !rooms.contains_key(&room) && rooms.len() >= MAX_DIRECT_ROOMS {
            return None;
        }
        // Names as of the latest meeting: somebody who renamed shows under the new name.
        if let Some(file) = &self.file {
            if let Err(e) = append(file, &room, &pair) {
                log::error!("direct room {room} not saved: {e}");
            }
        }
        rooms.insert(room.clone(), pair);
        Some(room)
    }

    /// The direct rooms of `person`, sorted by the other's name.
    pub fn of(&self, person: u64) -> Vec<Direct> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Direct> = rooms
            .iter()
            .filter_map(|(room, pair)| {
                let other = pair.iter().find(|(p, _)| *p != person)?;
                pair.iter().any(|(p, _)| *p == person).then(|| Direct {
                    room: room.clone(),
                    with: other.1.clone(),
                })
            })
            .collect();
        list.sort_by(|a, b| a.with.cmp(&b.with).then(a.room.cmp(&b.room)));
        list
    }

    /// The name `person` knows the other one of direct room `room` by, if the table has it.
    pub fn other_name(&self, room: &str, person: u64) -> Option<String> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let pair = rooms.get(room)?;
        pair.iter()
            .find(|(p, _)| *p != person)
            .map(|(_, name)| name.clone())
    }
}

/// One line of the file: `room \t person \t name-hex \t person \t name-hex`.
fn parse_line(line: &str) -> Option<(String, [(u64, String); 2])> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [room, a, a_name, b, b_name] = fields.as_slice() else {
        return None;
    };
    let (pa, pb) = parties(room)?;
    let person = |s: &str| u64::from_str_radix(s, 16).ok();
    let name = |s: &str| String::from_utf8(unhex(s)?).ok();
    let pair = [(person(a)?, name(a_name)?), (person(b)?, name(b_name)?)];
    (pair[0].0 == pa && pair[1].0 == pb).then(|| ((*room).to_owned(), pair))
}

/// Appends one room to the file and syncs it: a direct room must be findable after a crash.
fn append(file: &Path, room: &str, pair: &[(u64, String); 2]) -> io::Result<()> {
    let line = format!(
        "{room}\t{:016x}\t{}\t{:016x}\t{}\n",
        pair[0].0,
        hex(pair[0].1.as_bytes()),
        pair[1].0,
        hex(pair[1].1.as_bytes())
    );
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", file.display())))?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_room_is_named_by_its_two_persons_and_is_never_a_public_room() {
        let room = room_for(0xbeef, 7);
        assert_eq!(room, room_for(7, 0xbeef));
        assert_eq!(room, "dm.0000000000000007.000000000000beef");
        assert_eq!(parties(&room), Some((7, 0xbeef)));
        assert!(!crate::message::valid_room(&room));
        for bad in [
            "dm.000000000000beef.0000000000000007", // not the one spelling
            "dm.0000000000000007.0000000000000007", // one person
            "dm.0000000000000007.000000000000BEEF",
            "dm.7.beef",
            "dm.0000000000000007",
            "lobby",
            "dm.0000000000000007.000000000000beef.x",
        ] {
            assert!(!is_direct(bad), "{bad}");
        }
    }

    #[test]
    fn only_the_two_may_enter() {
        let room = room_for(1, 2);
        assert_eq!(may_enter(&room, Some(1)), Ok(()));
        assert_eq!(may_enter(&room, Some(2)), Ok(()));
        assert_eq!(may_enter(&room, Some(3)), Err(Refused::NotAParty));
        assert_eq!(may_enter(&room, None), Err(Refused::NoSession));
    }

    #[test]
    fn the_table_lists_each_persons_rooms_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("smolchat-dm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let table = Directs::open(&dir).unwrap();
        let room = table.open_room((5, "Ann\tLee"), (9, "Bob")).unwrap();
        assert_eq!(
            table.open_room((9, "Bob"), (5, "Ann\tLee")),
            Some(room.clone())
        );
        assert_eq!(table.open_room((5, "Ann"), (5, "Ann")), None);
        table.open_room((5, "Ann\tLee"), (11, "Cy")).unwrap();
        let names = |list: Vec<Direct>| list.into_iter().map(|d| d.with).collect::<Vec<_>>();
        assert_eq!(names(table.of(5)), ["Bob", "Cy"]);
        assert_eq!(names(table.of(9)), ["Ann\tLee"]);
        assert!(table.of(4).is_empty());
        // A torn last line is ignored.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .unwrap();
        f.write_all(b"dm.0000000000000001.00").unwrap();
        let again = Directs::open(&dir).unwrap();
        assert_eq!(names(again.of(5)), ["Bob", "Cy"]);
        assert_eq!(again.other_name(&room, 9).as_deref(), Some("Ann\tLee"));
        again.open_room((12, "Di"), (5, "Ann\tLee")).unwrap();
        let third = Directs::open(&dir).unwrap();
        assert_eq!(names(third.of(5)), ["Bob", "Cy", "Di"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
