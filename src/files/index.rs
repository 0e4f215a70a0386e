//! The list of stored files on disk: one small JSON file, rewritten whole on every change the way
//! the history store compacts (a temporary file, fsynced, renamed over the old one, then the
//! directory fsynced), so a crash leaves the old list or the new one, never half of either.
//!
//! At start the list is reconciled with the directory: entries whose bytes are missing are
//! dropped, and files the list does not name (an upload cut short, a file whose entry never
//! made it to disk, an eviction cut short) are deleted. The sizes come from the files
//! themselves, so the quota's count is true after any crash.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The index's file name inside the files directory.
pub const INDEX: &str = "index.json";
/// The name the index is written under before it is renamed over [`INDEX`].
const INDEX_TEMPORARY: &str = "index.json.tmp";
/// The ending of a file being uploaded, renamed away once it is whole and fsynced.
pub const PART: &str = ".part";

/// One stored file, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Random, 32 hex digits; also the file's name on disk.
    pub id: String,
    /// The room it was shared in.
    pub room: String,
    /// The cleaned name it was uploaded with (shown, and offered when downloading).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The type its first bytes show, e.g. `image/png`; `application/octet-stream` if unknown.
    pub mime: String,
    /// Pixels, for images whose header says.
    pub width: Option<u32>,
    /// Pixels, for images whose header says.
    pub height: Option<u32>,
    /// When it was stored, in seconds since 1970.
    pub created: u64,
}

/// Whether `name` could be a file id (and so never reaches outside the directory).
pub fn valid_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads the index in `dir` (none: empty), oldest first, and makes the directory agree with it.
pub fn load(dir: &Path) -> io::Result<Vec<Stored>> {
    let path = dir.join(INDEX);
    let mut entries: Vec<Stored> = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the files index {} is damaged ({e}); move it away to start without it",
                    path.display()
                ),
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    let before = entries.len();
    entries.retain_mut(|entry| {
        if !valid_id(&entry.id) {
            return false;
        }
        match fs::metadata(dir.join(&entry.id)) {
            Ok(meta) if meta.is_file() => {
                entry.size = meta.len();
                true
            }
            _ => false,
        }
    });
    entries.sort_by_key(|entry| entry.created);
    let known: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let mut orphans = 0;
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name == INDEX || known.contains(name.as_ref()) {
            continue;
        }
        let ours = valid_id(name.trim_end_matches(PART)) || name == INDEX_TEMPORARY;
        if ours && item.file_type()?.is_file() {
            fs::remove_file(item.path())?;
            orphans += 1;
        }
    }
    if orphans > 0 || before != entries.len() {
        log::warn!(
            "files: removed {orphans} unlisted files and {} entries without bytes (an upload or \
             removal cut short)",
            before - entries.len()
        );
        save(dir, &entries)?;
    }
    Ok(entries)
}

/// Writes `entries` as the index in `dir`, atomically.
pub fn save(dir: &Path, entries: &[Stored]) -> io::Result<()> {
    let json = serde_json::to_vec(entries).expect("plain strings and numbers serialise");
    let temporary = dir.join(INDEX_TEMPORARY);
    let context = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", temporary.display()),
        )
    };
    let mut file = File::create(&temporary).map_err(context)?;
    file.write_all(&json).map_err(context)?;
    file.sync_all().map_err(context)?;
    fs::rename(&temporary, dir.join(INDEX)).map_err(context)?;
    sync_dir(dir);
    Ok(())
}

/// Makes renames and removals in `dir` durable; not every file system supports it, hence
/// ignored.
pub fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}
