//! The on-disk history. A dedicated thread does all file I/O, so no executor thread ever waits
//! for an SD card: it batches appends and fsyncs them every [`FLUSH_INTERVAL`] (and on
//! shutdown), writes a tombstone at once (with what the room had pending) and says when it is
//! on disk, and rewrites a file that has grown past twice the history length to its newest
//! standing records (to a temporary file, fsynced, then renamed over, so a crash leaves either
//! the old or the new file). Loading stops at the first record that is short or fails its
//! checksum (a write torn by a crash or power cut), keeps everything before it, and cuts the
//! file there so later appends follow good data.

use super::records::{compacted, count_records, decode_records, encode_record};
use super::Entry;
use crate::message::Encoded;
use crate::stats::Stats;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often appends are written and fsynced. A crash loses at most this much chat.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Open append handles kept by the disk thread; beyond it the least used ones are closed.
const OPEN_FILES: usize = 64;

/// What the disk thread is asked to do.
enum Command {
    /// Append this frame to the room's file.
    Append { room: String, frame: Bytes },
    /// Append this tombstone (after what the room has pending), fsync, then answer.
    Erase {
        room: String,
        frame: Bytes,
        done: async_channel::Sender<io::Result<()>>,
    },
    /// Write out everything, then stop.
    Close,
}

/// A room's history as read from its file.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest standing messages, oldest first, at most the history length.
    pub entries: Vec<Entry>,
    /// The room's last id, also that of messages since removed.
    pub last_id: u64,
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

    /// The newest `capacity` messages stored for `room`, oldest first, with tombstones
    /// applied. Cuts a torn tail off the file. Small (at most twice the history length), so
    /// it is read in one go.
    pub fn load(&self, room: &str) -> io::Result<Loaded> {
        let path = self.dir.join(file_name(room));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let decoded = decode_records(&bytes);
        if decoded.good < bytes.len() {
            log::warn!(
                "{}: ignoring {} bytes after the last whole record (a write cut short)",
                path.display(),
                bytes.len() - decoded.good
            );
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(decoded.good as u64)?;
            file.sync_all()?;
        }
        let mut entries = decoded.entries;
        let skip = entries.len().saturating_sub(self.capacity);
        entries.drain(..skip);
        Ok(Loaded {
            entries,
            last_id: decoded.last_id,
        })
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

    /// Writes `tombstone` (a `delete` or `clear` frame) to `room`'s file after everything
    /// queued for it, and returns once it is fsynced: only then may the removal be announced.
    pub async fn erase(&self, room: &str, tombstone: &Encoded) -> io::Result<()> {
        let (done, answer) = async_channel::bounded(1);
        let command = Command::Erase {
            room: room.to_owned(),
            frame: tombstone.bytes().clone(),
            done,
        };
        let stopped = || io::Error::other("the disk thread has stopped");
        self.commands.send(command).map_err(|_| stopped())?;
        answer.recv().await.map_err(|_| stopped())?
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
                Ok(Command::Erase { room, frame, done }) => {
                    let mut bytes = self.pending.remove(&room).unwrap_or_default();
                    encode_record(&mut bytes, &frame);
                    let written = self.write(&room, &bytes);
                    // The room may have stopped waiting (server stopping); the tombstone holds.
                    let _ = done.try_send(written);
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
            // Logged inside; the next flush tries again with a fresh handle.
            let _ = self.write(&room, &bytes);
        }
    }

    /// Appends whole records to `room`'s file, logging a failure.
    fn write(&mut self, room: &str, bytes: &[u8]) -> io::Result<()> {
        let records = count_records(bytes);
        let written = self.append(room, bytes, records);
        if let Err(e) = &written {
            log::error!("history for room {room}: {e}");
            self.files.remove(room);
        }
        written
    }

    fn append(&mut self, room: &str, bytes: &[u8], records: usize) -> io::Result<()> {
        self.tick += 1;
        let path = self.dir.join(file_name(room));
        if !self.files.contains_key(room) {
            if self.files.len() >= OPEN_FILES {
                self.close_least_used();
            }
            let existing = fs::read(&path)
                .map(|b| decode_records(&b).records)
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
            self.compact(&path, room)?;
        }
        Ok(())
    }

    /// Rewrites `path` to its newest `capacity` standing records, atomically; tombstones and
    /// what they removed are left out.
    fn compact(&self, path: &Path, room: &str) -> io::Result<()> {
        let bytes = fs::read(path)?;
        let out = compacted(&decode_records(&bytes), self.capacity, room);
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
        log::debug!("compacted {} to {} bytes", path.display(), out.len());
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
pub(super) fn file_name(room: &str) -> String {
    format!("{room}.log")
}
