//! The few parts of RFC 6455 the generator speaks on plain `std` sockets: the opening
//! handshake (both sides), reading frames and writing them. With these, one thread can drive a
//! thousand receivers through one poller instead of a task and a reactor wake-up per socket,
//! so the generator costs less per message than the server it measures.
//!
//! Only what smolchat and the floor server send is handled: single frames, and fragmented
//! messages frame by frame (a reader that needs only the start of a message reads the first).

use async_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::time::Duration;

/// Text frame opcode.
pub const TEXT: u8 = 0x1;
/// Close frame opcode.
pub const CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const PING: u8 = 0x9;
/// Pong frame opcode.
pub const PONG: u8 = 0xA;

/// Longest an opening handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest HTTP head either side accepts.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// One frame found by [`parse`]: its opcode, whether it ends its message, where its (unmasked)
/// payload lies in the buffer, and how many bytes of the buffer it took. The server sends long
/// frames as fragments (a text frame, then continuations, opcode 0); a reader that only needs a
/// message's start (its type, its send time) reads the first and counts messages by `fin`.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's opcode (0: the continuation of a fragmented message).
    pub opcode: u8,
    /// The last frame of its message.
    pub fin: bool,
    /// The payload's range in the parsed buffer.
    pub payload: Range<usize>,
    /// Bytes the whole frame took.
    pub len: usize,
}

/// Parses the frame at the start of `buf`, unmasking its payload in place; `Ok(None)` while it
/// is incomplete.
pub fn parse(buf: &mut [u8]) -> io::Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (mut len, mut at) = (u64::from(buf[1] & 0x7F), 2);
    let extended = match len {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    if extended > 0 {
        let Some(bytes) = buf.get(2..2 + extended) else {
            return Ok(None);
        };
        len = bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b));
        at += extended;
    }
    let mask = if masked {
        let Some(mask) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        at += 4;
        Some(mask)
    } else {
        None
    };
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let Some(payload) = buf.get_mut(at..at + len) else {
        return Ok(None);
    };
    if let Some(mask) = mask {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    Ok(Some(Frame {
        opcode,
        fin,
        payload: at..at + len,
        len: at + len,
    }))
}

/// Appends one unfragmented frame to `out`; clients must pass a `mask`, servers none.
pub fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// Opens a WebSocket to `path` on `addr` and checks the server's answer. Returns the blocking
/// stream and whatever the server sent after its head (the first frames, perhaps).
pub fn connect(addr: SocketAddr, path: &str) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let key = generate_key();
    stream.write_all(request(addr, path, &key).as_bytes())?;
    let (head, rest) = read_head(&mut stream)?;
    check_answer(&head, &key)?;
    Ok((stream, rest))
}

/// [`connect`] without blocking the thread, so that many handshakes can be in flight at once.
/// The stream it returns is non-blocking and no longer registered with smol's reactor.
pub async fn connect_async(addr: SocketAddr, path: &str) -> io::Result<(TcpStream, Vec<u8>)> {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let stream = smol::Async::<TcpStream>::connect(addr).await?;
    stream.get_ref().set_nodelay(true)?;
    let key = generate_key();
    (&stream)
        .write_all(request(addr, path, &key).as_bytes())
        .await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let (head, rest) = loop {
        if let Some(parts) = split_head(&mut buf)? {
            break parts;
        }
        match (&stream).read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    check_answer(&head, &key)?;
    Ok((stream.into_inner()?, rest))
}

/// A client's opening handshake request.
fn request(addr: SocketAddr, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Fails unless `head` is a server's `101` answer to the handshake sent with `key`.
fn check_answer(head: &str, key: &str) -> io::Result<()> {
    if !head.starts_with("HTTP/1.1 101") {
        let status = head.lines().next().unwrap_or_default();
        return Err(io::Error::other(format!("upgrade refused: {status}")));
    }
    let accept = header(head, "sec-websocket-accept");
    if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(io::Error::other("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// Answers a client's opening handshake on `stream`; returns the request's path.
pub fn accept(stream: &mut TcpStream) -> io::Result<String> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let (head, rest) = read_head(stream)?;
    if !rest.is_empty() {
        return Err(io::Error::other("client spoke before the handshake ended"));
    }
    let path = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| io::Error::other("no request line"))?
        .to_owned();
    let key = header(&head, "sec-websocket-key")
        .ok_or_else(|| io::Error::other("no Sec-WebSocket-Key"))?;
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )?;
    Ok(path)
}

/// Reads an HTTP head; returns it and the bytes read past it.
fn read_head(stream: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(parts) = split_head(&mut buf)? {
            return Ok(parts);
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Splits a complete HTTP head off `buf`: the head and the bytes after it; `Ok(None)` while
/// the head is incomplete, an error once it is too long.
fn split_head(buf: &mut Vec<u8>) -> io::Result<Option<(String, Vec<u8>)>> {
    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let rest = buf.split_off(end + 4);
        let head = String::from_utf8(std::mem::take(buf)).map_err(io::Error::other)?;
        return Ok(Some((head, rest)));
    }
    if buf.len() > MAX_HEAD_BYTES {
        return Err(io::Error::other("HTTP head too long"));
    }
    Ok(None)
}

/// The value of header `name` (lower case) in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_masked_and_not_at_every_length_class() {
        for len in [0, 5, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut buf = Vec::new();
                frame(&mut buf, TEXT, &payload, mask);
                let whole = buf.len();
                buf.extend_from_slice(b"next");
                // Every proper prefix is incomplete, not an error.
                for cut in [1, whole / 2, whole - 1] {
                    assert_eq!(parse(&mut buf[..cut].to_vec()).unwrap(), None);
                }
                let parsed = parse(&mut buf).unwrap().unwrap();
                assert_eq!((parsed.opcode, parsed.len), (TEXT, whole));
                assert_eq!(&buf[parsed.payload], &payload[..]);
            }
        }
    }

    #[test]
    fn fragments_are_read_one_by_one() {
        let mut buf = [0x01, 0x01, b'x', 0x80, 0x01, b'y'];
        let first = parse(&mut buf).unwrap().unwrap();
        assert_eq!((first.opcode, first.fin, first.len), (TEXT, false, 3));
        let rest = parse(&mut buf[3..]).unwrap().unwrap();
        assert_eq!(
            (rest.opcode, rest.fin, &buf[3..][rest.payload]),
            (0, true, &b"y"[..])
        );
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = "HTTP/1.1 101 Switching\r\nSec-WebSocket-Accept: abc=\r\n\r\n";
        assert_eq!(header(head, "sec-websocket-accept"), Some("abc="));
        assert_eq!(header(head, "upgrade"), None);
    }
}
