//! Connections to origins: a pool per origin and per data-plane worker, so a worker only ever
//! touches its own slot (an uncontended lock) and a request never waits on another thread.
//! HTTP/1.1 connections are reused when idle; one HTTP/2 connection per worker is multiplexed.
//!
//! Connecting is a separate step from sending, so a connect failure is known before any byte of
//! the request (or its body) has been used, and a request whose connection turns out to be
//! closed before it was written comes back intact ([`Sent::NotSent`]).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;

/// Read buffer of an origin connection. Measured with bench/proxy.sh at 100 KiB bodies: 32 KiB
/// cost 10-20 % of throughput against 64 KiB; 256 KiB gained little more and tripled RSS.
const READ_BUF: usize = 64 * 1024;

/// Most idle HTTP/1.1 connections kept per origin and worker.
const MAX_IDLE: usize = 512;

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

#[derive(Default)]
struct Slot {
    idle: Vec<(Instant, http1::SendRequest<RequestBody>)>,
    h2: Option<http2::SendRequest<RequestBody>>,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
}

/// The outcome of sending on a connection.
pub enum Sent {
    Response(Response<Incoming>),
    /// The connection closed before the request was written: it can be sent again.
    NotSent(Request<RequestBody>, hyper::Error),
    Failed(hyper::Error),
}

/// How to reach one origin.
#[derive(Debug, Clone, Copy)]
pub struct ConnParams {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2: bool,
}

/// The connection pools of one origin, one slot per worker.
pub struct OriginConns {
    addr: SocketAddr,
    slots: Vec<Mutex<Slot>>,
}

impl std::fmt::Debug for OriginConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginConns").field("addr", &self.addr).finish()
    }
}

/// A connection checked out for one request.
pub struct Conn {
    sender: Sender,
}

impl OriginConns {
    pub fn new(addr: SocketAddr, workers: usize) -> Self {
        Self { addr, slots: (0..workers.max(1)).map(|_| Mutex::new(Slot::default())).collect() }
    }

    fn slot(&self) -> Option<std::sync::MutexGuard<'_, Slot>> {
        let s = self.slots.get(crate::server::worker_index()).or_else(|| self.slots.first())?;
        Some(crate::lock(s))
    }

    /// A ready connection from this worker's pool, or a new one.
    pub async fn checkout(&self, p: ConnParams) -> Result<Conn, ConnectError> {
        if let Some(mut slot) = self.slot() {
            if p.h2 {
                if let Some(s) = slot.h2.as_ref().filter(|s| !s.is_closed()) {
                    return Ok(Conn { sender: Sender::H2(s.clone()) });
                }
                slot.h2 = None;
            } else {
                let now = Instant::now();
                // Newest first; closed or stale connections are dropped; busy ones stay.
                let mut i = slot.idle.len();
                while i > 0 {
                    i -= 1;
                    let Some((since, s)) = slot.idle.get(i) else { continue };
                    if s.is_closed() || now.duration_since(*since) > p.idle_timeout {
                        slot.idle.swap_remove(i);
                        continue;
                    }
                    if s.is_ready() {
                        let (_, s) = slot.idle.swap_remove(i);
                        return Ok(Conn { sender: Sender::H1(s) });
                    }
                }
            }
        }
        let stream = match tokio::time::timeout(p.connect_timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        if p.h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if let Some(mut slot) = self.slot() {
                slot.h2 = Some(sender.clone());
            }
            Ok(Conn { sender: Sender::H2(sender) })
        } else {
            let (sender, conn) = http1::Builder::new()
                .read_buf_exact_size(Some(READ_BUF))
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            Ok(Conn { sender: Sender::H1(sender) })
        }
    }

    /// Sends `req` and returns the connection to the pool as soon as the response head is in
    /// (an HTTP/1.1 connection becomes ready again by itself when its response body ends).
    pub async fn send(&self, conn: Conn, req: Request<RequestBody>) -> Sent {
        match conn.sender {
            Sender::H1(mut s) => {
                let result = s.try_send_request(req).await;
                if !s.is_closed() {
                    if let Some(mut slot) = self.slot() {
                        if slot.idle.len() < MAX_IDLE {
                            slot.idle.push((Instant::now(), s));
                        }
                    }
                }
                match result {
                    Ok(r) => Sent::Response(r),
                    Err(mut e) => match e.take_message() {
                        Some(req) => Sent::NotSent(req, e.into_error()),
                        None => Sent::Failed(e.into_error()),
                    },
                }
            }
            Sender::H2(mut s) => match s.try_send_request(req).await {
                Ok(r) => Sent::Response(r),
                Err(mut e) => match e.take_message() {
                    Some(req) => Sent::NotSent(req, e.into_error()),
                    None => Sent::Failed(e.into_error()),
                },
            },
        }
    }
}
