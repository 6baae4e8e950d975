//! Between the memory tier and the disk tier ([`super::disk`]): writing stored objects behind
//! (off the request path, bounded), streaming bodies too large for memory to disk as they
//! arrive, loading objects back after a restart or an eviction from memory, and reading disk
//! bodies out block by block.

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;

use super::disk::{self, Disk, Meta};
use super::{unix_now, BodyStore, Cache, Kind, Object, Stored};
use crate::body::BoxError;
use crate::codec::RawHeaders;

/// Disk writes in progress at most; a store beyond it stays in memory only.
pub const MAX_WRITES: usize = 4;
/// Body pieces queued for a spilling write; a disk that falls this far behind loses the object.
const SPILL_QUEUE: usize = 256;

/// What the disk keeps of a stored response (or a vary marker: `vary` set, no body).
fn meta_of(key: &[u8], url: &str, zone: &str, s: Option<&Stored>, vary: Option<&[Box<str>]>) -> Meta {
    let mut headers = bytes::BytesMut::new();
    if let Some(s) = s {
        for (n, v) in s.headers.iter() {
            crate::codec::write_line(&mut headers, n, v);
        }
    }
    Meta {
        key: hex::encode(key),
        url: url.to_string(),
        zone: zone.to_string(),
        vary: vary.map(|v| v.iter().map(|n| n.to_string()).collect()),
        status: s.map_or(200, |s| s.status.as_u16()),
        headers: hex::encode(&headers),
        body_len: s.map_or(0, |s| s.body_len),
        stored_unix: unix_now(),
        initial_age: s.map_or(0, |s| s.initial_age),
        fresh: s.map_or(0, |s| s.fresh),
        stale_while_revalidate: s.map_or(0, |s| s.stale_while_revalidate),
        stale_if_error: s.map_or(0, |s| s.stale_if_error),
        must_revalidate: s.is_some_and(|s| s.must_revalidate),
        etag: s.and_then(|s| s.etag.as_ref()).map(hex::encode),
        last_modified: s.and_then(|s| s.last_modified.as_ref()).map(hex::encode),
        date: s.and_then(|s| s.date),
        tags: s.map(|s| s.tags.iter().map(|t| t.to_string()).collect()).unwrap_or_default(),
    }
}

/// A stored response (or vary marker) from what the disk kept; None if any of it is unreadable.
fn kind_of(m: &Meta, body: BodyStore) -> Option<Kind> {
    if let Some(names) = &m.vary {
        return Some(Kind::Vary(names.iter().map(|n| n.as_str().into()).collect()));
    }
    let bytes = |h: &Option<String>| h.as_ref().and_then(|h| hex::decode(h).ok()).map(Bytes::from);
    let headers = RawHeaders::from_block(&hex::decode(&m.headers).ok()?)?;
    // The time it spent on disk counts in its age.
    let aged = unix_now().saturating_sub(m.stored_unix);
    Some(Kind::Response(Stored {
        status: StatusCode::from_u16(m.status).ok()?,
        headers,
        body,
        body_len: m.body_len,
        initial_age: m.initial_age.saturating_add(aged),
        fresh: m.fresh,
        stale_while_revalidate: m.stale_while_revalidate,
        stale_if_error: m.stale_if_error,
        must_revalidate: m.must_revalidate,
        etag: bytes(&m.etag),
        last_modified: bytes(&m.last_modified),
        date: m.date,
        tags: m.tags.iter().map(|t| t.as_str().into()).collect(),
    }))
}

/// Runs a blocking disk job when a slot is free; else it is skipped (the object stays in
/// memory only): disk writes never queue up behind a slow disk.
fn write_job(cache: &Arc<Cache>, job: impl FnOnce(&Disk) + Send + 'static) {
    let Some(disk) = cache.disk.clone() else { return };
    let Ok(permit) = cache.disk_writes.clone().try_acquire_owned() else { return };
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    rt.spawn_blocking(move || {
        job(&disk);
        drop(permit);
    });
}

/// Writes a response just stored in memory to the disk tier too, off the request path.
pub fn write_behind(cache: &Arc<Cache>, key: &[u8], url: &str, zone: &str, stored: &Stored) {
    let BodyStore::Memory(body) = &stored.body else { return };
    if cache.disk.as_ref().is_none_or(|d| stored.body_len > d.max_object) {
        return;
    }
    let (meta, body, name) = (meta_of(key, url, zone, Some(stored), None), body.clone(), disk::name_of(key));
    write_job(cache, move |disk| {
        let written = disk.writer(name).and_then(|mut w| {
            w.push(&body)?;
            disk.commit(w, &meta)
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cache disk write failed");
        }
    });
}

/// Writes a vary marker to the disk tier, so variants are found after a restart.
pub fn write_vary(cache: &Arc<Cache>, key: &[u8], url: &str, zone: &str, names: &[Box<str>]) {
    let (meta, name) = (meta_of(key, url, zone, None, Some(names)), disk::name_of(key));
    write_job(cache, move |disk| {
        if let Err(e) = disk.writer(name).and_then(|w| disk.commit(w, &meta)) {
            tracing::warn!(error = %e, "cache disk write failed");
        }
    });
}

/// A piece of a body spilling to disk, or its end.
pub enum Spill {
    Data(Bytes),
    End,
}

/// Everything a spilling write needs to store the object once its body is on disk.
pub struct SpillJob {
    pub cache: Arc<Cache>,
    pub zone: Arc<str>,
    pub key: Vec<u8>,
    pub url: String,
    pub hash: u64,
    /// Held until the object is stored: coalesced requests wait for the disk copy.
    pub fill: Option<super::FillGuard>,
    pub stored: Stored,
    pub counts: Option<Arc<crate::metrics::ZoneStats>>,
}

/// Starts writing a body too large for memory to disk, beginning with `so_far`; returns the
/// queue for the rest. None when no write slot is free.
pub fn spill(disk: Arc<Disk>, job: SpillJob, so_far: Vec<Bytes>) -> Option<tokio::sync::mpsc::Sender<Spill>> {
    let permit = job.cache.disk_writes.clone().try_acquire_owned().ok()?;
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Spill>(SPILL_QUEUE);
    rt.spawn_blocking(move || {
        let _permit = permit;
        let Ok(mut w) = disk.writer(disk::name_of(&job.key)) else { return };
        let mut ok = so_far.iter().all(|b| w.push(b).is_ok());
        let mut ended = false;
        while ok {
            match rx.blocking_recv() {
                Some(Spill::Data(b)) => ok = w.len + b.len() as u64 <= disk.max_object && w.push(&b).is_ok(),
                Some(Spill::End) => {
                    ended = true;
                    break;
                }
                // The response failed or the client left: not stored.
                None => ok = false,
            }
        }
        if !(ok && ended) {
            w.abandon();
            return;
        }
        let SpillJob { cache, zone, key, url, hash, fill, mut stored, counts } = job;
        let name = disk::name_of(&key);
        stored.body_len = w.len;
        stored.body = BodyStore::Disk(name);
        let meta = meta_of(&key, &url, &zone, Some(&stored), None);
        if let Err(e) = disk.commit(w, &meta) {
            tracing::warn!(error = %e, "cache disk write failed");
            return;
        }
        if let Some(z) = &counts {
            z.cache.stored.add(1);
            z.cache.stored_bytes.add(stored.body_len);
        }
        let o = cache.object(&key, &url, &zone, Kind::Response(stored), 0);
        cache.put(hash, o);
        drop(fill);
    });
    Some(tx)
}

/// Tells a spilling write that the body is complete (waiting for room in its queue if need be).
pub fn end_spill(tx: tokio::sync::mpsc::Sender<Spill>) {
    if let Err(tokio::sync::mpsc::error::TrySendError::Full(end)) = tx.try_send(Spill::End) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tx.send(end).await;
            });
        }
    }
}

impl Cache {
    /// Loads an object from the disk tier into memory (its body too when it fits in memory);
    /// false when it is not there, unreadable or damaged (then it is gone from disk as well).
    pub async fn load(self: &Arc<Self>, name: disk::Name) -> bool {
        let Some(disk) = self.disk.clone() else { return false };
        let limit = self.settings.max_object_bytes;
        let cache = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut reader = disk.open_read(&name).ok()?;
            let meta = reader.meta.clone();
            let body = if meta.body_len <= limit {
                let mut body = bytes::BytesMut::with_capacity(meta.body_len as usize);
                while let Some(block) = disk.checked(&name, reader.next_block()).ok()? {
                    body.extend_from_slice(&block);
                }
                BodyStore::Memory(body.freeze())
            } else {
                BodyStore::Disk(name)
            };
            let key = hex::decode(&meta.key).ok()?;
            let kind = kind_of(&meta, body)?;
            let zone: Arc<str> = Arc::from(meta.zone.as_str());
            let o = cache.object(&key, &meta.url, &zone, kind, 0);
            cache.put(cache.hash(&key), o);
            Some(())
        })
        .await;
        matches!(loaded, Ok(Some(())))
    }
}

/// A part of a disk-tier body to send: read block by block on a blocking thread, each block
/// checked before any of it is sent. A damaged block ends the response early (the client sees
/// a short body, never wrong bytes) and drops the object.
pub struct DiskRead {
    cache: Arc<Cache>,
    object: Arc<Object>,
    name: disk::Name,
    start: u64,
    pub len: u64,
}

impl DiskRead {
    pub fn new(cache: &Arc<Cache>, object: &Arc<Object>, name: disk::Name, start: u64, len: u64) -> Self {
        Self { cache: cache.clone(), object: object.clone(), name, start, len }
    }

    /// Starts reading; the body's pieces arrive on the returned queue.
    pub fn start(self) -> tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let Some(disk) = self.cache.disk.clone() else {
            let _ = tx.try_send(Err("the disk tier is gone".into()));
            return rx;
        };
        tokio::task::spawn_blocking(move || {
            let failed = |e: disk::DiskError| {
                // Whatever is wrong with the file, the object is not served from it again.
                self.cache.store.remove(&self.cache.hash(&self.object.key));
                let _ = tx.blocking_send(Err(Box::new(e) as BoxError));
            };
            let mut reader = match disk.open_read(&self.name) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            let mut skip = match reader.seek_to(self.start) {
                Ok(s) => s as usize,
                Err(e) => return failed(e),
            };
            let mut left = self.len;
            while left > 0 {
                let block = match disk.checked(&self.name, reader.next_block()) {
                    Ok(Some(b)) => b,
                    Ok(None) => return failed(disk::DiskError::Corrupt("short body")),
                    Err(e) => return failed(e),
                };
                let piece = block.slice(skip.min(block.len())..);
                skip = 0;
                let piece = piece.slice(..(left.min(piece.len() as u64) as usize));
                left -= piece.len() as u64;
                if tx.blocking_send(Ok(piece)).is_err() {
                    return; // the client left
                }
            }
        });
        rx
    }
}
