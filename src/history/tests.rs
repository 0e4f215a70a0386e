//! The ring, the file format and the store, against real files in a temporary directory.

use super::records::{crc32, decode_records, HEADER_BYTES};
use super::*;
use crate::message::Outbound;
use crate::stats::Stats;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

fn entry(id: u64) -> Entry {
    let text = format!("message {id}");
    let frame = Outbound::Message {
        id,
        room: "r",
        name: "n",
        text: &text,
        when: "t",
        mentions: &[],
        key: None,
    }
    .encode();
    Entry {
        id,
        frame,
        origin: None,
    }
}

fn ids(replay: &Replay<'_>) -> Vec<u64> {
    replay.entries.iter().map(|e| e.id).collect()
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn the_ring_keeps_the_newest_and_answers_since_exactly() {
    let mut ring = Ring::new(3);
    assert!(ring.since(Some(0)).complete);
    for id in 1..=5 {
        ring.push(entry(id));
    }
    assert_eq!(ring.last_id(), 5);
    assert_eq!(ids(&ring.since(None)), [3, 4, 5]);
    let caught_up = ring.since(Some(2));
    assert_eq!((ids(&caught_up), caught_up.complete), (vec![3, 4, 5], true));
    let tail = ring.since(Some(4));
    assert_eq!((ids(&tail), tail.complete), (vec![5], true));
    let nothing = ring.since(Some(5));
    assert_eq!((ids(&nothing), nothing.complete), (vec![], true));
    // Message 2 is gone: the answer says so.
    let gap = ring.since(Some(1));
    assert_eq!((ids(&gap), gap.complete), (vec![3, 4, 5], false));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smolchat-history-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn appends_survive_a_reopen_and_files_are_compacted() {
    let dir = temp_dir("reopen");
    let stats = Arc::new(Stats::default());
    let store = Store::open(&dir, 4, stats.clone()).unwrap();
    for id in 1..=6 {
        store.append("lobby", &entry(id).frame);
    }
    store.close();
    assert!(stats.snapshot().disk_bytes > 6 * 8);
    let reopened = Store::open(&dir, 4, stats.clone()).unwrap();
    let loaded = reopened.load("lobby").unwrap().entries;
    assert_eq!(
        loaded.iter().map(|e| e.id).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    assert_eq!(loaded[3], entry(6));
    assert!(reopened.load("empty").unwrap().entries.is_empty());
    drop(reopened);

    // Past twice the capacity, the file is rewritten to the newest records.
    let store = Store::open(&dir, 4, stats).unwrap();
    for id in 7..=9 {
        store.append("lobby", &entry(id).frame);
    }
    store.close();
    let bytes = fs::read(dir.join("rooms/lobby.log")).unwrap();
    let on_disk = decode_records(&bytes).entries;
    assert_eq!(
        on_disk.iter().map(|e| e.id).collect::<Vec<_>>(),
        [6, 7, 8, 9]
    );
}

#[test]
fn a_torn_last_record_is_ignored_and_cut_off() {
    let dir = temp_dir("torn");
    let stats = Arc::new(Stats::default());
    let store = Store::open(&dir, 10, stats.clone()).unwrap();
    for id in 1..=3 {
        store.append("lobby", &entry(id).frame);
    }
    store.close();
    let path = dir.join("rooms/lobby.log");
    let whole = fs::read(&path).unwrap();
    // Cut the file in the middle of the third record, as a power cut could.
    let cut = whole.len() - 5;
    fs::write(&path, &whole[..cut]).unwrap();

    let store = Store::open(&dir, 10, stats).unwrap();
    let loaded = store.load("lobby").unwrap().entries;
    assert_eq!(loaded.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
    let good = decode_records(&whole).entries;
    let two_records = whole.len() - (HEADER_BYTES + good[2].frame.bytes().len());
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, two_records);

    // A flipped bit fails the checksum the same way.
    let mut flipped = whole.clone();
    flipped[HEADER_BYTES + 3] ^= 0x20;
    assert_eq!(decode_records(&flipped).entries.len(), 0);
}

fn tombstone(kind: &str, id: u64) -> Encoded {
    match kind {
        "delete" => Outbound::Delete { room: "lobby", id },
        _ => Outbound::Clear { room: "lobby", id },
    }
    .encode()
}

#[test]
fn the_ring_forgets_a_deleted_message_and_stays_complete() {
    let mut ring = Ring::new(10);
    for id in 1..=4 {
        ring.push(entry(id));
    }
    assert_eq!(ring.remove(2).map(|e| e.id), Some(2));
    assert!(ring.get(2).is_none() && ring.get(3).is_some());
    let replay = ring.since(Some(1));
    assert_eq!((ids(&replay), replay.complete), (vec![3, 4], true));
    assert_eq!(ring.remove(4).map(|e| e.id), Some(4));
    assert_eq!(ring.last_id(), 4, "the newest id is not reused");
    ring.push(entry(5));
    assert_eq!(ring.clear(3).len(), 2, "1 and 3; 5 came after the clear");
    assert_eq!(ids(&ring.since(None)), vec![5]);
    assert_eq!(ring.clear(5).len(), 1);
    assert!(ring.since(None).entries.is_empty() && ring.since(None).complete);
}

#[test]
fn erased_messages_stay_gone_through_a_reopen_and_a_compaction() {
    let dir = temp_dir("erase");
    let stats = Arc::new(Stats::default());
    let store = Store::open(&dir, 3, stats.clone()).unwrap();
    for id in 1..=4 {
        store.append("lobby", &entry(id).frame);
    }
    // The tombstone follows the pending appends and is on disk when erase returns.
    smol::block_on(store.erase("lobby", &tombstone("delete", 3))).unwrap();
    let on_disk = decode_records(&fs::read(dir.join("rooms/lobby.log")).unwrap());
    assert_eq!(
        on_disk.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2, 4]
    );
    assert_eq!((on_disk.records, on_disk.last_id), (5, 4));
    smol::block_on(store.erase("lobby", &tombstone("delete", 4))).unwrap();
    let loaded = store.load("lobby").unwrap();
    assert_eq!(
        loaded.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        loaded.last_id, 4,
        "a deleted newest message still holds its id"
    );

    // Past twice the capacity the file is compacted: tombstones and what they removed go,
    // the last id stays.
    smol::block_on(store.erase("lobby", &tombstone("clear", 4))).unwrap();
    store.close();
    let bytes = fs::read(dir.join("rooms/lobby.log")).unwrap();
    let compacted = decode_records(&bytes);
    assert!(compacted.entries.is_empty());
    assert_eq!((compacted.records, compacted.last_id), (1, 4));
    let store = Store::open(&dir, 3, stats).unwrap();
    store.append("lobby", &entry(5).frame);
    store.close();
    let store = Store::open(&dir, 3, Arc::new(Stats::default())).unwrap();
    let loaded = store.load("lobby").unwrap();
    assert_eq!(loaded.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [5]);
    let ring = Ring::from_entries(3, loaded.entries, loaded.last_id);
    assert!(ring.since(Some(4)).complete);
}
