//! A session's socket, read ahead in large pieces once its pusher is admitted.
//!
//! rustls asks its transport for at most one TLS record (about 16 KiB) a read. Straight from
//! the socket that is a `recvfrom` per record (141 000 for 2 GiB), and each read that drains
//! the socket makes TCP send a window update, which wakes the pusher's sender. Read ahead,
//! one syscall takes whatever TCP holds, up to [`SESSION_READ_AHEAD`], and rustls's reads are
//! copies from memory.
//!
//! Before admission the socket is read only as rustls asks (no read-ahead): a stranger's
//! handshake bytes are never taken beyond what rustls would take itself.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of an admitted session's socket is read at once.
pub const SESSION_READ_AHEAD: usize = 256 * 1024;

pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read and not yet taken are `buf[start..end]`; `buf.len()` is the read-ahead
    /// (0: reads go straight to `inner`).
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    /// Reads go straight to `inner` until [`ReadAhead::read_ahead`].
    pub fn new(inner: S) -> Self {
        ReadAhead { inner, buf: Vec::new(), start: 0, end: 0 }
    }

    /// From now on, reads take up to `bytes` from `inner` at once.
    pub fn read_ahead(&mut self, bytes: usize) {
        if bytes > self.buf.len() {
            self.buf.resize(bytes, 0);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.start == this.end {
            // Nothing held: a read as large as the read-ahead (or no read-ahead) goes straight.
            if out.remaining() >= this.buf.len() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut ahead = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
            (this.start, this.end) = (0, ahead.filled().len());
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::AsyncReadExt;

    /// A source that hands out its pieces one per read (each cut to the reader's room), and
    /// records how much room each read offered.
    struct Pieces {
        pieces: VecDeque<Vec<u8>>,
        offered: Vec<usize>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.offered.push(out.remaining());
            if let Some(mut piece) = this.pieces.pop_front() {
                let n = piece.len().min(out.remaining());
                out.put_slice(&piece[..n]);
                if n < piece.len() {
                    this.pieces.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn source(pieces: &[&[u8]]) -> Pieces {
        Pieces { pieces: pieces.iter().map(|p| p.to_vec()).collect(), offered: vec![] }
    }

    #[tokio::test]
    async fn without_read_ahead_each_read_is_the_readers_own() {
        let mut r = ReadAhead::new(source(&[b"hello world"]));
        let mut out = [0u8; 5];
        assert_eq!(r.read(&mut out).await.unwrap(), 5);
        assert_eq!(&out, b"hello");
        assert_eq!(r.inner.offered, vec![5]);
    }

    #[tokio::test]
    async fn read_ahead_takes_what_the_source_holds_in_one_read_and_hands_it_out_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut r = ReadAhead::new(source(&[&data[..3000], &data[3000..]]));
        let mut out = [0u8; 7];
        assert_eq!(r.read(&mut out).await.unwrap(), 7);
        // Before read-ahead: only what was asked for.
        r.read_ahead(1024);
        let mut got = out.to_vec();
        loop {
            let n = r.read(&mut out).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, data);
        // 7 straight, then the rest in reads of the read-ahead's size, and the end.
        assert_eq!(r.inner.offered[0], 7);
        assert!(r.inner.offered[1..].iter().all(|&room| room == 1024), "{:?}", r.inner.offered);
        assert_eq!(r.inner.offered.len(), 1 + 5 + 1);
    }

    #[tokio::test]
    async fn a_read_as_large_as_the_read_ahead_goes_straight_once_nothing_is_held() {
        let mut r = ReadAhead::new(source(&[b"abcdef", b"ghijkl"]));
        r.read_ahead(4);
        let mut small = [0u8; 2];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"ab");
        // "cd" is held: it comes first, not bypassed.
        let mut large = [0u8; 16];
        assert_eq!(r.read(&mut large).await.unwrap(), 2);
        assert_eq!(&large[..2], b"cd");
        // Nothing held now: straight into the reader's room.
        assert_eq!(r.read(&mut large).await.unwrap(), 2);
        assert_eq!(&large[..2], b"ef");
        assert_eq!(r.inner.offered, vec![4, 16]);
    }
}
