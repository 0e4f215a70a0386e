//! One HTTP/1.1 connection, request after request (keep-alive), parsed and encoded by async-h1
//! and answered by an endpoint (the tide app).
//!
//! We read each request head ourselves before async-h1 sees it. That lets us
//! - time out idle and slow clients with smol timers: async-h1's own header timeout uses an
//!   async-io 1.x timer, which starts a second reactor thread;
//! - answer `Expect: 100-continue` ourselves: async-h1 spawns a task on async-global-executor for
//!   it, which starts one executor thread per CPU, at any remote client's request;
//! - refuse bodies we never want (chunked, or larger than a form) before reading them.

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
/// Largest request body we read: our forms are small. Uploads have their own limit.
const MAX_BODY_BYTES: u64 = 16 * 1024;
/// Requests whose bodies may be as large as the upload limit (`--max-file-bytes`).
const UPLOAD_PREFIX: &[u8] = b"POST /files/";
/// How long a kept-alive connection may wait for its next request, and a head may take.
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
    loop {
        let head = or(read_head(&mut stream), async {
            shutdown.wait().await;
            Ok(None)
        });
        let timeout = async {
            Timer::after(HEAD_TIMEOUT).await;
            Err(HeadError(
                StatusCode::RequestTimeout,
                "request head took too long",
            ))
        };
        let mut buffer = match or(head, timeout).await {
            Ok(Some(buffer)) => buffer,
            Ok(None) => return,
            Err(HeadError(status, why)) => {
                log::debug!("{peer}: {status} {why}");
                // Ignored: we are closing this connection either way.
                let _ = respond_plain(&mut stream, status, why).await;
                return;
            }
        };
        let head = match inspect_head(&mut buffer, upload_limit) {
            Ok(head) => head,
            Err(HeadError(status, why)) => {
                log::debug!("{peer}: {status} {why}");
                let _ = respond_plain(&mut stream, status, why).await;
                return;
            }
        };
        if head.expects_continue && stream.write_all(CONTINUE).await.is_err() {
            return;
        }

        let io = Replay::new(buffer, stream.clone());
        let (mut req, mut body) = match decode(io.clone()).await {
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
        // What the endpoint did not read of the body (bounded by `body_limit`) is discarded.
        if io::copy(&mut body, &mut io::sink()).await.is_err() {
            return;
        }
        if let Some(upgrade) = upgrade {
            let connection = if io.is_drained() {
                Connection::new(stream)
            } else {
                Connection::new(io)
            };
            upgrade.send(connection).await;
            return;
        }
        if close {
            return;
        }
    }
}

/// A request we answer ourselves, with the reason shown to the client.
#[derive(Debug)]
struct HeadError(StatusCode, &'static str);

/// Reads until the end of a request head; the result may hold the first bytes of a body too.
/// `None`: the client closed between requests.
async fn read_head(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, HeadError> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError(StatusCode::BadRequest, "connection error"))?;
        if n == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(HeadError(
                    StatusCode::BadRequest,
                    "connection closed mid-request",
                ))
            };
        }
        let searched = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buffer, searched) {
            if end > MAX_HEAD_BYTES {
                break;
            }
            return Ok(Some(buffer));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            break;
        }
    }
    Err(HeadError(
        StatusCode::RequestHeaderFieldsTooLarge,
        "request head too large",
    ))
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
    let head_len = head_end(buffer, 0).expect("read_head returns whole heads");
    let mut expects_continue = false;
    let mut expect_line = None;
    let max_body = body_limit(buffer, upload_limit);
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
                let too_big = value.parse::<u64>().map_or(true, |n| n > max_body);
                if too_big {
                    return Err(HeadError(
                        StatusCode::PayloadTooLarge,
                        "request body too large",
                    ));
                }
            }
        }
        start = end + 2;
    }
    if let Some(line) = expect_line {
        buffer.drain(line);
    }
    Ok(Head { expects_continue })
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

/// The socket, with the bytes we read while looking for the head put back in front.
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

    /// Whether every read-ahead byte has been handed out.
    fn is_drained(&self) -> bool {
        let cursor = self.read_ahead.lock().expect("replay lock");
        cursor.position() as usize >= cursor.get_ref().len()
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
                expects_continue: true
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
                expects_continue: false
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
