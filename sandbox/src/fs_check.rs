//! Contract checks of the host file service against arbitrary guest
//! requests: the property tests at the end (`cargo test`), and the
//! cargo-fuzz targets in `fuzz/`, which compile this file and `fs.rs` on
//! their own (so this file names only `pub(crate)` items of `fs.rs`).
//! One file of ~1,000 lines for that reason: the model, the request
//! decoder and the checks are one contract, compiled by path.
//!
//! Requests reach the service as `fs_hypercall` (sandbox.rs) passes them
//! on: guest-chosen handles, names, offsets and lengths. The checks assert
//! the contract: no panic, and every result is either `Ok` within its
//! bounds and equal to what a model of the host tree says, or exactly the
//! errno the model expects. Decoders of what the host writes for the
//! guest (stat, dirents, manifest) are checked by round trips and on
//! arbitrary bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use hvsandbox_core::abi;
use hvsandbox_core::abi::fs::{Stat, DIRENT_SIZE, FIRST_HANDLE, NAME_MAX, PATH_MAX};

use super::{
    check_guest_path, check_name, decode_dirents, decode_manifest, decode_stat, encode_manifest, errno_result,
    pack_dirents, path_is_within, stat_bytes, Errno, FileCollector, HostFs, Listed, ManifestRecord, STAT_SIZE,
};

// ---------------------------------------------------------------------
// Reading arbitrary bytes (the fuzzers' input) as requests
// ---------------------------------------------------------------------

/// A cursor over fuzzer bytes; past the end every read is zero.
pub(crate) struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
    pub(crate) fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    pub(crate) fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        let b = self.bytes(8);
        v[..b.len()].copy_from_slice(&b);
        u64::from_le_bytes(v)
    }
    /// A number, most often one near a boundary.
    pub(crate) fn value(&mut self) -> u64 {
        let tag = self.u8();
        let k = u64::from(tag >> 4);
        match tag & 15 {
            0 => k,
            1 => u64::from(self.u8()),
            2 => u64::MAX - k,
            3 => i64::MAX as u64 - k,
            4 => (1 << 63) + k,
            5 => abi::HCALL_MAX_LEN - 8 + k,
            6 => 4096 - 8 + k,
            7 => u64::from(u32::MAX) - k,
            8 => (u64::from(self.u8()) << 8) | u64::from(self.u8()),
            _ => self.u64(),
        }
    }
    /// A stat record (its reserved field zero).
    pub(crate) fn stat(&mut self) -> Stat {
        Stat {
            mode: self.u64() as u32,
            nlink: self.u64() as u32,
            size: self.u64(),
            ino: self.u64(),
            mtime_sec: self.u64() as i64,
            mtime_nsec: self.u64() as u32,
            _pad: 0,
        }
    }
}

// ---------------------------------------------------------------------
// The host tree and its model
// ---------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Dir(BTreeMap<Vec<u8>, usize>),
    File(Arc<[u8]>),
    Link(Vec<u8>),
    Fifo,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 8) as u8).wrapping_add(seed)).collect()
}

/// A host directory tree made for the checks (removed on drop), and its
/// model: node 0 is the root.
pub(crate) struct Tree {
    pub dir: PathBuf,
    pub nodes: Vec<Kind>,
}

impl Tree {
    /// root/: files of 0, 12, 4096 and HCALL_MAX_LEN + 4097 bytes, a
    /// non-UTF-8 name, a NAME_MAX name, nested and 40-entry directories,
    /// an empty one, symlinks (absolute, `..`, dangling, 4095-byte target)
    /// and a FIFO (never shared).
    pub(crate) fn create() -> Tree {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hvsandbox-fscheck-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut tree = Tree { dir, nodes: vec![Kind::Dir(BTreeMap::new())] };
        let file = |b: &[u8]| Kind::File(Arc::from(b));
        tree.add(0, b"empty", file(b""));
        tree.add(0, b"small.txt", file(b"hello, world"));
        tree.add(0, b"page", file(&pattern(4096, 1)));
        tree.add(0, b"big", file(&pattern(abi::HCALL_MAX_LEN as usize + 4097, 2)));
        tree.add(0, b"\xff\xfe-latin1", file(b"x"));
        tree.add(0, &[b'n'; NAME_MAX], file(b"long name"));
        let d = tree.add(0, b"dir", Kind::Dir(BTreeMap::new()));
        let nested = tree.add(d, b"nested", Kind::Dir(BTreeMap::new()));
        tree.add(nested, b"deep.txt", file(b"deep"));
        let many = tree.add(d, b"many", Kind::Dir(BTreeMap::new()));
        for i in 0..40 {
            let name = format!("entry-{i:02}");
            tree.add(many, name.as_bytes(), file(name.as_bytes()));
        }
        tree.add(0, b"emptydir", Kind::Dir(BTreeMap::new()));
        tree.add(0, b"link-abs", Kind::Link(b"/etc/passwd".to_vec()));
        tree.add(0, b"link-up", Kind::Link(b"../../..".to_vec()));
        tree.add(0, b"link-dangling", Kind::Link(b"missing/target".to_vec()));
        tree.add(0, b"link-long", Kind::Link(b"x/".repeat(PATH_MAX / 2)[..PATH_MAX - 1].to_vec()));
        tree.add(0, b"fifo", Kind::Fifo);
        tree.materialise(0, tree.dir.clone());
        tree
    }

    /// One tree per process (the checks only read it). A static is never
    /// dropped, so this first removes the trees of processes that are gone.
    pub(crate) fn shared() -> &'static Tree {
        static TREE: std::sync::OnceLock<Tree> = std::sync::OnceLock::new();
        TREE.get_or_init(|| {
            for e in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix("hvsandbox-fscheck-").and_then(|r| r.split('-').next()) else {
                    continue;
                };
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            Tree::create()
        })
    }

    fn add(&mut self, parent: usize, name: &[u8], kind: Kind) -> usize {
        self.nodes.push(kind);
        let id = self.nodes.len() - 1;
        if let Kind::Dir(children) = &mut self.nodes[parent] {
            children.insert(name.to_vec(), id);
        }
        id
    }

    fn materialise(&self, node: usize, path: PathBuf) {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        match &self.nodes[node] {
            Kind::Dir(children) => {
                std::fs::create_dir_all(&path).expect("create test tree directory");
                for (name, &child) in children {
                    self.materialise(child, path.join(std::ffi::OsString::from_vec(name.clone())));
                }
            }
            Kind::File(data) => std::fs::write(&path, data).expect("create test tree file"),
            Kind::Link(target) => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path).expect("create test tree link")
            }
            Kind::Fifo => {
                let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in a test path");
                // SAFETY: `c` is a NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
            }
        }
    }

    /// What FS_READDIR lists of a directory: sorted, without the FIFO.
    fn listing(&self, dir: usize) -> Vec<(&[u8], usize)> {
        match &self.nodes[dir] {
            Kind::Dir(children) => children
                .iter()
                .filter(|(_, &c)| !matches!(self.nodes[c], Kind::Fifo))
                .map(|(n, &c)| (n.as_slice(), c))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------
// Requests and the model of one run's service
// ---------------------------------------------------------------------

/// A handle as the guest gives it: one the run has seen, or any number.
#[derive(Clone, Debug)]
pub(crate) enum HandleArg {
    Known(u8),
    Raw(u64),
}

/// A name to look up: a child of the directory, or any bytes.
#[derive(Clone, Debug)]
pub(crate) enum NameArg {
    Child(u8),
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Lookup { dir: HandleArg, name: NameArg },
    Read { file: HandleArg, offset: u64, len: usize },
    Readdir { dir: HandleArg, start: u64, max_len: u64 },
    Readlink { link: HandleArg },
    Stat { handle: HandleArg },
    AddBlob { len: usize, mode: u32 },
    FileOut { path: Vec<u8>, offset: u64, len: usize },
}

/// Largest read buffer the checks pass (a little over the service's cap).
pub(crate) const READ_MAX: usize = abi::HCALL_MAX_LEN as usize + 4096;
/// Largest FILE_OUT chunk the checks send.
pub(crate) const CHUNK_MAX: usize = 1 << 16;

/// Candidate collect roots; a run takes those in a bit mask.
pub(crate) const ROOTS: [&str; 5] = ["/", "/out", "/out/sub", "/a b", "/single.txt"];
/// Path components FILE_OUT paths are made of.
pub(crate) const COMPONENTS: [&[u8]; 10] =
    [b"out", b"sub", b"a b", b"single.txt", b"f", b".", b"..", b"", b"\xff", &[b'c'; NAME_MAX + 1]];

fn handle_arg(inp: &mut Input<'_>) -> HandleArg {
    if inp.u8() & 3 == 0 {
        HandleArg::Raw(inp.value())
    } else {
        HandleArg::Known(inp.u8())
    }
}

/// A guest path made of [`COMPONENTS`] (or raw bytes).
pub(crate) fn build_path(parts: &[u8], leading_slash: bool) -> Vec<u8> {
    let mut p = Vec::new();
    for &c in parts {
        if leading_slash || !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(COMPONENTS[c as usize % COMPONENTS.len()]);
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}

impl Op {
    /// One request from fuzzer bytes.
    pub(crate) fn decode(inp: &mut Input<'_>) -> Op {
        let kind = inp.u8();
        Op::decode_kind(kind, inp)
    }

    /// One request of kind `kind % 7` from fuzzer bytes (6: FILE_OUT).
    pub(crate) fn decode_kind(kind: u8, inp: &mut Input<'_>) -> Op {
        match kind % 7 {
            0 => {
                let dir = handle_arg(inp);
                let name = match inp.u8() {
                    t if t & 1 == 0 => NameArg::Child(t >> 1),
                    t => {
                        let n = inp.u8() as usize + if t & 2 != 0 { 100 } else { 0 };
                        NameArg::Raw(inp.bytes(n))
                    }
                };
                Op::Lookup { dir, name }
            }
            1 => Op::Read { file: handle_arg(inp), offset: inp.value(), len: inp.value() as usize % (READ_MAX + 1) },
            2 => Op::Readdir { dir: handle_arg(inp), start: inp.value(), max_len: inp.value() },
            3 => Op::Readlink { link: handle_arg(inp) },
            4 => Op::Stat { handle: handle_arg(inp) },
            5 => Op::AddBlob { len: inp.u8() as usize * 3, mode: inp.u64() as u32 },
            _ => {
                let path = match inp.u8() {
                    t if t & 1 == 0 => {
                        let n = (t >> 1) as usize % 6;
                        build_path(&inp.bytes(n), t & 2 == 0)
                    }
                    t => inp.bytes((t >> 1) as usize),
                };
                Op::FileOut { path, offset: inp.value(), len: inp.value() as usize % (CHUNK_MAX + 1) }
            }
        }
    }
}

/// The caps of one run.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_handles: usize,
    pub max_open: usize,
    pub max_bytes: u64,
    pub max_files: usize,
    /// Bit mask over [`ROOTS`].
    pub roots: u8,
}

impl Limits {
    pub(crate) fn decode(inp: &mut Input<'_>) -> Limits {
        Limits {
            max_handles: 1 + inp.u8() as usize % 64,
            max_open: 1 + inp.u8() as usize % 4,
            max_bytes: inp.value() % (4 << 20),
            max_files: inp.u8() as usize % 8,
            roots: inp.u8(),
        }
    }
}

/// What a handle refers to, in the model.
#[derive(Clone, Debug)]
enum Target {
    Host(usize),
    Blob(Arc<[u8]>, u32),
}

/// One run's service, with its model alongside.
pub(crate) struct World<'t> {
    tree: &'t Tree,
    fs: HostFs,
    max_handles: usize,
    /// Handle `FIRST_HANDLE + i` is `handles[i]`.
    handles: Vec<Target>,
    lookups: HashMap<(u64, Vec<u8>), u64>,
    collector: FileCollector,
    roots: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
    max_bytes: u64,
    max_files: usize,
    truncated: bool,
}

fn is_dir(kind: &Kind) -> bool {
    matches!(kind, Kind::Dir(_))
}

impl<'t> World<'t> {
    pub(crate) fn new(tree: &'t Tree, limits: &Limits) -> World<'t> {
        let mut fs = HostFs::with_limits(limits.max_handles, limits.max_open);
        let roots: Vec<String> = ROOTS
            .iter()
            .enumerate()
            .filter(|(i, _)| limits.roots & (1 << i) != 0)
            .map(|(_, r)| r.to_string())
            .collect();
        let root = fs.add_mount(&tree.dir, false).expect("mount the test tree");
        assert_eq!(root, FIRST_HANDLE);
        World {
            tree,
            fs,
            max_handles: limits.max_handles,
            handles: vec![Target::Host(0)],
            lookups: HashMap::new(),
            collector: FileCollector::new(roots.clone(), limits.max_bytes, limits.max_files),
            roots,
            files: BTreeMap::new(),
            max_bytes: limits.max_bytes,
            max_files: limits.max_files,
            truncated: false,
        }
    }

    fn handle(&self, arg: &HandleArg) -> u64 {
        match *arg {
            HandleArg::Known(i) => FIRST_HANDLE + (i as usize % self.handles.len()) as u64,
            HandleArg::Raw(h) => h,
        }
    }

    /// The model's target of a handle; `EBADF` for one never handed out.
    fn target(&self, h: u64) -> Result<&Target, Errno> {
        let i = h.checked_sub(FIRST_HANDLE).ok_or(libc::EBADF)?;
        self.handles.get(usize::try_from(i).map_err(|_| libc::EBADF)?).ok_or(libc::EBADF)
    }

    fn host_dir(&self, h: u64) -> Result<usize, Errno> {
        match self.target(h)? {
            Target::Host(n) if is_dir(&self.tree.nodes[*n]) => Ok(*n),
            _ => Err(libc::ENOTDIR),
        }
    }

    /// Sends one request to the service and checks the result against the
    /// model.
    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::Lookup { dir, name } => {
                let dir = self.handle(dir);
                let name = match name {
                    NameArg::Raw(n) => n.clone(),
                    NameArg::Child(i) => match self.host_dir(dir) {
                        Ok(d) => match &self.tree.nodes[d] {
                            Kind::Dir(c) if !c.is_empty() => c.keys().nth(*i as usize % c.len()).cloned().unwrap(),
                            _ => b"missing".to_vec(),
                        },
                        Err(_) => b"small.txt".to_vec(),
                    },
                };
                let got = self.fs.lookup(dir, &name);
                self.check_lookup(dir, &name, got);
            }
            Op::Read { file, offset, len } => {
                let h = self.handle(file);
                let mut buf = vec![0xa5u8; *len];
                let got = self.fs.read(h, *offset, &mut buf);
                self.check_read(h, *offset, &buf, got);
            }
            Op::Readdir { dir, start, max_len } => {
                let h = self.handle(dir);
                let max_len = usize::try_from(*max_len).unwrap_or(usize::MAX);
                let got = self.fs.readdir(h, *start, max_len);
                self.check_readdir(h, *start, max_len, got);
            }
            Op::Readlink { link } => {
                let h = self.handle(link);
                let expected = match self.target(h) {
                    Err(e) => Err(e),
                    Ok(Target::Host(n)) => match &self.tree.nodes[*n] {
                        Kind::Link(t) => Ok(t.clone()),
                        _ => Err(libc::EINVAL),
                    },
                    Ok(Target::Blob(..)) => Err(libc::EINVAL),
                };
                let got = self.fs.readlink(h);
                assert_eq!(got, expected, "readlink({h})");
            }
            Op::Stat { handle } => {
                let h = self.handle(handle);
                let got = self.fs.stat(h);
                self.check_stat(h, got);
            }
            Op::AddBlob { len, mode } => {
                let data: Arc<[u8]> = Arc::from(pattern(*len, 3).as_slice());
                let got = self.fs.add_blob(data.clone(), *mode);
                if self.handles.len() >= self.max_handles {
                    assert_eq!(got, Err(libc::EMFILE));
                } else {
                    assert_eq!(got, Ok(FIRST_HANDLE + self.handles.len() as u64));
                    self.handles.push(Target::Blob(data, mode & 0o7777));
                }
            }
            Op::FileOut { path, offset, len } => {
                let data = pattern(*len, *offset as u8);
                let expected = self.expect_file_out(path, *offset, &data);
                let got = self.collector.file_out(path, *offset, &data);
                assert_eq!(got, expected, "file_out({:?}, {offset}, {len})", String::from_utf8_lossy(path));
            }
        }
    }

    fn check_lookup(&mut self, dir: u64, name: &[u8], got: Result<(u64, Stat), Errno>) {
        let what = format!("lookup({dir}, {:?})", String::from_utf8_lossy(name));
        // The name is checked first; the host never opens a bad one.
        let expected_name = if name.is_empty() {
            Err(libc::ENOENT)
        } else if name == b"."
            || name == b".."
            || (name.len() <= NAME_MAX && (name.contains(&b'/') || name.contains(&0)))
        {
            Err(libc::EINVAL)
        } else if name.len() > NAME_MAX {
            Err(libc::ENAMETOOLONG)
        } else {
            Ok(())
        };
        assert_eq!(check_name(name), expected_name, "{what}");
        let expected = expected_name.and_then(|()| {
            let d = self.host_dir(dir)?;
            let Kind::Dir(children) = &self.tree.nodes[d] else { unreachable!() };
            if let Some(&h) = self.lookups.get(&(dir, name.to_vec())) {
                let Target::Host(child) = self.handles[(h - FIRST_HANDLE) as usize] else { unreachable!() };
                return Ok((h, child));
            }
            // A full table refuses any new name before it is opened.
            if self.handles.len() >= self.max_handles {
                return Err(libc::EMFILE);
            }
            let child = *children.get(name).ok_or(libc::ENOENT)?;
            if matches!(self.tree.nodes[child], Kind::Fifo) {
                return Err(libc::EACCES);
            }
            Ok((FIRST_HANDLE + self.handles.len() as u64, child))
        });
        match (got, expected) {
            (Ok((h, st)), Ok((eh, child))) => {
                assert_eq!(h, eh, "{what}: handle");
                self.check_host_stat(child, &st, &what);
                if self.lookups.insert((dir, name.to_vec()), h).is_none() {
                    self.handles.push(Target::Host(child));
                }
                assert_eq!(self.fs.stat(h), Ok(st), "{what}: stat of the new handle");
            }
            (Err(e), Err(ee)) => assert_eq!(e, ee, "{what}"),
            (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
        }
    }

    fn check_host_stat(&self, node: usize, st: &Stat, what: &str) {
        assert_eq!(st.mode & 0o6000, 0, "{what}: set-id bits reach the guest");
        let (fmt, size) = match &self.tree.nodes[node] {
            Kind::Dir(_) => (libc::S_IFDIR, None),
            Kind::File(d) => (libc::S_IFREG, Some(d.len() as u64)),
            Kind::Link(t) => (libc::S_IFLNK, Some(t.len() as u64)),
            Kind::Fifo => panic!("{what}: a FIFO was shared"),
        };
        assert_eq!(st.mode & libc::S_IFMT, fmt, "{what}: type");
        if let Some(size) = size {
            assert_eq!(st.size, size, "{what}: size");
        }
        assert_eq!(decode_stat(&stat_bytes(st)), *st, "{what}: stat record");
    }

    fn check_stat(&self, h: u64, got: Result<Stat, Errno>) {
        let what = format!("stat({h})");
        match (self.target(h), got) {
            (Err(e), got) => assert_eq!(got, Err(e), "{what}"),
            (Ok(Target::Host(n)), Ok(st)) => self.check_host_stat(*n, &st, &what),
            (Ok(Target::Blob(data, mode)), Ok(st)) => {
                assert_eq!((st.mode, st.size), (libc::S_IFREG | mode, data.len() as u64), "{what}")
            }
            (Ok(t), Err(e)) => panic!("{what}: {t:?} failed with {e}"),
        }
    }

    fn check_read(&self, h: u64, offset: u64, buf: &[u8], got: Result<usize, Errno>) {
        let what = format!("read({h}, {offset}, {})", buf.len());
        let want = buf.len().min(abi::HCALL_MAX_LEN as usize);
        let data = match self.target(h) {
            Err(e) => return assert_eq!(got, Err(e), "{what}"),
            Ok(Target::Blob(data, _)) => data.clone(),
            Ok(Target::Host(n)) => match &self.tree.nodes[*n] {
                Kind::File(data) => {
                    // pread refuses an offset (or an end) past i64::MAX.
                    let end = offset.checked_add(want as u64);
                    if i64::try_from(offset).is_err() {
                        return assert_eq!(got, Err(libc::EINVAL), "{what}");
                    }
                    if want > 0 && end.is_none_or(|e| e > i64::MAX as u64) && got.is_err() {
                        return assert_eq!(got, Err(libc::EINVAL), "{what}");
                    }
                    data.clone()
                }
                Kind::Dir(_) => return assert_eq!(got, Err(libc::EISDIR), "{what}"),
                _ => return assert_eq!(got, Err(libc::EINVAL), "{what}"),
            },
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = (data.len() - start).min(want);
        assert_eq!(got, Ok(n), "{what}");
        assert!(buf[..n] == data[start..start + n], "{what}: wrong bytes");
        assert!(buf[n..].iter().all(|&b| b == 0xa5), "{what}: wrote past the bytes it returned");
    }

    fn check_readdir(&self, h: u64, start: u64, max_len: usize, got: Result<Vec<u8>, Errno>) {
        let what = format!("readdir({h}, {start}, {max_len})");
        let d = match self.host_dir(h) {
            Ok(d) => d,
            Err(e) => return assert_eq!(got, Err(e), "{what}"),
        };
        let listing = self.tree.listing(d);
        let rest = listing.get(usize::try_from(start).unwrap_or(usize::MAX)..).unwrap_or_default();
        let mut expected = Vec::new();
        let mut used = 0;
        for &(name, child) in rest {
            if used + DIRENT_SIZE + name.len() > max_len {
                break;
            }
            used += DIRENT_SIZE + name.len();
            expected.push((name.to_vec(), child));
        }
        if expected.is_empty() && !rest.is_empty() {
            return assert_eq!(got, Err(libc::EINVAL), "{what}: no room for one record");
        }
        let bytes = got.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(bytes.len(), used, "{what}: length");
        let records = decode_dirents(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(records.len(), expected.len(), "{what}");
        for (r, (name, child)) in records.iter().zip(&expected) {
            assert_eq!(&r.name, name, "{what}");
            let dtype = match self.tree.nodes[*child] {
                Kind::Dir(_) => libc::DT_DIR,
                Kind::File(_) => libc::DT_REG,
                _ => libc::DT_LNK,
            };
            assert!(r.dtype == dtype || r.dtype == libc::DT_UNKNOWN, "{what}: type of {name:?}");
        }
    }

    /// What FILE_OUT must answer, from its documented rules, and the
    /// collection it must leave (applied to the model on success).
    fn expect_file_out(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), Errno> {
        let path = std::str::from_utf8(path).map_err(|_| libc::EILSEQ)?;
        if check_guest_path(path).is_err() || path == "/" {
            return Err(libc::EINVAL);
        }
        if !self.roots.iter().any(|r| path_is_within(path, r)) {
            return Err(libc::EPERM);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(libc::EFBIG)?;
        let old = self.files.get(path).map(|f| f.len() as u64);
        if old.is_none() && self.files.len() >= self.max_files {
            self.truncated = true;
            return Err(libc::ENOSPC);
        }
        // The collection's size after the write: contents plus paths
        // (in u128: no sum of guest numbers can wrap).
        let total: u128 = self.files.iter().map(|(p, f)| (p.len() + f.len()) as u128).sum();
        let after = total - u128::from(old.unwrap_or(0))
            + u128::from(end.max(old.unwrap_or(0)))
            + if old.is_none() { path.len() as u128 } else { 0 };
        if after > u128::from(self.max_bytes) {
            self.truncated = true;
            return Err(libc::ENOSPC);
        }
        let f = self.files.entry(path.to_string()).or_default();
        if (f.len() as u64) < end {
            f.resize(end as usize, 0);
        }
        f[offset as usize..end as usize].copy_from_slice(data);
        Ok(())
    }

    /// Ends the run: the collection must be what the model holds, within
    /// the caps and the roots.
    pub(crate) fn finish(mut self) {
        let (files, truncated) = self.collector.take();
        assert_eq!(truncated, self.truncated, "files_truncated");
        assert!(files.len() <= self.max_files);
        let total: u64 = files.iter().map(|(p, f)| (p.len() + f.len()) as u64).sum();
        assert!(total <= self.max_bytes, "collected {total} bytes, cap {}", self.max_bytes);
        for p in files.keys() {
            assert!(check_guest_path(p).is_ok() && self.roots.iter().any(|r| path_is_within(p, r)), "{p}");
        }
        assert!(files == self.files, "collected files differ from the model");
    }
}

/// Runs fuzzer bytes as one run's requests: caps, then requests (only
/// FILE_OUT ones with `file_out_only`).
pub(crate) fn run_requests(tree: &Tree, data: &[u8], file_out_only: bool) {
    let mut inp = Input(data);
    let limits = Limits::decode(&mut inp);
    let mut world = World::new(tree, &limits);
    while !inp.is_empty() {
        let op = if file_out_only { Op::decode_kind(6, &mut inp) } else { Op::decode(&mut inp) };
        world.apply(&op);
    }
    world.finish();
}

// ---------------------------------------------------------------------
// Pure encoders and decoders
// ---------------------------------------------------------------------

/// Manifest records with valid paths survive encode -> decode, and the
/// encoding is 8-byte aligned.
pub(crate) fn check_manifest_roundtrip(records: &[ManifestRecord]) {
    let bytes = encode_manifest(records).expect("valid records encode");
    assert_eq!(bytes.len() % 8, 0);
    assert_eq!(decode_manifest(&bytes).as_deref(), Ok(records));
}

/// Any bytes: decoding does not panic, and what it accepts is canonical.
pub(crate) fn check_manifest_bytes(bytes: &[u8]) {
    if let Ok(records) = decode_manifest(bytes) {
        assert_eq!(encode_manifest(&records).as_deref(), Ok(bytes));
        for r in &records {
            assert!(check_guest_path(&r.path).is_ok());
        }
    }
}

/// Manifest records from fuzzer bytes (kinds and paths mostly valid).
pub(crate) fn manifest_records(inp: &mut Input<'_>) -> Vec<ManifestRecord> {
    let mut records = Vec::new();
    while !inp.is_empty() {
        let parts = inp.bytes(inp.0.first().map_or(0, |&n| n as usize % 5));
        let path = String::from_utf8_lossy(&build_path(&parts, true)).into_owned();
        if check_guest_path(&path).is_err() {
            continue;
        }
        let kind = abi::fs::ENTRY_MOUNT + u32::from(inp.u8()) % 5;
        let root = (kind == abi::fs::ENTRY_MOUNT).then(|| inp.stat());
        records.push(ManifestRecord {
            kind,
            mode: inp.u64() as u32,
            handle: inp.value(),
            size: inp.value(),
            path,
            root,
        });
    }
    records
}

/// READDIR records: packing pages whole records within the length, and
/// decoding gives back the entries; decoding any bytes does not panic and
/// what it accepts packs back to the same bytes.
pub(crate) fn check_dirents(listing: &[Listed], start: u64, max_len: usize, arbitrary: &[u8]) {
    let rest = listing.get(usize::try_from(start).unwrap_or(usize::MAX)..).unwrap_or_default();
    match pack_dirents(listing, start, max_len) {
        Ok(bytes) => {
            assert!(bytes.len() <= max_len);
            let got = decode_dirents(&bytes).expect("packed records decode");
            assert_eq!(got[..], rest[..got.len()]);
            // Whole records only: the next would not have fitted.
            if let Some(next) = rest.get(got.len()) {
                assert!(bytes.len() + DIRENT_SIZE + next.name.len() > max_len);
            }
        }
        Err(e) => {
            assert_eq!(e, libc::EINVAL);
            assert!(DIRENT_SIZE + rest[0].name.len() > max_len);
        }
    }
    if let Ok(records) = decode_dirents(arbitrary) {
        assert_eq!(pack_dirents(&records, 0, arbitrary.len()).as_deref(), Ok(arbitrary));
    }
}

/// [`check_dirents`] on fuzzer bytes: a listing, a start, a length, then
/// bytes to decode.
pub(crate) fn dirents_from_bytes(data: &[u8]) {
    let mut inp = Input(data);
    let listing: Vec<Listed> = (0..inp.u8() % 16)
        .map(|_| {
            let (ino, dtype, len) = (inp.u64(), inp.u8(), 1 + inp.u8() as usize % NAME_MAX);
            Listed { ino, dtype, name: inp.bytes(len).into_iter().chain(std::iter::repeat(b'n')).take(len).collect() }
        })
        .collect();
    let (start, max_len) = (inp.value(), inp.value());
    check_dirents(&listing, start, usize::try_from(max_len).unwrap_or(usize::MAX), inp.0);
}

/// Paths, a stat record and an errno from fuzzer bytes.
pub(crate) fn records_from_bytes(data: &[u8]) {
    let mut inp = Input(data);
    let st = inp.stat();
    check_stat_record(st);
    check_errno(inp.u64() as i32);
    let rest = inp.0;
    let cut = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
    let (a, b) =
        (String::from_utf8_lossy(&rest[..cut]), String::from_utf8_lossy(rest.get(cut + 1..).unwrap_or_default()));
    check_paths(&a, &b);
}

/// Guest paths: what `check_guest_path` accepts is absolute and
/// normalised, and `path_is_within` is component-wise.
pub(crate) fn check_paths(a: &str, b: &str) {
    for p in [a, b] {
        if check_guest_path(p).is_ok() {
            assert!(p.starts_with('/') && p.len() < PATH_MAX && !p.contains('\0'), "{p:?}");
            if p != "/" {
                for c in p[1..].split('/') {
                    assert!(!c.is_empty() && c != "." && c != ".." && c.len() <= NAME_MAX, "{p:?}");
                }
            }
            assert!(path_is_within(p, p) && path_is_within(p, "/"));
        }
    }
    if check_guest_path(a).is_ok() && check_guest_path(b).is_ok() {
        let comps = |p: &str| p.split('/').filter(|c| !c.is_empty()).map(str::to_string).collect::<Vec<_>>();
        let (ca, cb) = (comps(a), comps(b));
        assert_eq!(path_is_within(a, b), ca.starts_with(&cb), "{a:?} within {b:?}");
    }
}

/// The hypercall result of an errno is a negative number in Linux's range.
pub(crate) fn check_errno(e: Errno) {
    let r = errno_result(e) as i64;
    if (1..4096).contains(&e) {
        assert!((-4095..0).contains(&r) && r == -i64::from(e));
    }
}

/// A stat record reads back as it was written.
pub(crate) fn check_stat_record(st: Stat) {
    let bytes = stat_bytes(&st);
    assert_eq!(bytes.len(), STAT_SIZE);
    assert_eq!(decode_stat(&bytes), Stat { _pad: 0, ..st });
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// `cases` per property unless PROPTEST_CASES says otherwise.
    fn config(cases: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
        ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
    }

    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..16u64,
            any::<u64>(),
            (0..16u64).prop_map(|k| u64::MAX - k),
            (0..16u64).prop_map(|k| i64::MAX as u64 - k),
            (0..16u64).prop_map(|k| abi::HCALL_MAX_LEN - 8 + k),
            0..(1u64 << 21),
        ]
    }

    fn handle() -> impl Strategy<Value = HandleArg> {
        prop_oneof![4 => any::<u8>().prop_map(HandleArg::Known), 1 => value().prop_map(HandleArg::Raw)]
    }

    fn name() -> impl Strategy<Value = NameArg> {
        prop_oneof![
            6 => any::<u8>().prop_map(NameArg::Child),
            1 => prop::collection::vec(prop_oneof![Just(b'/'), Just(0u8), Just(b'.'), any::<u8>()], 0..8).prop_map(NameArg::Raw),
            1 => (250..260usize).prop_map(|n| NameArg::Raw(vec![b'n'; n])),
        ]
    }

    fn len(max: usize) -> impl Strategy<Value = usize> {
        prop_oneof![4 => 0..64usize, 2 => 0..=max, 1 => (0..16usize).prop_map(move |k| max - k)]
    }

    fn file_out_path() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => (prop::collection::vec(any::<u8>(), 0..5), any::<bool>()).prop_map(|(p, slash)| build_path(&p, slash)),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (handle(), name()).prop_map(|(dir, name)| Op::Lookup { dir, name }),
            3 => (handle(), value(), len(READ_MAX)).prop_map(|(file, offset, len)| Op::Read { file, offset, len }),
            2 => (handle(), value(), value()).prop_map(|(dir, start, max_len)| Op::Readdir { dir, start, max_len }),
            1 => handle().prop_map(|link| Op::Readlink { link }),
            1 => handle().prop_map(|handle| Op::Stat { handle }),
            1 => (0..300usize, any::<u32>()).prop_map(|(len, mode)| Op::AddBlob { len, mode }),
            3 => (file_out_path(), prop_oneof![0..256u64, value()], len(CHUNK_MAX))
                .prop_map(|(path, offset, len)| Op::FileOut { path, offset, len }),
        ]
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (1..64usize, 1..4usize, prop_oneof![0..4096u64, 0..(4u64 << 20)], 0..8usize, any::<u8>()).prop_map(
            |(max_handles, max_open, max_bytes, max_files, roots)| Limits {
                max_handles,
                max_open,
                max_bytes,
                max_files,
                roots,
            },
        )
    }

    fn tree() -> &'static Tree {
        Tree::shared()
    }

    fn listed() -> impl Strategy<Value = Listed> {
        (any::<u64>(), any::<u8>(), prop::collection::vec(any::<u8>(), 1..=NAME_MAX))
            .prop_map(|(ino, dtype, name)| Listed { ino, dtype, name })
    }

    fn record() -> impl Strategy<Value = ManifestRecord> {
        (
            1..=5u32,
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..6),
            (any::<u32>(), any::<u64>(), any::<i64>(), any::<u32>()),
        )
            .prop_map(|(kind, mode, handle, size, parts, (nlink, ino, mtime_sec, mtime_nsec))| {
                let mut path = String::from_utf8_lossy(&build_path(&parts, true)).into_owned();
                if check_guest_path(&path).is_err() {
                    path = "/fallback".into();
                }
                let root = (kind == abi::fs::ENTRY_MOUNT).then_some(Stat {
                    mode,
                    nlink,
                    size,
                    ino,
                    mtime_sec,
                    mtime_nsec,
                    _pad: 0,
                });
                ManifestRecord { kind, mode, handle, size, path, root }
            })
    }

    proptest! {
        #![proptest_config(config(500))]

        /// Sequences of requests with guest-chosen handles, names, offsets
        /// and lengths against a real host tree, under small caps.
        #[test]
        fn fs_requests_keep_the_contract(limits in limits(), ops in prop::collection::vec(op(), 1..40)) {
            let mut world = World::new(tree(), &limits);
            for op in &ops {
                world.apply(op);
            }
            world.finish();
        }

        /// The fuzz targets' input formats, on random bytes.
        #[test]
        fn fuzz_inputs_from_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
            run_requests(tree(), &data, false);
            run_requests(tree(), &data, true);
            dirents_from_bytes(&data);
            records_from_bytes(&data);
            check_manifest_bytes(&data);
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn file_out_keeps_its_caps(limits in limits(), ops in prop::collection::vec(
            (file_out_path(), prop_oneof![0..256u64, value()], len(4096)), 1..20)
        ) {
            let mut world = World::new(tree(), &limits);
            for (path, offset, len) in ops {
                world.apply(&Op::FileOut { path, offset, len });
            }
            world.finish();
        }

        #[test]
        fn manifest_round_trips(records in prop::collection::vec(record(), 0..8)) {
            check_manifest_roundtrip(&records);
            check_manifest_bytes(&encode_manifest(&records).unwrap());
        }

        #[test]
        fn manifest_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), records in prop::collection::vec(record(), 0..3), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            check_manifest_bytes(&bytes);
            check_manifest_roundtrip(&manifest_records(&mut Input(&bytes)));
            // A valid manifest cut short or with one byte changed.
            let good = encode_manifest(&records).unwrap();
            if !good.is_empty() {
                check_manifest_bytes(&good[..cut.index(good.len())]);
                let mut bad = good.clone();
                bad[flip.0.index(good.len())] ^= flip.1;
                check_manifest_bytes(&bad);
            }
        }

        #[test]
        fn dirents_page_whole_records(listing in prop::collection::vec(listed(), 0..12), start in prop_oneof![0..14u64, value()], max_len in prop_oneof![0..600usize, any::<usize>()], arbitrary in prop::collection::vec(any::<u8>(), 0..128)) {
            check_dirents(&listing, start, max_len, &arbitrary);
        }

        #[test]
        fn guest_paths_are_normalised(a in "(/|/?[a-z.]{0,3}(/[a-z.]{0,3}){0,3}/?)", b in "(/|/?[a-z.]{0,3}(/[a-z.]{0,3}){0,3}/?)", raw in ".{0,8}") {
            check_paths(&a, &b);
            check_paths(&raw, &a);
        }

        #[test]
        fn stat_records_and_errnos(st in (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<i64>(), any::<u32>()), e in any::<i32>()) {
            let (mode, nlink, size, ino, mtime_sec, mtime_nsec) = st;
            check_stat_record(Stat { mode, nlink, size, ino, mtime_sec, mtime_nsec, _pad: 0 });
            check_errno(e);
        }
    }
}
