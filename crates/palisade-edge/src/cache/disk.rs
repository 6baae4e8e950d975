//! The cache's disk tier: every stored object (up to `disk_max_object_bytes`) in a file of its
//! own, kept across restarts, within `disk_bytes` (least recently used out first).
//!
//! A file is the body in blocks of [`BLOCK`] bytes, each followed by its CRC-32 (IEEE), then the object's metadata (JSON), its CRC, and a fixed footer that says where the
//! metadata starts. Bodies are written as they stream in (the metadata last, then an atomic
//! rename), and read block by block, each block checked before any of its bytes is used: a
//! damaged file is found, dropped and deleted, never served. Files are named by the SHA-256 of
//! the object's key, so the same key finds the same file after a restart.
//!
//! Every call here does blocking file I/O: the request path reaches it through
//! `tokio::task::spawn_blocking`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Body bytes per checked block.
pub const BLOCK: u64 = 256 * 1024;
const MAGIC: &[u8; 8] = b"PLSCACH1";
/// Footer: metadata offset (u64), metadata length (u32), metadata CRC (u32), magic.
const FOOTER: u64 = 8 + 4 + 4 + 8;
/// Largest metadata accepted when reading a file (keys, headers, tags).
const MAX_META: u32 = 1024 * 1024;

/// A file's name: the first 16 bytes of the SHA-256 of the object's key.
pub type Name = [u8; 16];

pub fn name_of(key: &[u8]) -> Name {
    let digest = Sha256::digest(key);
    let mut n = [0u8; 16];
    n.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    n
}

/// What is stored about an object beside its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The full key, hex (compared on load: a name collision is a miss, never a wrong object).
    pub key: String,
    pub url: String,
    pub zone: String,
    /// Names of the `Vary` headers, for a vary marker (then there is no body).
    #[serde(default)]
    pub vary: Option<Vec<String>>,
    pub status: u16,
    /// The stored header lines, hex of the `Name: value\r\n` block.
    pub headers: String,
    pub body_len: u64,
    /// Wall-clock seconds when stored; the object's age then was `initial_age`.
    pub stored_unix: u64,
    pub initial_age: u64,
    pub fresh: u64,
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
    pub must_revalidate: bool,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub date: Option<u64>,
    pub tags: Vec<String>,
}

/// What the index keeps of each file: enough to evict and to purge without reading it.
struct Entry {
    size: u64,
    url: Box<str>,
    zone: Box<str>,
    tags: Vec<Box<str>>,
    /// Order of last use (a counter): the smallest is evicted first.
    used: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("not on disk")]
    Missing,
    #[error("damaged: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub struct Disk {
    dir: PathBuf,
    cap: u64,
    pub max_object: u64,
    index: Mutex<HashMap<Name, Entry>>,
    uses: AtomicU64,
    pub used_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub corrupt: AtomicU64,
    pub evictions: AtomicU64,
}

impl Disk {
    /// Opens (creating) the directory and indexes the files in it; damaged ones are deleted.
    pub fn open(dir: &Path, cap: u64, max_object: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let disk = Self {
            dir: dir.to_path_buf(),
            cap,
            max_object,
            index: Mutex::new(HashMap::new()),
            uses: AtomicU64::new(1),
            used_bytes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        };
        let mut found = 0u64;
        for shard in std::fs::read_dir(dir)?.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
            for f in files.flatten() {
                let path = f.path();
                let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| hex::decode(n).ok());
                let name: Option<Name> = name.and_then(|n| n.try_into().ok());
                match name.map(|n| (n, read_meta(&path))) {
                    Some((n, Ok((meta, size)))) => {
                        disk.insert(n, &meta, size);
                        found += 1;
                    }
                    // A temp file of an unfinished write, a damaged file, a stranger: gone.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        tracing::info!(dir = %dir.display(), objects = found, bytes = disk.used_bytes.load(Ordering::Relaxed), "cache disk tier opened");
        disk.evict_to_fit(0);
        Ok(disk)
    }

    fn path(&self, n: &Name) -> PathBuf {
        let h = hex::encode(n);
        self.dir.join(h.get(..2).unwrap_or("00")).join(h)
    }

    pub fn contains(&self, n: &Name) -> bool {
        crate::lock(&self.index).contains_key(n)
    }

    pub fn objects(&self) -> usize {
        crate::lock(&self.index).len()
    }

    fn insert(&self, n: Name, meta: &Meta, size: u64) {
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            size,
            url: meta.url.as_str().into(),
            zone: meta.zone.as_str().into(),
            tags: meta.tags.iter().map(|t| t.as_str().into()).collect(),
            used,
        };
        let old = crate::lock(&self.index).insert(n, entry);
        self.used_bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(old) = old {
            self.used_bytes.fetch_sub(old.size, Ordering::Relaxed);
        }
    }

    /// Forgets an object and deletes its file.
    pub fn remove(&self, n: &Name) {
        if let Some(e) = crate::lock(&self.index).remove(n) {
            self.used_bytes.fetch_sub(e.size, Ordering::Relaxed);
        }
        let _ = std::fs::remove_file(self.path(n));
    }

    /// Removes least recently used objects until `extra` more bytes fit.
    fn evict_to_fit(&self, extra: u64) {
        if self.used_bytes.load(Ordering::Relaxed) + extra <= self.cap {
            return;
        }
        let victims: Vec<Name> = {
            let index = crate::lock(&self.index);
            let mut by_use: Vec<(u64, u64, Name)> = index.iter().map(|(n, e)| (e.used, e.size, *n)).collect();
            by_use.sort_unstable();
            // Down to 90 % of the cap: one pass makes room for a while.
            let target = (self.cap / 10 * 9).saturating_sub(extra);
            let mut total = self.used_bytes.load(Ordering::Relaxed);
            by_use
                .into_iter()
                .take_while(|(_, size, _)| {
                    let over = total > target;
                    total = total.saturating_sub(*size);
                    over
                })
                .map(|(_, _, n)| n)
                .collect()
        };
        self.evictions.fetch_add(victims.len() as u64, Ordering::Relaxed);
        for n in victims {
            self.remove(&n);
        }
    }

    /// Forgets every object `matches` picks (given url, zone, tags) at once, and returns their
    /// files, for the caller to delete off the request path ([`delete_files`]): a purge is
    /// kept across restarts because the files go too.
    pub fn purge(&self, matches: impl Fn(&str, &str, &[Box<str>]) -> bool) -> Vec<PathBuf> {
        let mut index = crate::lock(&self.index);
        let victims: Vec<Name> =
            index.iter().filter(|(_, e)| matches(&e.url, &e.zone, &e.tags)).map(|(n, _)| *n).collect();
        for n in &victims {
            if let Some(e) = index.remove(n) {
                self.used_bytes.fetch_sub(e.size, Ordering::Relaxed);
            }
        }
        victims.iter().map(|n| self.path(n)).collect()
    }

    /// The metadata and whole body of an object, every block checked. A damaged file is
    /// deleted and counted.
    pub fn read_whole(&self, n: &Name) -> Result<(Meta, Bytes), DiskError> {
        let mut reader = self.open_read(n)?;
        let mut body = BytesMut::with_capacity(usize::try_from(reader.meta.body_len).unwrap_or(0));
        while let Some(block) = self.checked(n, reader.next_block())? {
            body.extend_from_slice(&block);
        }
        Ok((reader.meta, body.freeze()))
    }

    /// A reader of an object's body from byte `start`, with its metadata checked.
    pub fn open_read(&self, n: &Name) -> Result<BlockReader, DiskError> {
        if !self.contains(n) {
            return Err(DiskError::Missing);
        }
        let path = self.path(n);
        let (meta, _) = self.checked(n, read_meta(&path).map(Some))?.ok_or(DiskError::Missing)?;
        if let Some(e) = crate::lock(&self.index).get_mut(n) {
            e.used = self.uses.fetch_add(1, Ordering::Relaxed);
        }
        let file = File::open(&path)?;
        Ok(BlockReader { file, meta, next: 0 })
    }

    /// Passes a read's result through; a damaged file is dropped on the way.
    pub fn checked<T>(&self, n: &Name, r: Result<T, DiskError>) -> Result<T, DiskError> {
        match &r {
            Err(DiskError::Corrupt(why)) => {
                tracing::warn!(file = %self.path(n).display(), why, "damaged cache file dropped");
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                self.remove(n);
            }
            // Deleted behind the index's back (a purge's deletion racing a new write): forgotten.
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => self.remove(n),
            _ => {}
        }
        r
    }

    /// A writer for a new object; nothing is visible until [`Writer::finish`].
    pub fn writer(&self, n: Name) -> io::Result<Writer> {
        let final_path = self.path(&n);
        if let Some(parent) = final_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = final_path.with_extension(format!("tmp{}", self.uses.fetch_add(1, Ordering::Relaxed)));
        let file = File::create(&tmp)?;
        Ok(Writer {
            name: n,
            file: io::BufWriter::with_capacity(64 * 1024, file),
            tmp,
            final_path,
            block: BytesMut::new(),
            len: 0,
        })
    }

    /// Makes a finished write visible (renamed into place, indexed), within the cap.
    pub fn commit(&self, w: Writer, meta: &Meta) -> io::Result<()> {
        let (n, size) = w.finish(meta)?;
        self.evict_to_fit(size);
        self.insert(n, meta, size);
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Deletes files (of a purge) on a blocking thread, and returns when they are gone: a purge is
/// answered only then, so that a purge answered stays done across a crash.
pub async fn delete_files(files: Vec<PathBuf>) {
    if !files.is_empty() {
        let _ = tokio::task::spawn_blocking(move || delete_now(files)).await;
    }
}

/// Deletes files here and now (blocking).
pub fn delete_now(files: Vec<PathBuf>) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// Reads the footer and metadata of a file; its size too.
fn read_meta(path: &Path) -> Result<(Meta, u64), DiskError> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if size < FOOTER {
        return Err(DiskError::Corrupt("shorter than its footer"));
    }
    f.seek(SeekFrom::Start(size - FOOTER))?;
    let mut footer = [0u8; FOOTER as usize];
    f.read_exact(&mut footer)?;
    let u64_at = |i: usize| footer.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
    let u32_at = |i: usize| footer.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).unwrap_or(0);
    if footer.get(16..24) != Some(&MAGIC[..]) {
        return Err(DiskError::Corrupt("no footer"));
    }
    let (offset, len, crc) = (u64_at(0), u32_at(8), u32_at(12));
    if len > MAX_META || offset.checked_add(u64::from(len)) != Some(size - FOOTER) {
        return Err(DiskError::Corrupt("metadata out of place"));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut raw = vec![0u8; len as usize];
    f.read_exact(&mut raw)?;
    if crc32fast::hash(&raw) != crc {
        return Err(DiskError::Corrupt("metadata checksum"));
    }
    let meta: Meta = serde_json::from_slice(&raw).map_err(|_| DiskError::Corrupt("metadata unreadable"))?;
    let blocks = meta.body_len.div_ceil(BLOCK);
    if meta.body_len + blocks * 4 != offset {
        return Err(DiskError::Corrupt("body length"));
    }
    Ok((meta, size))
}

/// Reads an object's body block by block, each checked against its CRC before it is returned.
pub struct BlockReader {
    file: File,
    pub meta: Meta,
    next: u64,
}

impl BlockReader {
    /// Moves to the block holding body byte `offset`; returns how far into it `offset` is.
    pub fn seek_to(&mut self, offset: u64) -> Result<u64, DiskError> {
        self.next = offset / BLOCK;
        self.file.seek(SeekFrom::Start(self.next * (BLOCK + 4)))?;
        Ok(offset % BLOCK)
    }

    /// The next block, checked; None at the end.
    pub fn next_block(&mut self) -> Result<Option<Bytes>, DiskError> {
        let start = self.next * BLOCK;
        if start >= self.meta.body_len {
            return Ok(None);
        }
        let len = (self.meta.body_len - start).min(BLOCK) as usize;
        let mut buf = vec![0u8; len + 4];
        self.file.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => DiskError::Corrupt("short block"),
            _ => DiskError::Io(e),
        })?;
        let crc = buf.get(len..).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).unwrap_or(0);
        buf.truncate(len);
        if crc32fast::hash(&buf) != crc {
            return Err(DiskError::Corrupt("block checksum"));
        }
        self.next += 1;
        Ok(Some(Bytes::from(buf)))
    }
}

/// A file being written: body blocks as they come, then the metadata.
pub struct Writer {
    name: Name,
    file: io::BufWriter<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    block: BytesMut,
    pub len: u64,
}

impl Writer {
    pub fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = (BLOCK as usize).saturating_sub(self.block.len());
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.extend_from_slice(now);
            data = rest;
            if self.block.len() == BLOCK as usize {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        self.file.write_all(&self.block)?;
        self.file.write_all(&crc32fast::hash(&self.block).to_le_bytes())?;
        self.block.clear();
        Ok(())
    }

    fn finish(mut self, meta: &Meta) -> io::Result<(Name, u64)> {
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        let raw = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let offset = self.len + self.len.div_ceil(BLOCK) * 4;
        self.file.write_all(&raw)?;
        self.file.write_all(&offset.to_le_bytes())?;
        self.file.write_all(&u32::try_from(raw.len()).unwrap_or(u32::MAX).to_le_bytes())?;
        self.file.write_all(&crc32fast::hash(&raw).to_le_bytes())?;
        self.file.write_all(MAGIC)?;
        self.file.flush()?;
        let size = offset + raw.len() as u64 + FOOTER;
        std::fs::rename(&self.tmp, &self.final_path)?;
        Ok((self.name, size))
    }

    /// Abandons the write (its temp file is deleted).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, body_len: u64) -> Meta {
        Meta {
            key: hex::encode(key),
            url: format!("site.test/{key}"),
            zone: "site".into(),
            vary: None,
            status: 200,
            headers: String::new(),
            body_len,
            stored_unix: 0,
            initial_age: 0,
            fresh: 60,
            stale_while_revalidate: 0,
            stale_if_error: 0,
            must_revalidate: false,
            etag: None,
            last_modified: None,
            date: None,
            tags: vec!["t".into()],
        }
    }

    #[test]
    fn objects_round_trip_survive_reopening_and_damage_is_dropped() {
        let dir = std::env::temp_dir().join(format!("palisade-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let disk = Disk::open(&dir, 64 << 20, 16 << 20).unwrap();
        let body: Vec<u8> = (0..(BLOCK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let n = name_of(b"big");
        let mut w = disk.writer(n).unwrap();
        for piece in body.chunks(10_000) {
            w.push(piece).unwrap();
        }
        disk.commit(w, &meta("big", body.len() as u64)).unwrap();
        let (m, read) = disk.read_whole(&n).unwrap();
        assert_eq!((m.url.as_str(), &read[..]), ("site.test/big", &body[..]));
        // A range starting in the second block.
        let mut r = disk.open_read(&n).unwrap();
        assert_eq!(r.seek_to(BLOCK + 5).unwrap(), 5);
        assert_eq!(r.next_block().unwrap().unwrap()[5], body[(BLOCK + 5) as usize]);
        drop(disk);

        // Reopened: found again. Then one flipped byte in the third block.
        let disk = Disk::open(&dir, 64 << 20, 16 << 20).unwrap();
        assert!(disk.contains(&n));
        let path = disk.path(&n);
        let mut raw = std::fs::read(&path).unwrap();
        raw[(2 * (BLOCK + 4) + 10) as usize] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(disk.read_whole(&n), Err(DiskError::Corrupt("block checksum"))));
        assert!(!disk.contains(&n) && !path.exists(), "dropped and deleted");
        assert_eq!(disk.corrupt.load(Ordering::Relaxed), 1);

        // A damaged footer is found when the tier opens.
        let n2 = name_of(b"small");
        let mut w = disk.writer(n2).unwrap();
        w.push(b"hello").unwrap();
        disk.commit(w, &meta("small", 5)).unwrap();
        let p2 = disk.path(&n2);
        let mut raw = std::fs::read(&p2).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&p2, &raw).unwrap();
        drop(disk);
        let disk = Disk::open(&dir, 64 << 20, 16 << 20).unwrap();
        assert!(!disk.contains(&n2) && !p2.exists());

        // Purges and the cap.
        for i in 0..10 {
            let n = name_of(format!("k{i}").as_bytes());
            let mut w = disk.writer(n).unwrap();
            w.push(&[0u8; 1000]).unwrap();
            disk.commit(w, &meta(&format!("k{i}"), 1000)).unwrap();
        }
        let files = disk.purge(|url, _, _| url == "site.test/k3");
        assert_eq!(files.len(), 1);
        delete_now(files.clone());
        assert!(!files[0].exists());
        assert_eq!(disk.objects(), 9);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_least_recently_used_go_first_when_full() {
        let dir = std::env::temp_dir().join(format!("palisade-disk-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let disk = Disk::open(&dir, 1 << 20, 1 << 20).unwrap();
        let put = |k: &str| {
            let n = name_of(k.as_bytes());
            let mut w = disk.writer(n).unwrap();
            w.push(&vec![7u8; 300 * 1024]).unwrap();
            disk.commit(w, &meta(k, 300 * 1024)).unwrap();
            n
        };
        let a = put("a");
        let b = put("b");
        let _ = disk.read_whole(&a).unwrap(); // a is used again: b is now the oldest
        let c = put("c");
        let d = put("d");
        assert!(disk.used_bytes.load(Ordering::Relaxed) <= 1 << 20);
        assert!(!disk.contains(&b), "the least recently used went first");
        assert!(disk.contains(&d) && disk.contains(&c));
        assert!(disk.evictions.load(Ordering::Relaxed) >= 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
