//! A socket wrapper that gathers small writes and sends them in one `write` at flush time, with
//! a buffer that is given back once it has been sent.
//!
//! tungstenite can gather frames itself, but its buffer keeps the size of the largest burst it
//! ever held for the connection's whole life: a client that once got a history replay kept
//! several kilobytes, idle or not. With tungstenite set to pass every frame straight on, its own
//! buffer only ever holds one frame, and the gathering happens here instead: up to
//! [`GATHER_BYTES`] wait for the flush (the writer flushes once per batch), and afterwards
//! only a small buffer is kept for the next one.

use smol::io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Bytes gathered before they are written without waiting for a flush.
pub const GATHER_BYTES: usize = 4 * 1024;
/// A buffer larger than this after a flush is let go; a smaller one is kept for the next batch,
/// so a frame at a time (a chat at its usual pace) does not allocate for every message.
const KEEP_BYTES: usize = 512;

/// A stream whose writes are gathered until a flush.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    gathered: Vec<u8>,
}

impl<S> Coalesce<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            gathered: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything gathered.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.gathered.drain(..n);
        }
        if self.gathered.capacity() > KEEP_BYTES {
            self.gathered = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.gathered.len() + data.len() > GATHER_BYTES {
            ready!(this.poll_send(cx))?;
        }
        if data.len() >= GATHER_BYTES {
            // Nothing is gathered now (sent just above): large writes go straight through.
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.gathered.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::AsyncWriteExt;

    /// Records each `write` it gets; takes at most `room` bytes before it must be drained
    /// (then it answers `Pending`, as a full socket does).
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        room: Option<usize>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let take = match self.room {
                Some(0) => {
                    // Full: ask to be polled again (a test drains it by giving it room).
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(room) => room.min(data.len()),
                None => data.len(),
            };
            if let Some(room) = self.room.as_mut() {
                *room -= take;
            }
            self.writes.push(data[..take].to_vec());
            Poll::Ready(Ok(take))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn small_writes_go_out_together_at_the_flush() {
        smol::block_on(async {
            let mut out = Coalesce::new(Socket::default());
            for frame in [&b"one"[..], b"two", b"three"] {
                out.write_all(frame).await.unwrap();
            }
            assert!(out.inner.writes.is_empty(), "written before the flush");
            out.flush().await.unwrap();
            assert_eq!(out.inner.writes, [b"onetwothree".to_vec()]);
        });
    }

    #[test]
    fn a_full_gather_is_written_without_a_flush_and_order_holds() {
        smol::block_on(async {
            let mut out = Coalesce::new(Socket::default());
            let frame = vec![7u8; 1000];
            for _ in 0..5 {
                out.write_all(&frame).await.unwrap();
            }
            // The fifth would pass the limit, so the first four went out together.
            assert_eq!(out.inner.writes.len(), 1);
            assert_eq!(out.inner.writes[0].len(), 4000);
            let big = vec![9u8; GATHER_BYTES];
            out.write_all(&big).await.unwrap();
            out.flush().await.unwrap();
            let sent: Vec<u8> = out.inner.writes.concat();
            assert_eq!(sent.len(), 5000 + GATHER_BYTES);
            assert!(sent[..5000].iter().all(|&b| b == 7) && sent[5000..].iter().all(|&b| b == 9));
        });
    }

    #[test]
    fn a_partly_full_socket_gets_the_rest_later_and_a_big_buffer_is_let_go() {
        smol::block_on(async {
            let mut out = Coalesce::new(Socket {
                room: Some(1500),
                ..Socket::default()
            });
            out.write_all(&[1u8; 3000]).await.unwrap();
            let mut flush = out.flush();
            assert!(smol::future::poll_once(&mut flush).await.is_none());
            drop(flush);
            out.inner.room = Some(usize::MAX);
            out.flush().await.unwrap();
            assert_eq!(out.inner.writes.concat(), vec![1u8; 3000]);
            assert_eq!(out.gathered.capacity(), 0);
        });
    }
}
