//! Room history: the last messages of a room in memory ([`Ring`]), and optionally on disk
//! ([`Store`]), so a newcomer sees the conversation and a restart loses nothing but the last
//! flush interval.
//!
//! On disk each room is one append-only file of records `[len: u32 LE][crc32: u32 LE][frame]`,
//! where `frame` is the message exactly as sent to browsers (JSON). A dedicated thread does all
//! file I/O, so no executor thread ever waits for an SD card: it batches appends and fsyncs them
//! every [`FLUSH_INTERVAL`] (and on shutdown), and rewrites a file that has grown past twice
//! the history length to its newest records (to a temporary file, fsynced, then renamed over,
//! so a crash leaves either the old or the new file). Loading stops at the first record that is
//! short or fails its checksum (a write torn by a crash or power cut), keeps everything before
//! it, and cuts the file there so later appends follow good data.

use crate::message::Encoded;
use crate::stats::Stats;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often appends are written and fsynced. A crash loses at most this much chat.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes of a record header: length and CRC-32.
const HEADER_BYTES: usize = 8;
/// Largest record accepted when loading; anything larger is corruption.
const MAX_RECORD_BYTES: usize = 1 << 20;
/// Open append handles kept by the disk thread; beyond it the least used ones are closed.
const OPEN_FILES: usize = 64;

/// One stored message: its id and the frame browsers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The message id.
    pub id: u64,
    /// The encoded `message` frame.
    pub frame: Encoded,
}

/// The newest messages of one room, oldest first, and the room's last id.
#[derive(Debug, Clone)]
pub struct Ring {
    entries: VecDeque<Entry>,
    capacity: usize,
    last_id: u64,
}

/// What a client asked to catch up on, answered.
pub struct Replay<'a> {
    /// The entries to send, oldest first.
    pub entries: Vec<&'a Entry>,
    /// False when the ring no longer reaches back to what was asked for.
    pub complete: bool,
}

impl Ring {
    /// An empty ring keeping `capacity` messages.
    pub fn new(capacity: usize) -> Ring {
        Ring {
            // Grows as messages arrive: most rooms never fill their ring.
            entries: VecDeque::new(),
            capacity,
            last_id: 0,
        }
    }

    /// A ring holding the newest of `entries` (oldest first).
    pub fn from_entries(capacity: usize, entries: Vec<Entry>) -> Ring {
        let mut ring = Ring::new(capacity);
        for entry in entries {
            ring.push(entry);
        }
        ring
    }

    /// The id of the newest message ever stored (0 if none).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Adds a message, forgetting the oldest if full.
    pub fn push(&mut self, entry: Entry) {
        self.last_id = self.last_id.max(entry.id);
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Messages newer than `after` (all kept ones if `None`).
    pub fn since(&self, after: Option<u64>) -> Replay<'_> {
        let after = after.unwrap_or(0);
        let entries: Vec<&Entry> = self.entries.iter().filter(|e| e.id > after).collect();
        // Complete if nothing is newer, or the oldest we still have is right after `after`.
        let oldest_kept = self.entries.front().map_or(self.last_id + 1, |e| e.id);
        let complete = after >= self.last_id || oldest_kept <= after + 1;
        Replay { entries, complete }
    }
}

/// What the disk thread is asked to do.
enum Command {
    /// Append this frame to the room's file.
    Append { room: String, frame: Bytes },
    /// Write out everything, then stop.
    Close,
}

/// The on-disk history: loads room files and hands appends to the disk thread.
pub struct Store {
    dir: PathBuf,
    capacity: usize,
    commands: mpsc::Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating) `dir/rooms` and starts the disk thread. `capacity` is the history
    /// length; bytes written are counted in `stats`.
    pub fn open(dir: &Path, capacity: usize, stats: Arc<Stats>) -> io::Result<Store> {
        let dir = dir.join("rooms");
        fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        let (commands, inbox) = mpsc::channel();
        let writer = DiskWriter {
            dir: dir.clone(),
            capacity,
            stats,
            files: HashMap::new(),
            pending: HashMap::new(),
            tick: 0,
        };
        let thread = std::thread::Builder::new()
            .name("smolchat-disk".into())
            .spawn(move || writer.run(inbox))?;
        Ok(Store {
            dir,
            capacity,
            commands,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The newest `capacity` messages stored for `room`, oldest first. Cuts a torn tail off
    /// the file. Small (at most twice the history length), so it is read in one go.
    pub fn load(&self, room: &str) -> io::Result<Vec<Entry>> {
        let path = self.dir.join(file_name(room));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let (mut entries, good) = decode_records(&bytes);
        if good < bytes.len() {
            log::warn!(
                "{}: ignoring {} bytes after the last whole record (a write cut short)",
                path.display(),
                bytes.len() - good
            );
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        let skip = entries.len().saturating_sub(self.capacity);
        entries.drain(..skip);
        Ok(entries)
    }

    /// Queues `frame` for `room`'s file; written within [`FLUSH_INTERVAL`].
    pub fn append(&self, room: &str, frame: &Encoded) {
        let command = Command::Append {
            room: room.to_owned(),
            frame: frame.bytes().clone(),
        };
        if self.commands.send(command).is_err() {
            log::error!("history for {room} not saved: the disk thread has stopped");
        }
    }

    /// Writes out everything queued and stops the disk thread. Appends after this are lost.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
        let thread = self.thread.lock().expect("store lock").take();
        if let Some(thread) = thread {
            // A panicked disk thread already printed why.
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The disk thread's state.
struct DiskWriter {
    dir: PathBuf,
    capacity: usize,
    stats: Arc<Stats>,
    /// Open append handles with their record count and last use.
    files: HashMap<String, OpenLog>,
    /// Encoded records waiting for the next flush, per room.
    pending: HashMap<String, Vec<u8>>,
    tick: u64,
}

struct OpenLog {
    file: File,
    records: usize,
    last_used: u64,
}

impl DiskWriter {
    fn run(mut self, inbox: mpsc::Receiver<Command>) {
        let mut next_flush = Instant::now() + FLUSH_INTERVAL;
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(Command::Append { room, frame }) => {
                    encode_record(self.pending.entry(room).or_default(), &frame);
                }
                Ok(Command::Close) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.flush();
                    next_flush = Instant::now() + FLUSH_INTERVAL;
                }
            }
        }
    }

    /// Writes and fsyncs every room's pending records; compacts files grown too long.
    fn flush(&mut self) {
        for (room, bytes) in std::mem::take(&mut self.pending) {
            let records = count_records(&bytes);
            if let Err(e) = self.append(&room, &bytes, records) {
                log::error!("history for room {room}: {e}");
                self.files.remove(&room);
            }
        }
    }

    fn append(&mut self, room: &str, bytes: &[u8], records: usize) -> io::Result<()> {
        self.tick += 1;
        let path = self.dir.join(file_name(room));
        if !self.files.contains_key(room) {
            if self.files.len() >= OPEN_FILES {
                self.close_least_used();
            }
            let existing = fs::read(&path)
                .map(|b| decode_records(&b).0.len())
                .unwrap_or(0);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.files.insert(
                room.to_owned(),
                OpenLog {
                    file,
                    records: existing,
                    last_used: 0,
                },
            );
        }
        let log = self.files.get_mut(room).expect("inserted above");
        log.last_used = self.tick;
        log.file.write_all(bytes)?;
        log.file.sync_data()?;
        log.records += records;
        self.stats.disk_written(bytes.len() as u64);
        log::debug!("history: wrote {records} records for room {room}");
        if log.records > self.capacity * 2 {
            self.files.remove(room);
            self.compact(&path)?;
        }
        Ok(())
    }

    /// Rewrites `path` to its newest `capacity` records, atomically.
    fn compact(&self, path: &Path) -> io::Result<()> {
        let bytes = fs::read(path)?;
        let (entries, _) = decode_records(&bytes);
        let keep = &entries[entries.len().saturating_sub(self.capacity)..];
        let mut out = Vec::new();
        for entry in keep {
            encode_record(&mut out, entry.frame.bytes());
        }
        let temporary = path.with_extension("log.tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(&out)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        if let Ok(dir) = File::open(&self.dir) {
            // Makes the rename itself durable; not all file systems support it, hence ignored.
            let _ = dir.sync_all();
        }
        self.stats.disk_written(out.len() as u64);
        log::debug!("compacted {} to {} records", path.display(), keep.len());
        Ok(())
    }

    fn close_least_used(&mut self) {
        if let Some(room) = self
            .files
            .iter()
            .min_by_key(|(_, log)| log.last_used)
            .map(|(room, _)| room.clone())
        {
            self.files.remove(&room);
        }
    }
}

/// A room's file name. Room names are `a-z 0-9 - _` only, so they are safe as file names.
fn file_name(room: &str) -> String {
    format!("{room}.log")
}

/// Appends one record for `frame` to `out`.
fn encode_record(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(frame).to_le_bytes());
    out.extend_from_slice(frame);
}

/// Counts the records in a buffer of whole records.
fn count_records(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= HEADER_BYTES {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        bytes = &bytes[(HEADER_BYTES + len).min(bytes.len())..];
        n += 1;
    }
    n
}

/// Decodes records until the first damaged one; returns them and the length of the good part.
fn decode_records(bytes: &[u8]) -> (Vec<Entry>, usize) {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    let mut entries = Vec::new();
    let mut reader = bytes;
    let mut good = 0;
    loop {
        let mut header = [0u8; HEADER_BYTES];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES || reader.len() < len {
            break;
        }
        let (frame, rest) = reader.split_at(len);
        if crc32(frame) != crc {
            break;
        }
        let Ok(Id { id }) = serde_json::from_slice::<Id>(frame) else {
            break;
        };
        let Some(frame) = Encoded::from_stored(Bytes::copy_from_slice(frame)) else {
            break;
        };
        entries.push(Entry { id, frame });
        reader = rest;
        good += HEADER_BYTES + len;
    }
    (entries, good)
}

/// CRC-32 (IEEE 802.3, as in zip and PNG), bitwise: records are small and written once a second.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Outbound;

    fn entry(id: u64) -> Entry {
        let text = format!("message {id}");
        let frame = Outbound::Message {
            id,
            room: "r",
            name: "n",
            text: &text,
            when: "t",
            mentions: &[],
        }
        .encode();
        Entry { id, frame }
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
        let dir =
            std::env::temp_dir().join(format!("smolchat-history-{}-{name}", std::process::id()));
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
        let loaded = reopened.load("lobby").unwrap();
        assert_eq!(
            loaded.iter().map(|e| e.id).collect::<Vec<_>>(),
            [3, 4, 5, 6]
        );
        assert_eq!(loaded[3], entry(6));
        assert!(reopened.load("empty").unwrap().is_empty());
        drop(reopened);

        // Past twice the capacity, the file is rewritten to the newest records.
        let store = Store::open(&dir, 4, stats).unwrap();
        for id in 7..=9 {
            store.append("lobby", &entry(id).frame);
        }
        store.close();
        let bytes = fs::read(dir.join("rooms/lobby.log")).unwrap();
        let (on_disk, _) = decode_records(&bytes);
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
        let loaded = store.load("lobby").unwrap();
        assert_eq!(loaded.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        let (good, _) = decode_records(&whole);
        let two_records = whole.len() - (HEADER_BYTES + good[2].frame.bytes().len());
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, two_records);

        // A flipped bit fails the checksum the same way.
        let mut flipped = whole.clone();
        flipped[HEADER_BYTES + 3] ^= 0x20;
        assert_eq!(decode_records(&flipped).0.len(), 0);
    }
}
