//! Large response bodies moved from the origin socket to the client socket inside the kernel:
//! splice(2) from the origin socket into a pipe, and from the pipe into the client socket. The
//! bytes are never copied into this process and out again, which at 100 KiB responses was a
//! quarter of the node's CPU time (the kernel's `_copy_to_iter` and `_copy_from_iter`). HAProxy
//! does the same for large transfers; nginx copies.
//!
//! Used only where nothing needs to see the bytes: an HTTP/1.1 origin body of known length
//! (`Content-Length`), going to a plain TCP client connection, once what was read with the head
//! has been written. Chunked bodies, TLS clients and HTTP/2 go through the ordinary path.
//!
//! A pipe goes back to its worker's spare list only when empty; one that still holds bytes
//! (the client or the origin failed mid-body) is closed, so no byte can leak into another
//! response.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A body is spliced when at least this much of it is still on the origin socket after the
/// head. Below it, a copy costs less than the extra system calls.
pub const MIN_BYTES: u64 = 32 * 1024;

/// Spare pipes a worker keeps (two descriptors each).
const SPARE_PIPES: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A non-blocking pipe and what it holds.
pub struct Pipe {
    fds: Option<(OwnedFd, OwnedFd)>,
    held: usize,
}

impl Pipe {
    /// An empty pipe: a spare one of this worker, or a new one.
    pub fn take() -> io::Result<Pipe> {
        if let Some(p) = SPARE.try_with(|s| s.try_borrow_mut().ok().and_then(|mut v| v.pop())).ok().flatten() {
            return Ok(p);
        }
        let (rd, wr) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { fds: Some((rd, wr)), held: 0 })
    }

    /// Bytes in the pipe.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves up to `max` bytes that `src` has received into the pipe, which must be empty (then
    /// "would block" can only mean that `src` has nothing: a pipe that is part full may refuse
    /// bytes for want of slots, and that must not be mistaken for an idle socket).
    /// Ready(Ok(0)): `src` was closed.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>, src: &TcpStream, max: u64) -> Poll<io::Result<usize>> {
        let Some((_, wr)) = &self.fds else { return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())) };
        if self.held > 0 {
            return Poll::Ready(Err(io::Error::other("pipe filled before it was drained")));
        }
        let len = usize::try_from(max).unwrap_or(usize::MAX);
        loop {
            ready!(src.poll_read_ready(cx))?;
            let moved = src.try_io(Interest::READABLE, || {
                splice(src, None, wr, None, len, SpliceFlags::NONBLOCK | SpliceFlags::MOVE).map_err(io::Error::from)
            });
            match moved {
                Ok(n) => {
                    self.held += n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves bytes from the pipe to `dst`.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>, dst: &TcpStream) -> Poll<io::Result<usize>> {
        let Some((rd, _)) = &self.fds else { return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())) };
        if self.held == 0 {
            return Poll::Ready(Ok(0));
        }
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        loop {
            ready!(dst.poll_write_ready(cx))?;
            let moved = dst
                .try_io(Interest::WRITABLE, || splice(rd, None, dst, None, self.held, flags).map_err(io::Error::from));
            match moved {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.held = self.held.saturating_sub(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.held != 0 {
            return;
        }
        let Some(fds) = self.fds.take() else { return };
        let _ = SPARE.try_with(|s| {
            if let Ok(mut v) = s.try_borrow_mut() {
                if v.len() < SPARE_PIPES {
                    v.push(Pipe { fds: Some(fds), held: 0 });
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn moves_bytes_between_sockets_and_reuses_only_empty_pipes() {
        let (mut origin_w, origin_r) = pair().await;
        let (client_w, mut client_r) = pair().await;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move { origin_w.write_all(&sent).await.unwrap() });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 300_000];
            client_r.read_exact(&mut got).await.unwrap();
            got
        });
        let mut pipe = Pipe::take().unwrap();
        let mut left = data.len() as u64;
        while left > 0 {
            let n = std::future::poll_fn(|cx| pipe.poll_fill(cx, &origin_r, left)).await.unwrap();
            assert!(n > 0);
            left -= n as u64;
            // A pipe that holds bytes refuses to be filled again.
            assert!(std::future::poll_fn(|cx| pipe.poll_fill(cx, &origin_r, left)).await.is_err());
            while pipe.held() > 0 {
                std::future::poll_fn(|cx| pipe.poll_drain(cx, &client_w)).await.unwrap();
            }
        }
        writer.await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
        drop(pipe);
        assert_eq!(SPARE.with(|s| s.borrow().len()), 1, "an empty pipe is kept for reuse");

        // A pipe dropped while holding bytes is closed, never reused.
        let (mut w, r) = pair().await;
        w.write_all(b"leftover").await.unwrap();
        let mut pipe = Pipe::take().unwrap();
        assert_eq!(SPARE.with(|s| s.borrow().len()), 0);
        let n = std::future::poll_fn(|cx| pipe.poll_fill(cx, &r, 100)).await.unwrap();
        assert_eq!(n, 8);
        drop(pipe);
        assert_eq!(SPARE.with(|s| s.borrow().len()), 0, "a pipe with bytes in it is not reused");
    }

    #[tokio::test]
    async fn a_closed_source_reads_as_zero() {
        let (w, r) = pair().await;
        drop(w);
        let mut pipe = Pipe::take().unwrap();
        assert_eq!(std::future::poll_fn(|cx| pipe.poll_fill(cx, &r, 1000)).await.unwrap(), 0);
    }
}
