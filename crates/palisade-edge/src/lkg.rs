//! Last-known-good: the active config's bytes on disk, written atomically (temp file, fsync,
//! rename, fsync of the directory) with a SHA-256 checksum, so a node can boot and serve without
//! anything above it. A file whose checksum does not match is refused, never half-used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use palisade_config::content_hash;

const MAGIC: &str = "palisade-last-known-good v1";

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("last-known-good.toml")
}

/// Writes `bytes` as the last-known-good document.
pub fn write(path: &Path, bytes: &[u8], version: u64) -> std::io::Result<()> {
    let mut file = format!("# {MAGIC}\n# sha256 {}\n# version {version}\n", content_hash(bytes)).into_bytes();
    file.extend_from_slice(bytes);
    write_atomic(path, &file)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, never a
/// mix: a temp file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads and verifies a last-known-good file; returns the document bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rest: &[u8] = &data;
    let mut header = Vec::new();
    for _ in 0..3 {
        let nl = rest.iter().position(|b| *b == b'\n').ok_or("truncated header")?;
        let (line, tail) = rest.split_at(nl);
        header.push(String::from_utf8_lossy(line).to_string());
        rest = tail.get(1..).unwrap_or(&[]);
    }
    if header.first().map(String::as_str) != Some(&format!("# {MAGIC}")) {
        return Err(format!("{} is not a last-known-good file", path.display()));
    }
    let want = header.get(1).and_then(|l| l.strip_prefix("# sha256 ")).ok_or("missing checksum line")?;
    let got = content_hash(rest);
    if want != got {
        return Err(format!(
            "{}: checksum mismatch (file says {want}, content is {got}); refusing a damaged file",
            path.display()
        ));
    }
    Ok(rest.to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_corruption_is_refused() {
        let dir = std::env::temp_dir().join(format!("palisade-lkg-test-{}", std::process::id()));
        let path = super::path_in(&dir);
        super::write(&path, b"version = 7\n", 7).unwrap();
        assert_eq!(super::read(&path).unwrap(), b"version = 7\n");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] = b'8';
        std::fs::write(&path, bytes).unwrap();
        assert!(super::read(&path).unwrap_err().contains("checksum mismatch"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
