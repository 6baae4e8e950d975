//! Any bytes as a file of the cache's disk tier (a damaged disk, a stranger's file, a torn
//! write): opening the tier and reading the object must not panic, and whatever is read back
//! is exactly what was written before the damage or an error, never other bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_edge::cache::disk::{name_of, Disk};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("palisade-fuzz-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let name = name_of(b"k");
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    let shard = dir.join(&hex[..2]);
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(&hex), data).unwrap();
    let disk = Disk::open(&dir, 1 << 30, 1 << 30).unwrap();
    if disk.contains(&name) {
        if let Ok((meta, body)) = disk.read_whole(&name) {
            assert_eq!(body.len() as u64, meta.body_len);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
