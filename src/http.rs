//! One HTTP/1.1 connection, request after request (keep-alive), parsed and encoded by async-h1
//! and answered by an endpoint (the tide app).
//!
//! We read each request head ourselves before async-h1 sees it. That lets us
//! - time out idle and slow clients with smol timers: async-h1's own header timeout uses an
//!   async-io 1.x timer, which starts a second reactor thread;
//! - answer `Expect: 100-continue` ourselves: async-h1 spawns a task on async-global-executor for
//!   it, which starts one executor thread per CPU, at any remote client's request;
//! - refuse bodies we never want (chunked, or larger than a form, or for an upload larger than
//!   `--max-file-bytes`) before reading them;
//! - frame each request ourselves (head, then its `Content-Length` of body), so that pipelined
//!   requests are answered in order and none is lost: async-h1 gets exactly one request's
//!   bytes, and whatever arrived after it waits for the next turn of the loop (or, after an
//!   upgrade, goes to the WebSocket first). A small body is read whole first; an upload's body is
//!   streamed from the socket to the endpoint, never more than its `Content-Length`.

use async_h1::server::{decode, Encoder};
use http_types::upgrade::Connection;
use http_types::{Request, Response, StatusCode};
use smol::future::or;
use smol::io::{self, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;
use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Longest request head; async-h1 refuses 8 KiB and more.
const MAX_HEAD_BYTES: usize = 8 * 1024 - 1;
/// Largest request body we read before the endpoint runs: our forms are small. Larger bodies
/// are only for uploads, streamed.
const MAX_BODY_BYTES: u64 = 16 * 1024;
/// Requests whose bodies may be as large as the upload limit (`--max-file-bytes`).
const UPLOAD_PREFIX: &[u8] = b"POST /files/";
/// How long a kept-alive connection may wait for its next request, and a request may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most a refused client may still send us before we close anyway.
const LINGER_BYTES: usize = 64 * 1024;
/// Longest we wait for a refused client to finish sending and close its side.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// What we send for `Expect: 100-continue`, before the request goes on to async-h1.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves requests on `stream` until the client closes, an error, an upgrade or `shutdown`.
/// Uploads (`POST /files/...`) may have bodies of up to `upload_limit` bytes.
pub async fn serve<F, Fut>(
    mut stream: TcpStream,
    peer: SocketAddr,
    endpoint: F,
    shutdown: crate::shutdown::Signal,
    upload_limit: u64,
) where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = http_types::Result<Response>>,
{
    let local = stream.local_addr().ok();
    // Bytes read from the socket and not used yet: the start of the next request (pipelining).
    let mut pending = Vec::new();
    loop {
        let request = or(
            read_request(&mut stream, &mut pending, upload_limit),
            async {
                shutdown.wait().await;
                Ok(None)
            },
        );
        let timeout = async {
            Timer::after(HEAD_TIMEOUT).await;
            Err(HeadError(
                StatusCode::RequestTimeout,
                "request head took too long",
            ))
        };
        let (message, rest) = match or(request, timeout).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(HeadError(status, why)) => {
                log::debug!("{peer}: {status} {why}");
                // Ignored: we are closing this connection either way.
                let _ = respond_plain(&mut stream, status, why).await;
                return;
            }
        };

        // async-h1 reads through a buffer of its own: it gets exactly this request, so it
        // cannot take bytes of the next one.
        let one = OneRequest::new(message, rest, stream.clone());
        let (mut req, mut body) = match decode(one).await {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return,
            Err(error) => {
                log::debug!("{peer}: bad request: {error}");
                let _ = respond_plain(&mut stream, StatusCode::BadRequest, "bad request").await;
                return;
            }
        };
        req.set_peer_addr(Some(peer));
        req.set_local_addr(local);
        let method = req.method();
        let wants_upgrade =
            req.header("upgrade").is_some() && has_token(&req, "connection", "upgrade");
        let mut close = has_token(&req, "connection", "close");

        let mut res = match endpoint(req).await {
            Ok(res) => res,
            Err(error) => {
                log::warn!("{peer}: {method}: {error}");
                let mut res = Response::new(error.status());
                res.set_body(error.status().canonical_reason());
                res
            }
        };
        close |= res
            .header("connection")
            .is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
        let upgrade =
            (wants_upgrade && res.status() == StatusCode::SwitchingProtocols && res.has_upgrade())
                .then(|| res.send_upgrade());

        let mut encoder = Encoder::new(res, method);
        if io::copy(&mut encoder, &mut stream.clone()).await.is_err() {
            return;
        }
        // What the endpoint did not read of the body (in memory, or an upload's rest on the
        // socket, bounded by its Content-Length) is discarded.
        if io::copy(&mut body, &mut io::sink()).await.is_err() {
            return;
        }
        if let Some(upgrade) = upgrade {
            // What the client sent after the upgrade request is the WebSocket's first bytes.
            let connection = if pending.is_empty() {
                Connection::new(stream)
            } else {
                Connection::new(Replay::new(pending, stream))
            };
            upgrade.send(connection).await;
            return;
        }
        if close {
            // Ignored: the connection ends either way. Requests pipelined behind this one
            // are not answered, but must not reset the connection before it is read.
            let _ = linger(&mut stream).await;
            return;
        }
    }
}

/// A request we answer ourselves, with the reason shown to the client.
#[derive(Debug)]
struct HeadError(StatusCode, &'static str);

/// Reads one request: its head, checked by [`inspect_head`], and its body if it is small.
/// Bytes that arrive after it stay in `pending` for the next request. Also returns how many
/// bytes of the body are still on the socket (an upload, streamed; 0 for any other request).
/// `None`: the client closed between requests.
async fn read_request(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    upload_limit: u64,
) -> Result<Option<(Vec<u8>, u64)>, HeadError> {
    let Some(head_len) = read_head(stream, pending).await? else {
        return Ok(None);
    };
    let mut message: Vec<u8> = pending.drain(..head_len).collect();
    let head = inspect_head(&mut message, upload_limit)?;
    if head.expects_continue && stream.write_all(CONTINUE).await.is_err() {
        return Err(HeadError(StatusCode::BadRequest, "connection error"));
    }
    // Bounded by body_limit (inspect_head refuses more).
    let body_len = head.content_length as usize;
    let whole = message.len() + body_len;
    let from_pending = body_len.min(pending.len());
    message.extend(pending.drain(..from_pending));
    if message.starts_with(UPLOAD_PREFIX) {
        // An upload: the endpoint reads the rest from the socket, exactly up to its length,
        // and may refuse it from the head before a byte of it is read.
        let rest = (whole - message.len()) as u64;
        return Ok(Some((message, rest)));
    }
    let mut chunk = [0u8; 1024];
    while message.len() < whole {
        let n = read_some(stream, &mut chunk).await?;
        if n == 0 {
            return Err(HeadError(
                StatusCode::BadRequest,
                "connection closed mid-request",
            ));
        }
        let wanted = n.min(whole - message.len());
        message.extend_from_slice(&chunk[..wanted]);
        pending.extend_from_slice(&chunk[wanted..n]);
    }
    Ok(Some((message, 0)))
}

/// Reads until `pending` holds a whole request head and returns its length; `pending` may
/// hold more (a body, the next request). `None`: the client closed between requests.
async fn read_head(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Result<Option<usize>, HeadError> {
    let mut chunk = [0u8; 1024];
    let mut searched = 0;
    loop {
        if let Some(end) = head_end(pending, searched) {
            if end > MAX_HEAD_BYTES {
                break;
            }
            return Ok(Some(end));
        }
        if pending.len() > MAX_HEAD_BYTES {
            break;
        }
        searched = pending.len().saturating_sub(3);
        let n = read_some(stream, &mut chunk).await?;
        if n == 0 {
            return if pending.is_empty() {
                Ok(None)
            } else {
                Err(HeadError(
                    StatusCode::BadRequest,
                    "connection closed mid-request",
                ))
            };
        }
        pending.extend_from_slice(&chunk[..n]);
    }
    Err(HeadError(
        StatusCode::RequestHeaderFieldsTooLarge,
        "request head too large",
    ))
}

/// One read from the client; 0 when it closed its side.
async fn read_some(stream: &mut TcpStream, chunk: &mut [u8]) -> Result<usize, HeadError> {
    stream
        .read(chunk)
        .await
        .map_err(|_| HeadError(StatusCode::BadRequest, "connection error"))
}

/// The length of the head (through its blank line), searching from `from`.
fn head_end(buffer: &[u8], from: usize) -> Option<usize> {
    buffer[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// What we must know of a head before async-h1 parses it.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    expects_continue: bool,
    /// The body's length (none: 0).
    content_length: u64,
}

/// The largest body the request starting `head` may have.
fn body_limit(head: &[u8], upload_limit: u64) -> u64 {
    if head.starts_with(UPLOAD_PREFIX) {
        upload_limit.max(MAX_BODY_BYTES)
    } else {
        MAX_BODY_BYTES
    }
}

/// Checks the body headers and removes `Expect`, which we answer ourselves.
fn inspect_head(buffer: &mut Vec<u8>, upload_limit: u64) -> Result<Head, HeadError> {
    let max_body = body_limit(buffer, upload_limit);
    let head_len = head_end(buffer, 0).expect("read_head returns whole heads");
    let mut expects_continue = false;
    let mut content_length = None;
    let mut expect_line = None;
    let mut start = match buffer.windows(2).position(|w| w == b"\r\n") {
        Some(first_line_end) => first_line_end + 2,
        None => return Err(HeadError(StatusCode::BadRequest, "malformed request")),
    };
    while start < head_len - 2 {
        let end = start
            + buffer[start..head_len]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("the head ends with CRLF CRLF");
        let line = &buffer[start..end];
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            let value = value.trim();
            if name.eq_ignore_ascii_case(b"expect") {
                expects_continue = value.eq_ignore_ascii_case("100-continue");
                if !expects_continue {
                    return Err(HeadError(
                        StatusCode::ExpectationFailed,
                        "unsupported expectation",
                    ));
                }
                expect_line = Some(start..end + 2);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err(HeadError(
                    StatusCode::LengthRequired,
                    "chunked bodies are not accepted",
                ));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let length = match value.parse::<u64>() {
                    Ok(n) if n <= max_body => n,
                    _ => {
                        return Err(HeadError(
                            StatusCode::PayloadTooLarge,
                            "request body too large",
                        ))
                    }
                };
                // Two lengths could frame the body two ways (request smuggling).
                if content_length.replace(length).is_some() {
                    return Err(HeadError(
                        StatusCode::BadRequest,
                        "more than one Content-Length",
                    ));
                }
            }
        }
        start = end + 2;
    }
    if let Some(line) = expect_line {
        buffer.drain(line);
    }
    Ok(Head {
        expects_continue,
        content_length: content_length.unwrap_or(0),
    })
}

/// Whether a comma-separated header holds `token`, ignoring case.
fn has_token(req: &Request, header: &str, token: &str) -> bool {
    req.header(header).is_some_and(|values| {
        values.iter().any(|v| {
            v.as_str()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Writes a short plain-text answer before closing, then lingers briefly reading what the
/// client still sends: closing with unread input would reset the connection and could destroy
/// the answer before the client reads it.
async fn respond_plain(
    stream: &mut TcpStream,
    status: StatusCode,
    why: &str,
) -> std::io::Result<()> {
    let reply = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{why}\n",
        status as u16,
        status.canonical_reason(),
        why.len() + 1
    );
    stream.write_all(reply.as_bytes()).await?;
    linger(stream).await
}

/// Ends a connection whose last answer has been written: stops sending, then reads and
/// discards what the client still sends (bounded), so the close does not reset the
/// connection and destroy that answer before the client reads it.
async fn linger(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut scratch = [0u8; 1024];
    let mut left = LINGER_BYTES;
    let linger = async {
        while left > 0 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    or(linger, async {
        Timer::after(LINGER_TIME).await;
    })
    .await;
    Ok(())
}

/// One request's bytes, exactly, as async-h1 reads them: it reads ahead through a buffer of its
/// own (`BufReader` in `decode`), which would keep what it took of the next request. Those in
/// memory come first; an upload's body goes on from the socket for `rest` more bytes, and not
/// one byte further. It never writes (it would only for `Expect`, which we take out).
#[derive(Clone)]
struct OneRequest {
    read: Arc<Mutex<(Cursor<Vec<u8>>, u64)>>,
    stream: TcpStream,
}

impl OneRequest {
    fn new(message: Vec<u8>, rest: u64, stream: TcpStream) -> Self {
        OneRequest {
            read: Arc::new(Mutex::new((Cursor::new(message), rest))),
            stream,
        }
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let mut read = this.read.lock().expect("request lock");
        let (cursor, rest) = &mut *read;
        let n = std::io::Read::read(cursor, buf)?;
        if n > 0 || *rest == 0 || buf.is_empty() {
            return Poll::Ready(Ok(n));
        }
        let most = buf.len().min(usize::try_from(*rest).unwrap_or(usize::MAX));
        let n = std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut buf[..most]))?;
        *rest -= n as u64;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::Error::other(
            "a request is answered through the connection",
        )))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The socket after an upgrade, with the bytes the client sent behind the upgrade request
/// put back in front.
#[derive(Clone)]
struct Replay {
    read_ahead: Arc<Mutex<Cursor<Vec<u8>>>>,
    stream: TcpStream,
}

impl Replay {
    fn new(read_ahead: Vec<u8>, stream: TcpStream) -> Self {
        Replay {
            read_ahead: Arc::new(Mutex::new(Cursor::new(read_ahead))),
            stream,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        {
            let mut cursor = self.read_ahead.lock().expect("replay lock");
            let n = std::io::Read::read(&mut *cursor, buf)?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(text: &str) -> (Result<Head, HeadError>, String) {
        let mut buffer = text.as_bytes().to_vec();
        let head = inspect_head(&mut buffer, 1000 * 1024);
        (head, String::from_utf8(buffer).unwrap())
    }

    #[test]
    fn expect_continue_is_taken_out_of_the_head() {
        let (head, rest) = inspect(
            "POST /x HTTP/1.1\r\nHost: a\r\nEXPECT: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(
            head.unwrap(),
            Head {
                expects_continue: true,
                content_length: 3
            }
        );
        assert_eq!(
            rest,
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        );
    }

    #[test]
    fn plain_heads_pass_unchanged() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nX-Expect: 100-continue\r\n\r\n";
        let (head, rest) = inspect(text);
        assert_eq!(
            head.unwrap(),
            Head {
                expects_continue: false,
                content_length: 0
            }
        );
        assert_eq!(rest, text);
    }

    #[test]
    fn unwanted_bodies_are_refused_up_front() {
        let status = |text: &str| inspect(text).0.unwrap_err().0;
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::LengthRequired
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            StatusCode::PayloadTooLarge
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            StatusCode::PayloadTooLarge
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n"),
            StatusCode::ExpectationFailed
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\n"),
            StatusCode::BadRequest
        );
    }

    #[test]
    fn only_uploads_may_have_large_bodies() {
        let status = |text: &str| inspect(text).0.map_err(|e| e.0);
        assert!(
            status("POST /files/lobby?name=a HTTP/1.1\r\nContent-Length: 1024000\r\n\r\n").is_ok()
        );
        assert_eq!(
            status("POST /files/lobby?name=a HTTP/1.1\r\nContent-Length: 1024001\r\n\r\n"),
            Err(StatusCode::PayloadTooLarge)
        );
        assert_eq!(
            status("POST /login HTTP/1.1\r\nContent-Length: 20000\r\n\r\n"),
            Err(StatusCode::PayloadTooLarge)
        );
        assert_eq!(
            status("PUT /files/lobby HTTP/1.1\r\nContent-Length: 20000\r\n\r\n"),
            Err(StatusCode::PayloadTooLarge)
        );
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }
}
