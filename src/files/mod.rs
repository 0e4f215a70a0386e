//! The file store: shared photos and files as bytes on disk, never in memory.
//!
//! An [`Upload`] streams into `files/<id>.part` through a small fixed pipe, and only when every
//! announced byte has arrived is the file fsynced, renamed to `files/<id>` and entered in the
//! index (`index.rs`, rewritten atomically). So a crash mid-upload leaves a `.part` file that no
//! one can fetch and that the next start deletes, and the index always names whole files. On
//! disk a file is named by its random id only; the uploaded name is cleaned (`name.rs`) and
//! kept in the index for showing.
//!
//! Space is kept within a quota counting whole files and uploads under way: an upload reserves
//! its announced size up front, removing the oldest files while that does not fit; one that
//! cannot fit even in an empty store is refused before any byte is read. Files older than the
//! configured age are removed by [`Files::expire`]. [`Files::remove`] is the hook for deleting a
//! message's file. File I/O runs on smol's blocking pool, never on an executor thread.
//!
//! Nothing here knows HTTP: the web layer sniffs the type and hands bytes in.

mod index;
mod name;

pub use index::{valid_id, Stored};
pub use name::clean_name;

use smol::io::AsyncWriteExt;
use smol::Unblock;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes of the pipe between an upload and the blocking thread that writes it: the whole of
/// what an upload holds in this store, however large the file.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Uploads under way at once; more are refused ([`FileError::Busy`]), so that uploads together
/// hold at most this many buffers.
pub const MAX_UPLOADS: usize = 16;
/// Share of the file system's free space at start that files may use when no quota is given.
pub const DEFAULT_QUOTA_PERCENT: u64 = 50;

/// How much the store may hold, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Most bytes of all files and uploads under way together.
    pub quota: u64,
    /// Files older than this are removed; `None`: kept until evicted.
    pub max_age: Option<Duration>,
}

/// Why a file was not stored.
#[derive(Debug)]
pub enum FileError {
    /// Larger than [`Limits::max_file_bytes`].
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Does not fit the quota even after removing every older file, or the disk is full.
    NoSpace(String),
    /// Fewer or more bytes arrived than were announced.
    Length {
        /// Announced.
        expected: u64,
        /// Arrived (so far).
        got: u64,
    },
    /// [`MAX_UPLOADS`] uploads are under way.
    Busy,
    /// Reading or writing the disk failed.
    Io(io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::TooLarge { limit } => write!(f, "files may have at most {limit} bytes"),
            FileError::NoSpace(why) => f.write_str(why),
            FileError::Length { expected, got } => {
                write!(f, "announced {expected} bytes, got {got}")
            }
            FileError::Busy => write!(f, "{MAX_UPLOADS} uploads are under way, try again soon"),
            FileError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FileError {}

impl From<io::Error> for FileError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(28) => FileError::NoSpace("the disk is full".into()), // ENOSPC
            _ => FileError::Io(e),
        }
    }
}

/// What the store keeps in memory: the index, oldest first, and the space in use.
struct Inner {
    files: VecDeque<Stored>,
    /// Bytes of the files in `files`.
    used: u64,
    /// Bytes announced by uploads under way.
    reserved: u64,
    /// Uploads under way.
    uploads: usize,
}

/// The store of shared files in `<data dir>/files`.
pub struct Files {
    dir: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
    /// Held while the index is written, so writes happen one at a time, each of the newest state.
    writing: Mutex<()>,
}

impl Files {
    /// Opens (creating) `data_dir/files`: reads the index, deletes what it does not list, and
    /// removes expired files. `quota: None` takes [`DEFAULT_QUOTA_PERCENT`] of the free space.
    pub fn open(
        data_dir: &Path,
        max_file_bytes: u64,
        quota: Option<u64>,
        max_age: Option<Duration>,
    ) -> io::Result<Files> {
        let dir = data_dir.join("files");
        fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        let quota = match quota {
            Some(bytes) => bytes,
            None => free_bytes(&dir)? / 100 * DEFAULT_QUOTA_PERCENT,
        };
        let files: VecDeque<Stored> = index::load(&dir)?.into();
        let used = files.iter().map(|f| f.size).sum();
        let store = Files {
            dir,
            limits: Limits {
                max_file_bytes,
                quota,
                max_age,
            },
            inner: Mutex::new(Inner {
                files,
                used,
                reserved: 0,
                uploads: 0,
            }),
            writing: Mutex::new(()),
        };
        let expired = store.expire_blocking(SystemTime::now())?;
        let (count, used) = store.usage();
        log::info!(
            "files: {count} files, {used} bytes of a {quota}-byte quota in {}{}",
            store.dir.display(),
            if expired > 0 {
                format!(" ({expired} expired removed)")
            } else {
                String::new()
            }
        );
        Ok(store)
    }

    /// The limits in force (the quota as computed at start).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many files are stored, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.inner.lock().expect("files lock");
        (inner.files.len(), inner.used)
    }

    /// The stored file `id`, if it is there.
    pub fn get(&self, id: &str) -> Option<Stored> {
        let inner = self.inner.lock().expect("files lock");
        inner.files.iter().find(|f| f.id == id).cloned()
    }

    /// Where file `id`'s bytes are (only ids from [`Files::get`] should be opened).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Starts storing a file of exactly `size` bytes shared in `room` as `name` (already
    /// cleaned): reserves its space, removing the oldest files while it does not fit.
    pub async fn begin(
        self: &Arc<Self>,
        room: &str,
        name: &str,
        size: u64,
    ) -> Result<Upload, FileError> {
        if size > self.limits.max_file_bytes {
            return Err(FileError::TooLarge {
                limit: self.limits.max_file_bytes,
            });
        }
        let victims = {
            let mut inner = self.inner.lock().expect("files lock");
            if inner.uploads >= MAX_UPLOADS {
                return Err(FileError::Busy);
            }
            if inner.reserved + size > self.limits.quota {
                return Err(FileError::NoSpace(format!(
                    "no room for {size} bytes: the files quota is {} bytes, and {} of it is \
                     taken by uploads under way",
                    self.limits.quota, inner.reserved
                )));
            }
            let mut victims = Vec::new();
            while inner.used + inner.reserved + size > self.limits.quota {
                let oldest = inner
                    .files
                    .pop_front()
                    .expect("used > 0 means files remain");
                inner.used -= oldest.size;
                victims.push(oldest);
            }
            inner.reserved += size;
            inner.uploads += 1;
            victims
        };
        let id = new_id();
        let part = self.dir.join(format!("{id}{}", index::PART));
        let store = self.clone();
        let opened = smol::unblock({
            let part = part.clone();
            move || -> io::Result<File> {
                if !victims.is_empty() {
                    store.save_index()?;
                    store.delete(&victims);
                }
                File::create(&part)
            }
        })
        .await;
        // From here on, dropping the upload gives the reservation back.
        let mut upload = Upload {
            store: self.clone(),
            id,
            room: room.to_owned(),
            name: name.to_owned(),
            size,
            written: 0,
            file: None,
            part,
            done: false,
        };
        upload.file = Some(Unblock::with_capacity(WRITE_BUFFER_BYTES, opened?));
        Ok(upload)
    }

    /// Removes file `id` (the hook for deleting a message's file); false if it was not there.
    pub fn remove(&self, id: &str) -> io::Result<bool> {
        let removed = {
            let mut inner = self.inner.lock().expect("files lock");
            let Some(at) = inner.files.iter().position(|f| f.id == id) else {
                return Ok(false);
            };
            let removed = inner.files.remove(at).expect("found just now");
            inner.used -= removed.size;
            removed
        };
        self.save_index()?;
        self.delete(std::slice::from_ref(&removed));
        Ok(true)
    }

    /// Removes files older than the maximum age, as of `now`; returns how many. Blocks on
    /// the disk: call it from a blocking thread.
    pub fn expire_blocking(&self, now: SystemTime) -> io::Result<usize> {
        let Some(max_age) = self.limits.max_age else {
            return Ok(0);
        };
        let cutoff = unix_seconds(now).saturating_sub(max_age.as_secs());
        let expired: Vec<Stored> = {
            let mut inner = self.inner.lock().expect("files lock");
            let mut expired = Vec::new();
            while inner.files.front().is_some_and(|f| f.created < cutoff) {
                let file = inner.files.pop_front().expect("checked just now");
                inner.used -= file.size;
                expired.push(file);
            }
            expired
        };
        if !expired.is_empty() {
            self.save_index()?;
            self.delete(&expired);
            log::info!("files: removed {} older than {max_age:?}", expired.len());
        }
        Ok(expired.len())
    }

    /// Writes the index as it is now.
    fn save_index(&self) -> io::Result<()> {
        let _writing = self.writing.lock().expect("files index lock");
        let entries: Vec<Stored> = {
            let inner = self.inner.lock().expect("files lock");
            inner.files.iter().cloned().collect()
        };
        index::save(&self.dir, &entries)
    }

    /// Deletes the bytes of files already taken out of the index.
    fn delete(&self, files: &[Stored]) {
        for file in files {
            if let Err(e) = fs::remove_file(self.dir.join(&file.id)) {
                // The next start removes it as an orphan.
                log::warn!("files: cannot remove {}: {e}", file.id);
            } else {
                log::debug!("files: removed {} ({} bytes)", file.id, file.size);
            }
        }
        index::sync_dir(&self.dir);
    }
}

/// How often files are checked for their age.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// Removes expired files every [`EXPIRY_INTERVAL`] until `shutdown`; returns at once if files
/// never expire.
pub async fn keep_expiring(files: Arc<Files>, shutdown: crate::shutdown::Signal) {
    if files.limits.max_age.is_none() {
        return;
    }
    loop {
        let stop = smol::future::or(
            async {
                smol::Timer::after(EXPIRY_INTERVAL).await;
                false
            },
            async {
                shutdown.wait().await;
                true
            },
        )
        .await;
        if stop {
            return;
        }
        let files = files.clone();
        if let Err(e) = smol::unblock(move || files.expire_blocking(SystemTime::now())).await {
            log::error!("files: expiry failed: {e}");
        }
    }
}

/// What the web layer learned of a file from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// e.g. `image/png`; `application/octet-stream` when unknown.
    pub mime: String,
    /// Pixels, for images.
    pub width: Option<u32>,
    /// Pixels, for images.
    pub height: Option<u32>,
}

/// A file on its way into the store. Dropped, it gives its reserved space back; dropped before
/// [`Upload::finish`] succeeded, it also deletes its partial bytes.
pub struct Upload {
    store: Arc<Files>,
    id: String,
    room: String,
    name: String,
    size: u64,
    written: u64,
    file: Option<Unblock<File>>,
    part: PathBuf,
    done: bool,
}

impl Upload {
    /// Appends `bytes`; refuses more than were announced.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        let got = self.written + bytes.len() as u64;
        if got > self.size {
            return Err(FileError::Length {
                expected: self.size,
                got,
            });
        }
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes).await?;
        self.written = got;
        Ok(())
    }

    /// Makes the file whole: checks its length, fsyncs it, renames it into place and enters
    /// it in the index. Only then may anyone be told of it.
    pub async fn finish(mut self, kind: Kind) -> Result<Stored, FileError> {
        if self.written != self.size {
            return Err(FileError::Length {
                expected: self.size,
                got: self.written,
            });
        }
        let mut file = self.file.take().expect("open until finished");
        file.flush().await?;
        let file = file.into_inner().await;
        let stored = Stored {
            id: self.id.clone(),
            room: self.room.clone(),
            name: self.name.clone(),
            size: self.size,
            mime: kind.mime,
            width: kind.width,
            height: kind.height,
            created: unix_seconds(SystemTime::now()),
        };
        let (store, part, entry) = (self.store.clone(), self.part.clone(), stored.clone());
        smol::unblock(move || -> io::Result<()> {
            file.sync_all()?;
            drop(file);
            let path = store.path(&entry.id);
            fs::rename(&part, &path)?;
            index::sync_dir(&store.dir);
            {
                let mut inner = store.inner.lock().expect("files lock");
                // The reservation is given back when the upload is dropped, just after.
                inner.used += entry.size;
                inner.files.push_back(entry.clone());
            }
            if let Err(e) = store.save_index() {
                // Not listed, so not kept: take it back out.
                let mut inner = store.inner.lock().expect("files lock");
                inner.files.retain(|f| f.id != entry.id);
                inner.used -= entry.size;
                drop(inner);
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            Ok(())
        })
        .await?;
        self.done = true;
        log::debug!(
            "files: stored {} ({} bytes, {}) in room {}",
            stored.id,
            stored.size,
            stored.mime,
            stored.room
        );
        Ok(stored)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        {
            let mut inner = self.store.inner.lock().expect("files lock");
            inner.reserved -= self.size;
            inner.uploads -= 1;
        }
        if self.done {
            return;
        }
        let (file, part) = (self.file.take(), self.part.clone());
        // Unlinking does not wait for the pipe: the blocking thread closes the file when done.
        drop(file);
        if let Err(e) = fs::remove_file(&part) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("files: cannot remove {}: {e}", part.display());
            }
        }
    }
}

/// A fresh random file id: 32 hex digits from the operating system's random source.
fn new_id() -> String {
    crate::session::new_secret()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        io::Error::other(format!(
            "cannot measure free space in {}: {e}",
            dir.display()
        ))
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests;
