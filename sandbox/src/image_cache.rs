//! A per-process cache of program images read from host files, so running
//! the same binary again costs no file read (2 MB of busybox took 0.5-2 ms
//! to read into a fresh buffer). Entries are keyed by the file's identity
//! and change times, so a rebuilt or replaced binary is read again.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Total bytes of images kept; the oldest entries go first.
const CAPACITY: u64 = 256 << 20;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Key {
    fn of(meta: &std::fs::Metadata) -> Key {
        Key {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Arc<[u8]>>,
    order: VecDeque<Key>,
    bytes: u64,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The contents of `path`, from the cache when the file is unchanged.
/// `meta` is the file's metadata, already fetched by the caller.
pub(crate) fn read(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<Arc<[u8]>> {
    let key = Key::of(meta);
    {
        let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(img) = guard.get_or_insert_with(Cache::default).entries.get(&key) {
            return Ok(img.clone());
        }
    }
    let image: Arc<[u8]> = std::fs::read(path)?.into();
    // A file that changed while we read it is used but not cached.
    if image.len() as u64 != key.size || image.len() as u64 > CAPACITY / 4 {
        return Ok(image);
    }
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(Cache::default);
    if cache.entries.insert(key, image.clone()).is_none() {
        cache.order.push_back(key);
        cache.bytes += key.size;
    }
    while cache.bytes > CAPACITY {
        let Some(old) = cache.order.pop_front() else { break };
        if cache.entries.remove(&old).is_some() {
            cache.bytes -= old.size;
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("hvsb-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("prog");
        std::fs::write(&p, b"first").unwrap();
        let a = read(&p, &std::fs::metadata(&p).unwrap()).unwrap();
        assert_eq!(&a[..], b"first");
        let again = read(&p, &std::fs::metadata(&p).unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "an unchanged file comes from the cache");
        std::fs::write(&p, b"second!").unwrap();
        let b = read(&p, &std::fs::metadata(&p).unwrap()).unwrap();
        assert_eq!(&b[..], b"second!");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
