//! Shared files over HTTP.
//!
//! `POST /files/:room?name=NAME` takes the file as the raw body (`Content-Length` required; the
//! connection loop already refused bodies over `--max-file-bytes`). It checks the session and
//! that the person has a seat in the room before reading a byte, then streams the body into the
//! store through one fixed buffer, and announces the file in the room once it is whole on disk.
//! The answer, 201, is the room's `file` frame. Each address may start `--uploads-per-minute`
//! uploads a minute (`429` with `Retry-After` beyond), the files' sender limit.
//!
//! `GET /files/:id/:name` serves a file by its id (the name is only for people). What a file is
//! comes from its first bytes, never from the uploader: only PNG, JPEG, GIF and WebP whose
//! header gives their size are shown inline; everything else is an attachment. Every answer
//! carries `Content-Security-Policy: sandbox` and `nosniff`, so nothing uploaded runs script in
//! the chat's origin. Single byte ranges (206, 416), ETag (the id: a file never changes) and
//! revalidation on every use, so a removed file shows as gone at once. A file this box does not
//! hold may be held by another box sharing rooms with it: `elsewhere.rs` fetches it from there.

#[cfg(feature = "redis")]
use super::elsewhere;
use super::{peer_ip, plain, query, refuse, session, too_many, State};
use crate::files::{clean_name, valid_id, FileError, Kind, Stored};
use crate::room::{ShareError, SharedFile};
use crate::stats::Refusal;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use smol::io::{AsyncReadExt, BufReader};
use smol::Unblock;
use std::io::{Seek, SeekFrom};
use tide::{Body, Request, Response, StatusCode};

/// The buffer an upload is read into, and its first bytes are sniffed from: all the memory
/// one upload holds here.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// The pipe a download is read from the disk through.
const SEND_BUFFER_BYTES: usize = 16 * 1024;
/// Types shown in the page; anything else is downloaded.
const INLINE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// The type of a file whose first bytes say nothing we know.
const UNKNOWN_TYPE: &str = "application/octet-stream";
/// Every file answer's policy: no script, no plugins, no same-origin rights, even if a
/// browser were talked into rendering the bytes as a document.
const FILE_POLICY: &str = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'";
/// What a missing file's answer says.
const GONE: &str = "this file is gone (removed for space, expired or deleted)";

/// Adds the file routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/files/:room").post(upload);
    app.at("/files/:id/:name").get(download);
}

/// The URL a stored file is served at.
fn url(stored: &Stored) -> String {
    format!(
        "/files/{}/{}",
        stored.id,
        utf8_percent_encode(&stored.name, NON_ALPHANUMERIC)
    )
}

/// The type and size of a file, from its first bytes.
fn sniff(head: &[u8]) -> Kind {
    let mime = infer::get(head).map_or(UNKNOWN_TYPE, |t| t.mime_type());
    let size = INLINE_TYPES
        .contains(&mime)
        .then(|| imagesize::blob_size(head).ok())
        .flatten();
    let pixels = |n: usize| u32::try_from(n).ok();
    Kind {
        mime: mime.to_owned(),
        width: size.as_ref().and_then(|s| pixels(s.width)),
        height: size.as_ref().and_then(|s| pixels(s.height)),
    }
}

/// The `Content-Type` a file is served with: its own for images shown and for sound and video
/// (players need it for ranges), opaque bytes for everything else, HTML and SVG included.
fn served_type(mime: &str, shown: bool) -> &str {
    if shown || mime.starts_with("video/") || mime.starts_with("audio/") {
        mime
    } else {
        UNKNOWN_TYPE
    }
}

/// Whether a stored file is shown in the page rather than downloaded.
fn inline(stored: &Stored) -> bool {
    INLINE_TYPES.contains(&stored.mime.as_str()) && stored.width.is_some()
}

async fn upload(mut req: Request<State>) -> tide::Result {
    let state = req.state();
    let Some(files) = state.files.clone() else {
        return Ok(plain(StatusCode::NotFound, "file sharing is off"));
    };
    let room = req.param("room")?.to_owned();
    if let Some(refused) = super::direct::check_room(&req, &room) {
        return Ok(refused);
    }
    let Some(session) = session(&req) else {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    };
    let size = match req
        .header("Content-Length")
        .map(|v| v.last().as_str().parse::<u64>())
    {
        Some(Ok(size)) => size,
        _ => {
            return Ok(plain(
                StatusCode::LengthRequired,
                "send the file as the body, with Content-Length",
            ))
        }
    };
    if size == 0 {
        return Ok(plain(StatusCode::BadRequest, "the file is empty"));
    }
    let Some(raw_name) = query(&req, "name") else {
        return Ok(plain(
            StatusCode::BadRequest,
            "name the file: ?name=photo.jpg",
        ));
    };
    let name = clean_name(&raw_name);
    let registry = state.registry.clone();
    if let Err(why) = registry.may_share(&room, session.person).await {
        return Ok(plain(StatusCode::Forbidden, &why.to_string()));
    }
    let peer = req.peer_addr().unwrap_or("unknown").to_owned();
    // Counted once the upload may start: the sender limit on files, per address like the other
    // per-minute limits (several tabs and phones behind one router share it).
    if let Some(wait) = peer_ip(&req).and_then(|ip| state.uploads.try_count(ip).err()) {
        refuse(
            state,
            Refusal::Upload,
            &peer,
            "upload: too many from its address",
        );
        let why = format!(
            "too many uploads from your address: try again in {} s",
            wait.as_secs().max(1)
        );
        return Ok(too_many(&why, Some(wait)));
    }
    let mut upload = match files.begin(&room, &name, size).await {
        Ok(upload) => upload,
        Err(error) => return Ok(refused(&peer, &error)),
    };

    let mut body = req.take_body();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut filled = 0;
    let mut kind = None;
    loop {
        let n = match body.read(&mut buffer[filled..]).await {
            Ok(n) => n,
            Err(e) => {
                log::info!("{peer}: upload of {size} bytes cut short: {e}");
                return Ok(plain(StatusCode::BadRequest, "the upload was cut short"));
            }
        };
        filled += n;
        if n > 0 && filled < buffer.len() {
            continue;
        }
        // The first full buffer (or the whole file) tells what it is.
        let kind = kind.get_or_insert_with(|| sniff(&buffer[..filled]));
        if let Err(error) = upload.write(&buffer[..filled]).await {
            return Ok(refused(&peer, &error));
        }
        filled = 0;
        if n == 0 {
            let kind = kind.clone();
            drop(buffer);
            let stored = match upload.finish(kind).await {
                Ok(stored) => stored,
                Err(error) => return Ok(refused(&peer, &error)),
            };
            return Ok(announce(&req, stored, session.person).await);
        }
    }
}

/// Tells the room; answers with the room's frame, or takes the file back out if the sharer
/// left meanwhile.
async fn announce(req: &Request<State>, stored: Stored, person: u64) -> Response {
    let state = req.state();
    let shared = SharedFile {
        url: url(&stored),
        name: stored.name.clone(),
        size: stored.size,
        mime: stored.mime.clone(),
        width: stored.width,
        height: stored.height,
    };
    match state.registry.share(&stored.room, person, shared).await {
        Ok(frame) => {
            let mut res = Response::new(StatusCode::Created);
            res.insert_header("Location", url(&stored));
            res.insert_header("Content-Type", "application/json");
            res.set_body(frame.bytes().to_vec());
            res
        }
        // Redis may have kept the frame (its answer was lost): the file stays, for whoever
        // sees it, until it expires or is removed for space.
        Err(error @ ShareError::Unconfirmed(_)) => {
            plain(StatusCode::ServiceUnavailable, &error.to_string())
        }
        Err(error) => {
            if let Some(files) = state.files.clone() {
                let id = stored.id.clone();
                if let Err(e) = smol::unblock(move || files.remove(&id)).await {
                    log::warn!("files: {e}");
                }
            }
            let status = match error {
                ShareError::Unsent(_) => StatusCode::ServiceUnavailable,
                _ => StatusCode::Forbidden,
            };
            plain(status, &error.to_string())
        }
    }
}

/// The answer to an upload the store would not take.
fn refused(peer: &str, error: &FileError) -> Response {
    let status = match error {
        FileError::TooLarge { .. } => StatusCode::PayloadTooLarge,
        FileError::NoSpace(_) => StatusCode::InsufficientStorage,
        FileError::Length { .. } => StatusCode::BadRequest,
        FileError::Busy => StatusCode::ServiceUnavailable,
        FileError::Io(_) => {
            log::error!("{peer}: upload failed: {error}");
            return plain(
                StatusCode::InternalServerError,
                "the file could not be stored",
            );
        }
    };
    log::info!("{peer}: upload refused: {error}");
    plain(status, &error.to_string())
}

/// What part of a file a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Span {
    /// All of it (no range, or one we do not serve, such as several at once).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing of the file is in the range: 416.
    Unsatisfiable,
}

/// Reads a single `bytes=` range against a file of `size` bytes (RFC 9110 14.1.2).
fn span(header: Option<&str>, size: u64) -> Span {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Span::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => Span::Unsatisfiable,
            Ok(n) if size > 0 => Span::Part(size.saturating_sub(n), size - 1),
            Ok(_) => Span::Unsatisfiable,
            Err(_) => Span::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Span::Whole;
    };
    let end = match last {
        "" => u64::MAX,
        text => match text.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Span::Whole,
        },
    };
    if start >= size {
        Span::Unsatisfiable
    } else {
        Span::Part(start, end.min(size - 1))
    }
}

/// `Content-Disposition` with an ASCII fallback name and the exact UTF-8 one.
fn disposition(kind: &str, name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' ' => ' ',
            '"' | '\\' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    format!(
        "{kind}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    )
}

/// A file answer's headers that do not depend on its bytes.
pub(super) fn file_response(status: StatusCode) -> Response {
    let mut res = Response::new(status);
    res.insert_header("Content-Security-Policy", FILE_POLICY);
    res.insert_header("Cross-Origin-Resource-Policy", "same-origin");
    res
}

fn gone() -> Response {
    let mut res = file_response(StatusCode::NotFound);
    res.set_body(format!("{GONE}\n"));
    res.insert_header("Content-Type", "text/plain; charset=utf-8");
    res.insert_header("Cache-Control", "no-store");
    res
}

async fn download(req: Request<State>) -> tide::Result {
    let state = req.state();
    // Only boxes sharing rooms fetch each other's files; the routers' builds leave that out.
    #[cfg(feature = "redis")]
    let from_a_box = elsewhere::from_a_box(&req);
    #[cfg(not(feature = "redis"))]
    let from_a_box = false;
    if state.live.get().passcode.is_some() && session(&req).is_none() && !from_a_box {
        return Ok(plain(StatusCode::Unauthorized, "sign in first"));
    }
    let id = req.param("id")?;
    if !valid_id(id) {
        return Ok(gone());
    }
    let here = state.files.as_ref().and_then(|files| files.get(id));
    let (Some(files), Some(stored)) = (state.files.clone(), here) else {
        // Shared in a room shared across boxes, from another box? (Never asked on behalf of
        // a box: a box asks the holder, and the holder does not ask further.)
        if from_a_box {
            return Ok(gone());
        }
        #[cfg(feature = "redis")]
        return Ok(elsewhere::fetch(&req, id).await.unwrap_or_else(gone));
        #[cfg(not(feature = "redis"))]
        return Ok(gone());
    };
    let etag = format!("\"{}\"", stored.id);
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
    let mut res = if header("If-None-Match")
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        file_response(StatusCode::NotModified)
    } else {
        let range = match header("If-Range") {
            Some(tag) if tag.trim() != etag => None,
            _ => header("Range"),
        };
        let size = stored.size;
        let (status, start, end) = match span(range.as_deref(), size) {
            Span::Whole => (StatusCode::Ok, 0, size.saturating_sub(1)),
            Span::Part(start, end) => (StatusCode::PartialContent, start, end),
            Span::Unsatisfiable => {
                let mut res = file_response(StatusCode::RequestedRangeNotSatisfiable);
                res.insert_header("Content-Range", format!("bytes */{size}"));
                res.insert_header("ETag", etag.as_str());
                return Ok(res);
            }
        };
        let path = files.path(&stored.id);
        let opened = smol::unblock(move || -> std::io::Result<std::fs::File> {
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(start))?;
            Ok(file)
        })
        .await;
        let file = match opened {
            Ok(file) => file,
            // Removed between the index and the disk: gone all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(gone()),
            Err(e) => return Err(tide::Error::new(StatusCode::InternalServerError, e)),
        };
        let len = end + 1 - start;
        let reader = Unblock::with_capacity(SEND_BUFFER_BYTES, file).take(len);
        let mut res = file_response(status);
        res.set_body(Body::from_reader(
            BufReader::new(reader),
            Some(len as usize),
        ));
        if status == StatusCode::PartialContent {
            res.insert_header("Content-Range", format!("bytes {start}-{end}/{size}"));
        }
        let shown = inline(&stored);
        res.insert_header("Content-Type", served_type(&stored.mime, shown));
        let how = if shown { "inline" } else { "attachment" };
        res.insert_header("Content-Disposition", disposition(how, &stored.name));
        res
    };
    res.insert_header("ETag", etag.as_str());
    res.insert_header("Accept-Ranges", "bytes");
    // Revalidated each time (cheap: 304), so a removed file shows as gone at once.
    res.insert_header("Cache-Control", "private, no-cache");
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_rfc() {
        assert_eq!(span(None, 100), Span::Whole);
        assert_eq!(span(Some("bytes=0-9"), 100), Span::Part(0, 9));
        assert_eq!(span(Some("bytes=10-19"), 100), Span::Part(10, 19));
        assert_eq!(span(Some("bytes=90-"), 100), Span::Part(90, 99));
        assert_eq!(span(Some("bytes=90-500"), 100), Span::Part(90, 99));
        assert_eq!(span(Some("bytes=-5"), 100), Span::Part(95, 99));
        assert_eq!(span(Some("bytes=-500"), 100), Span::Part(0, 99));
        assert_eq!(span(Some("bytes=100-"), 100), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=-0"), 100), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=0-1,5-6"), 100), Span::Whole);
        assert_eq!(span(Some("bytes=9-2"), 100), Span::Whole);
        assert_eq!(span(Some("items=0-1"), 100), Span::Whole);
        assert_eq!(span(Some("bytes=x-"), 100), Span::Whole);
    }

    #[test]
    fn types_come_from_the_bytes() {
        let kind = sniff(b"<html><script>alert(1)</script></html>");
        assert!(!INLINE_TYPES.contains(&kind.mime.as_str()));
        assert_eq!(served_type(&kind.mime, false), UNKNOWN_TYPE);
        assert_eq!(served_type("video/mp4", false), "video/mp4");
        let svg = sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>x</script></svg>");
        assert!(!INLINE_TYPES.contains(&svg.mime.as_str()));
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&[3, 0, 2, 0, 0, 0, 0]);
        let kind = sniff(&gif);
        assert_eq!(
            (kind.mime.as_str(), kind.width, kind.height),
            ("image/gif", Some(3), Some(2))
        );
    }

    #[test]
    fn download_names_are_quoted_safely() {
        assert_eq!(
            disposition("attachment", "a \"b\".txt"),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22%2Etxt"
        );
        assert_eq!(
            disposition("inline", "café.jpg"),
            "inline; filename=\"caf_.jpg\"; filename*=UTF-8''caf%C3%A9%2Ejpg"
        );
    }
}
