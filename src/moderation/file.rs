//! The book on disk: one JSON file, written to a temporary file, fsynced and renamed over the
//! old one, so a crash leaves either the old book or the new one, never half of one.

use super::Book;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The book at `path`; `None` if there is none yet. A file that is not a book is an error:
/// starting without the bans it held would let everyone back in.
pub(super) fn load(path: &Path) -> io::Result<Option<Book>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a moderation book ({e}); fix or remove it",
                path.display()
            ),
        )
    })
}

/// Writes `book` to `path` atomically and durably.
pub(super) fn save(path: &Path, book: &Book) -> io::Result<()> {
    let json = serde_json::to_vec(book).expect("the book is plain data");
    let temporary = path.with_extension("json.tmp");
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", temporary.display()));
    let mut file = File::create(&temporary).map_err(context)?;
    file.write_all(&json).map_err(context)?;
    file.sync_all().map_err(context)?;
    fs::rename(&temporary, path).map_err(context)?;
    if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
        // Makes the rename durable; not every file system can sync a directory.
        let _ = dir.sync_all();
    }
    Ok(())
}
