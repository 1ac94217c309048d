//! A per-process cache of program images read from host files, so running
//! the same binary again costs no file read (2 MB of busybox took 0.5-2 ms
//! to read into a fresh buffer). Entries are keyed by the file's identity
//! and change times, so a rebuilt or replaced binary is read again.
//!
//! A file is cached the second time it is run, not the first: a program
//! run once (the `hvsandbox` command's, a cold start) is read straight into
//! guest RAM instead (`prepare::Image::File`), which costs less than
//! reading it into a buffer and copying that; one run again and again is
//! copied from here, which costs less than reading the file each time
//! (measured: ~250 us of CPU per run for busybox's 2 MB).

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Files run once, not cached.
    seen: HashSet<Key>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Files run once and not cached (yet): at most this many are remembered.
const SEEN_MAX: usize = 1024;

/// The contents of `path` when it is worth caching: from the cache when
/// the file is unchanged, or read now when this is the second time it
/// runs. None the first time: the caller reads it straight into guest RAM.
/// `meta` is the file's metadata, already fetched by the caller.
pub(crate) fn cached(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<Option<Arc<[u8]>>> {
    let key = Key::of(meta);
    {
        let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let cache = guard.get_or_insert_with(Cache::default);
        if let Some(img) = cache.entries.get(&key) {
            return Ok(Some(img.clone()));
        }
        if !cache.seen.contains(&key) {
            if cache.seen.len() >= SEEN_MAX {
                cache.seen.clear();
            }
            cache.seen.insert(key);
            return Ok(None);
        }
    }
    let image: Arc<[u8]> = std::fs::read(path)?.into();
    // A file that changed while we read it is used but not cached.
    if image.len() as u64 != key.size || image.len() as u64 > CAPACITY / 4 {
        return Ok(Some(image));
    }
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(Cache::default);
    cache.seen.remove(&key);
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
    Ok(Some(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_cached_when_it_runs_again_and_read_again_when_changed() {
        let dir = std::env::temp_dir().join(format!("hvsb-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("prog");
        std::fs::write(&p, b"first").unwrap();
        let meta = || std::fs::metadata(&p).unwrap();
        assert!(cached(&p, &meta()).unwrap().is_none(), "not cached the first time");
        let a = cached(&p, &meta()).unwrap().expect("cached the second time");
        assert_eq!(&a[..], b"first");
        let again = cached(&p, &meta()).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &again), "an unchanged file comes from the cache");
        std::fs::write(&p, b"second!").unwrap();
        assert!(cached(&p, &meta()).unwrap().is_none(), "a changed file is a new one");
        let b = cached(&p, &meta()).unwrap().unwrap();
        assert_eq!(&b[..], b"second!");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
