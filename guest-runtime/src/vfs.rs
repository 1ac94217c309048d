//! The guest's filesystem: an in-memory tree (writable: `/`, `/tmp`, the
//! working directory, files the host placed), read-only host directories
//! grafted into it (looked up one name at a time through FS hypercalls and
//! cached here), device nodes and named pipes, and `/proc`.
//!
//! Paths — `..`, symlinks, absolute link targets — are resolved here, in
//! the guest's own view: the host only ever sees "look up this one name in
//! this directory handle", so nothing the program does can reach outside a
//! mounted host directory.
//!
//! ~2,100 lines, ~170 of them its unit tests: the node types are shared by
//! the tree operations, the host-backed nodes, file data in guest frames
//! and path resolution. Splitting those apart is left for later. What
//! `/proc` shows comes from the process layer (`procfs.rs`) through [`ProcSelf`];
//! callers apply their umask and pass their working directory as `base`.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::RefCell;

use hvsandbox_abi::{self as abi, fs as afs, hc as hcn};

use crate::errno::*;
use crate::hc;
use crate::mm;
use crate::rt::Global;

pub type NodeRef = Rc<Node>;
/// A directory entry for getdents: (name, inode number, `DT_*` type).
pub type DirEntry = (Vec<u8>, u64, u8);
pub type Errno = i64;

pub const S_IFMT: u32 = 0o170_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFCHR: u32 = 0o020_000;
pub const S_IFIFO: u32 = 0o010_000;
pub const S_IFSOCK: u32 = 0o140_000;

const PAGE: u64 = abi::PAGE_SIZE;
const MAX_LINKS: u32 = 40;
/// Device number of the in-memory tree; host nodes use HOST_DEV.
const MEM_DEV: u64 = 0x1;
pub const HOST_DEV: u64 = 0x2;
/// Host file data is read ahead in chunks of this size, straight into
/// frames (`hc::FS_READ_FRAMES`).
const READ_CHUNK: usize = abi::HCALL_MAX_LEN as usize;
/// The staging buffer's size (directory listings, files sent back, files
/// of unknown size).
const STAGING_LEN: usize = 256 * 1024;
/// The most read of a host file whose status says it is empty (see
/// `FileData::learn_size`).
const MAX_UNSIZED: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub dev: u64,
    pub ino: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

pub struct Node {
    pub meta: RefCell<Meta>,
    pub kind: NodeKind,
}

pub enum NodeKind {
    Dir(RefCell<Dir>),
    File(RefCell<FileData>),
    Symlink(RefCell<Link>),
    Dev(Dev),
    /// `/proc/<pid>/fd`: its entries are that process's open descriptors.
    ProcFd(u32),
    /// `/proc` (`None`) and `/proc/<pid>` (`Some(pid)`): their entries
    /// are made on lookup from what the process layer says now.
    Proc(Option<u32>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dev {
    Null,
    Zero,
    Full,
    Random,
    /// `/dev/hvsandbox/checkpoint`: the first read is a snapshot point.
    Checkpoint,
    /// `/dev/hvsandbox/env`: the environment this run was given.
    Env,
    /// /dev/ptmx: opening it makes a pseudo-terminal (`sys_pty.rs`).
    Ptmx,
    /// /dev/pts/N: a pseudo-terminal's slave side.
    Pts(u32),
    /// /dev/tty: the process's controlling terminal.
    Tty,
    /// A named pipe (mkfifo): opening it joins its pipe (`file.rs`).
    Fifo,
    /// A local socket's name (bind): found by connect (`sock_addr.rs`);
    /// opening it is ENXIO.
    Socket,
    /// `/proc/<pid>/comm`, `/proc/<pid>/task/<tid>/comm`: thread tid's
    /// name, read and written through [`ProcSelf::comm`].
    Comm(u32),
    /// `/sys/<SYSFS_FILES[i]>`: read through [`ProcSelf::sysfs`].
    Sys(u8),
}

pub struct Dir {
    pub entries: BTreeMap<Vec<u8>, NodeRef>,
    pub parent: Weak<Node>,
    pub host: Option<HostDir>,
}

pub struct HostDir {
    pub handle: u64,
    /// Names the host said do not exist.
    pub missing: BTreeSet<Vec<u8>>,
}

pub struct FileData {
    /// Frame (guest-physical address) of each page; 0 = not loaded yet
    /// (host files) or a hole (reads as zeros).
    pub pages: Vec<u64>,
    pub size: u64,
    /// Contents still to be fetched from this host handle on first use.
    pub host: Option<u64>,
    pub readonly: bool,
    /// Frames are mapped in place into some process (program text): they
    /// must neither change nor be freed; a write gets new frames first.
    pub pinned: bool,
    /// Shared mappings (MAP_SHARED) of this file.
    pub shared: SharedUse,
}

/// What the shared mappings of a file need of it: its frames are theirs
/// too, so none is freed while one of them lives.
#[derive(Default)]
pub struct SharedUse {
    /// Live mapping objects (`shm.rs`) of this file.
    pub maps: u32,
    /// Frames cut off by a truncate while mapped: freed with the file.
    pub detached: Vec<u64>,
}

pub struct Link {
    pub target: Option<Vec<u8>>,
    pub host: Option<u64>,
    /// `/proc/<pid>/fd/N`: opening it opens descriptor N itself (what
    /// a pipe's or socket's descriptor shows has no path to follow).
    pub fd: Option<u32>,
}

static NEXT_INO: Global<u64> = Global::new(2);
static ROOT: Global<Option<NodeRef>> = Global::new(None);
static BOOT_CWD: Global<Option<NodeRef>> = Global::new(None);
static COLLECT: Global<Vec<Vec<u8>>> = Global::new(Vec::new());
static STAGING: Global<Vec<u8>> = Global::new(Vec::new());

fn now() -> (i64, u32) {
    let ns = crate::time::realtime_ns();
    ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
}

fn new_meta(mode: u32) -> Meta {
    let ino = NEXT_INO.get();
    *ino += 1;
    let t = now();
    let uid = crate::rt::UID as u32;
    Meta { mode, uid, gid: uid, nlink: 1, dev: MEM_DEV, ino: *ino, atime: t, mtime: t, ctime: t }
}

impl Node {
    pub fn new(mode: u32, kind: NodeKind) -> NodeRef {
        let mut meta = new_meta(mode);
        if let NodeKind::Dir(_) = kind {
            meta.nlink = 2;
        }
        Rc::new(Node { meta: RefCell::new(meta), kind })
    }
    pub fn mode(&self) -> u32 {
        self.meta.borrow().mode
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_) | NodeKind::ProcFd(_) | NodeKind::Proc(_))
    }
    pub fn is_symlink(&self) -> bool {
        matches!(self.kind, NodeKind::Symlink(_))
    }
    /// Whether the node belongs to a read-only host mount.
    pub fn readonly(&self) -> bool {
        match &self.kind {
            NodeKind::Dir(d) => d.borrow().host.is_some(),
            NodeKind::File(f) => f.borrow().readonly,
            NodeKind::Symlink(l) => l.borrow().host.is_some(),
            NodeKind::Dev(_) => false,
            NodeKind::ProcFd(_) | NodeKind::Proc(_) => true,
        }
    }
    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::File(f) => f.borrow().size,
            NodeKind::Symlink(l) => l.borrow().target.as_ref().map_or(0, |t| t.len() as u64),
            NodeKind::Dir(_) | NodeKind::ProcFd(_) | NodeKind::Proc(_) => 4096,
            NodeKind::Dev(_) => 0,
        }
    }
    pub fn touch(&self) {
        let mut m = self.meta.borrow_mut();
        let t = now();
        m.mtime = t;
        m.ctime = t;
    }
}

fn new_dir(parent: &NodeRef, mode: u32) -> NodeRef {
    Node::new(
        S_IFDIR | (mode & 0o7777),
        NodeKind::Dir(RefCell::new(Dir { entries: BTreeMap::new(), parent: Rc::downgrade(parent), host: None })),
    )
}

pub fn new_file(mode: u32) -> NodeRef {
    Node::new(
        S_IFREG | (mode & 0o7777),
        NodeKind::File(RefCell::new(FileData {
            pages: Vec::new(),
            size: 0,
            host: None,
            readonly: false,
            pinned: false,
            shared: SharedUse::default(),
        })),
    )
}

fn new_symlink(target: &[u8]) -> NodeRef {
    Node::new(
        S_IFLNK | 0o777,
        NodeKind::Symlink(RefCell::new(Link { target: Some(target.to_vec()), host: None, fd: None })),
    )
}

pub fn root() -> NodeRef {
    match ROOT.get() {
        Some(r) => r.clone(),
        None => hc::panic(b"filesystem used before init"),
    }
}

/// What `/proc` shows comes from the process layer above the
/// filesystem, which registers it at start.
#[derive(Clone, Copy)]
pub struct ProcSelf {
    /// The current process's id (`/proc/self`).
    pub current_pid: fn() -> u32,
    /// The live processes' ids (the numbered directories of `/proc`).
    pub pids: fn() -> Vec<u32>,
    /// A process's program (`/proc/<pid>/exe`).
    pub exe: fn(u32) -> Option<Vec<u8>>,
    /// The path a process's open descriptor refers to (`/proc/<pid>/fd/N`).
    pub fd_path: fn(u32, u32) -> Option<Vec<u8>>,
    /// A process's open descriptors (listing `/proc/<pid>/fd`).
    pub open_fds: fn(u32) -> Vec<u32>,
    /// The contents of `/proc/<name>` (`None`) or `/proc/<pid>/<name>`,
    /// one of [`PROC_FILES`] or [`PID_FILES`].
    pub file: fn(Option<u32>, &[u8]) -> Option<Vec<u8>>,
    /// A process's working directory (`/proc/<pid>/cwd`).
    pub cwd: fn(u32) -> Option<Vec<u8>>,
    /// A process's thread ids (`/proc/<pid>/task`).
    pub tids: fn(u32) -> Vec<u32>,
    /// The contents of `/proc/<pid>/task/<tid>/<name>`, one of
    /// [`THREAD_FILES`].
    pub thread_file: fn(u32, u32, &[u8]) -> Option<Vec<u8>>,
    /// `/proc/<pid>/fdinfo/N`: an open descriptor's position and flags.
    pub fdinfo: fn(u32, u32) -> Option<Vec<u8>>,
    /// `/proc/net/<name>`, one of [`NET_FILES`] (`procnet.rs`).
    pub net: fn(&[u8]) -> Option<Vec<u8>>,
    /// The text of `/sys/<path>`, one of [`SYSFS_FILES`] (`sysfs.rs`).
    pub sysfs: fn(&[u8]) -> Option<Vec<u8>>,
    /// A thread's name, with a newline (`/proc/.../comm`).
    pub comm: fn(u32) -> Option<Vec<u8>>,
    /// The current process names one of its threads.
    pub set_comm: fn(u32, &[u8]) -> Result<(), Errno>,
}

/// The files of `/proc` and of `/proc/<pid>` (made on each lookup).
pub const PROC_FILES: [&[u8]; 8] =
    [b"cpuinfo", b"filesystems", b"loadavg", b"meminfo", b"mounts", b"stat", b"uptime", b"version"];
pub const PID_FILES: [&[u8]; 14] = [
    b"auxv",
    b"cgroup",
    b"cmdline",
    b"comm",
    b"environ",
    b"io",
    b"limits",
    b"maps",
    b"mountinfo",
    b"mounts",
    b"oom_score_adj",
    b"stat",
    b"statm",
    b"status",
];
/// `/proc/sys`: the files it holds (their text from the `file` hook, by
/// these paths), in directories made on lookup.
pub const SYS_FILES: [&[u8]; 8] = [
    b"fs/file-max",
    b"kernel/hostname",
    b"kernel/osrelease",
    b"kernel/ostype",
    b"kernel/pid_max",
    b"kernel/random/boot_id",
    b"kernel/random/uuid",
    b"vm/overcommit_memory",
];
/// `/sys`: the files it holds (read-only, root's; their text from the
/// `sysfs` hook at each read).
pub const SYSFS_FILES: [&[u8]; 16] = [
    b"devices/system/cpu/online",
    b"devices/system/cpu/possible",
    b"devices/system/cpu/present",
    b"kernel/mm/transparent_hugepage/enabled",
    b"kernel/mm/transparent_hugepage/hpage_pmd_size",
    b"fs/cgroup/cgroup.controllers",
    b"fs/cgroup/cgroup.subtree_control",
    b"fs/cgroup/cgroup.procs",
    b"fs/cgroup/cpu.max",
    b"fs/cgroup/cpu.weight",
    b"fs/cgroup/memory.max",
    b"fs/cgroup/memory.high",
    b"fs/cgroup/memory.current",
    b"fs/cgroup/memory.peak",
    b"fs/cgroup/memory.swap.max",
    b"fs/cgroup/memory.swap.current",
];
pub const THREAD_FILES: [&[u8]; 3] = [b"comm", b"stat", b"status"];
/// `/proc/net`: the socket tables (their text from the `net` hook).
pub const NET_FILES: [&[u8]; 6] = [b"tcp", b"tcp6", b"udp", b"udp6", b"udplite", b"unix"];

static PROC_SELF: Global<ProcSelf> = Global::new(ProcSelf {
    current_pid: || 1,
    pids: Vec::new,
    exe: |_| None,
    fd_path: |_, _| None,
    open_fds: |_| Vec::new(),
    file: |_, _| None,
    cwd: |_| None,
    tids: |_| Vec::new(),
    thread_file: |_, _, _| None,
    fdinfo: |_, _| None,
    net: |_| None,
    sysfs: |_| None,
    comm: |_| None,
    set_comm: |_, _| Err(ESRCH),
});

/// Registers the process layer's answers for `/proc`.
pub fn set_proc_self(p: ProcSelf) {
    *PROC_SELF.get() = p;
}

fn proc_root() -> NodeRef {
    resolve(&root(), b"/proc", false).unwrap_or_else(|_| root())
}

/// A read-only file holding `data` (a `/proc` file, made on lookup).
fn proc_file(data: &[u8]) -> Result<NodeRef, Errno> {
    let f = new_file(0o444);
    if let NodeKind::File(fd) = &f.kind {
        let mut fd = fd.borrow_mut();
        fd.write_at(0, data)?;
        fd.readonly = true;
    }
    f.meta.borrow_mut().uid = 0;
    f.meta.borrow_mut().gid = 0;
    Ok(f)
}

/// A thread's `comm` file: its name when read, as written (its owner's,
/// like the process's other files).
fn comm_node(tid: u32) -> NodeRef {
    let n = Node::new(S_IFREG | 0o644, NodeKind::Dev(Dev::Comm(tid)));
    n.meta.borrow_mut().uid = crate::rt::UID as u32;
    n.meta.borrow_mut().gid = crate::rt::UID as u32;
    n
}

/// The text of `/sys/<SYSFS_FILES[i]>` now.
pub fn sysfs(i: u8) -> Result<Vec<u8>, Errno> {
    let path = SYSFS_FILES.get(i as usize).ok_or(ENOENT)?;
    (PROC_SELF.get().sysfs)(path).ok_or(ENOENT)
}

/// Thread `tid`'s name, with a newline (`/proc/.../comm`).
pub fn comm(tid: u32) -> Result<Vec<u8>, Errno> {
    (PROC_SELF.get().comm)(tid).ok_or(ESRCH)
}

/// The current process names its thread `tid` (`/proc/.../comm`).
pub fn set_comm(tid: u32, name: &[u8]) -> Result<(), Errno> {
    (PROC_SELF.get().set_comm)(tid, name)
}

/// A process's read-only file (`/proc/<pid>/...`): its user's, as on
/// Linux.
fn proc_pid_file(data: &[u8]) -> Result<NodeRef, Errno> {
    let f = proc_file(data)?;
    f.meta.borrow_mut().uid = crate::rt::UID as u32;
    f.meta.borrow_mut().gid = crate::rt::UID as u32;
    Ok(f)
}

fn decimal(n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    push_num(&mut v, n);
    v
}

fn proc_lookup(pid: Option<u32>, name: &[u8]) -> Result<NodeRef, Errno> {
    let hooks = *PROC_SELF.get();
    let Some(pid) = pid else {
        if name == b"self" {
            return Ok(new_symlink(&decimal((hooks.current_pid)() as u64)));
        }
        if let Some(p) = parse_u32(name) {
            if (hooks.pids)().contains(&p) {
                return Ok(Node::new(S_IFDIR | 0o555, NodeKind::Proc(Some(p))));
            }
            return Err(ENOENT);
        }
        if PROC_FILES.contains(&name) {
            return proc_file(&(hooks.file)(None, name).ok_or(ENOENT)?);
        }
        if name == b"sys" {
            return proc_sys_dir();
        }
        if name == b"net" {
            // As on Linux: the current process's.
            return Ok(new_symlink(b"self/net"));
        }
        return Err(ENOENT);
    };
    if !(hooks.pids)().contains(&pid) {
        return Err(ENOENT);
    }
    match name {
        b"fd" => Ok(Node::new(S_IFDIR | 0o500, NodeKind::ProcFd(pid))),
        b"exe" => Ok(new_symlink(&(hooks.exe)(pid).ok_or(ENOENT)?)),
        b"cwd" => Ok(new_symlink(&(hooks.cwd)(pid).ok_or(ENOENT)?)),
        // Every process has the sandbox's root (no chroot).
        b"root" => Ok(new_symlink(b"/")),
        b"task" => proc_task_dir(pid),
        b"net" => {
            // The sandbox's one network namespace: every process's is
            // the same.
            let mut files = BTreeMap::new();
            for f in NET_FILES {
                files.insert(f.to_vec(), proc_file(&(hooks.net)(f).ok_or(ENOENT)?)?);
            }
            Ok(proc_dir(files))
        }
        b"fdinfo" => {
            let mut entries = BTreeMap::new();
            for fd in (hooks.open_fds)(pid) {
                if let Some(data) = (hooks.fdinfo)(pid, fd) {
                    entries.insert(decimal(fd as u64), proc_pid_file(&data)?);
                }
            }
            // The process's user's, as its `fd` directory.
            let dir = Dir { entries, parent: Weak::new(), host: None };
            Ok(Node::new(S_IFDIR | 0o500, NodeKind::Dir(RefCell::new(dir))))
        }
        b"comm" => Ok(comm_node(pid)),
        _ if PID_FILES.contains(&name) => proc_pid_file(&(hooks.file)(Some(pid), name).ok_or(ENOENT)?),
        _ => Err(ENOENT),
    }
}

/// `/proc/<pid>/task`: a directory made on lookup, a subdirectory per
/// thread with its [`THREAD_FILES`] (what they say at that moment).
fn proc_task_dir(pid: u32) -> Result<NodeRef, Errno> {
    let hooks = *PROC_SELF.get();
    let mut entries = BTreeMap::new();
    for tid in (hooks.tids)(pid) {
        let mut files = BTreeMap::new();
        for name in THREAD_FILES {
            let file = if name == b"comm" {
                comm_node(tid)
            } else {
                proc_pid_file(&(hooks.thread_file)(pid, tid, name).ok_or(ENOENT)?)?
            };
            files.insert(name.to_vec(), file);
        }
        entries.insert(decimal(tid as u64), proc_dir(files));
    }
    Ok(proc_dir(entries))
}

/// `/proc/sys`: [`SYS_FILES`] in their directories, what they say at
/// that moment (a new lookup, a new `random/uuid`).
fn proc_sys_dir() -> Result<NodeRef, Errno> {
    fn insert(dir: &mut BTreeMap<Vec<u8>, Tree>, path: &[u8], file: NodeRef) {
        match path.iter().position(|&c| c == b'/') {
            None => {
                dir.insert(path.to_vec(), Tree::File(file));
            }
            Some(i) => {
                let sub = dir.entry(path[..i].to_vec()).or_insert_with(|| Tree::Dir(BTreeMap::new()));
                if let Tree::Dir(d) = sub {
                    insert(d, &path[i + 1..], file);
                }
            }
        }
    }
    fn build(dir: BTreeMap<Vec<u8>, Tree>) -> NodeRef {
        proc_dir(
            dir.into_iter()
                .map(|(k, v)| {
                    let n = match v {
                        Tree::File(f) => f,
                        Tree::Dir(d) => build(d),
                    };
                    (k, n)
                })
                .collect(),
        )
    }
    enum Tree {
        File(NodeRef),
        Dir(BTreeMap<Vec<u8>, Tree>),
    }
    let hooks = *PROC_SELF.get();
    let mut root = BTreeMap::new();
    for path in SYS_FILES {
        let mut name = b"sys/".to_vec();
        name.extend_from_slice(path);
        insert(&mut root, path, proc_file(&(hooks.file)(None, &name).ok_or(ENOENT)?)?);
    }
    Ok(build(root))
}

/// A read-only directory of `/proc` holding `entries` (made on lookup).
fn proc_dir(entries: BTreeMap<Vec<u8>, NodeRef>) -> NodeRef {
    let d = Node::new(S_IFDIR | 0o555, NodeKind::Dir(RefCell::new(Dir { entries, parent: Weak::new(), host: None })));
    d.meta.borrow_mut().uid = 0;
    d.meta.borrow_mut().gid = 0;
    d
}

fn proc_list(pid: Option<u32>, out: &mut Vec<DirEntry>) {
    let hooks = *PROC_SELF.get();
    let base = 0x10_0000 + pid.map_or(0, |p| p as u64 * 64);
    match pid {
        None => {
            for (i, name) in PROC_FILES.iter().enumerate() {
                out.push((name.to_vec(), base + i as u64, 8));
            }
            out.push((b"self".to_vec(), base + 16, 10));
            out.push((b"sys".to_vec(), base + 17, 4));
            out.push((b"net".to_vec(), base + 18, 10));
            for p in (hooks.pids)() {
                out.push((decimal(p as u64), 0x10_0000 + p as u64 * 64, 4));
            }
        }
        Some(_) => {
            for (i, name) in PID_FILES.iter().enumerate() {
                out.push((name.to_vec(), base + 1 + i as u64, 8));
            }
            out.push((b"exe".to_vec(), base + 16, 10));
            out.push((b"fd".to_vec(), base + 17, 4));
            out.push((b"cwd".to_vec(), base + 18, 10));
            out.push((b"task".to_vec(), base + 19, 4));
            out.push((b"fdinfo".to_vec(), base + 20, 4));
            out.push((b"net".to_vec(), base + 21, 4));
            out.push((b"root".to_vec(), base + 22, 10));
        }
    }
}

/// The descriptor a `/proc/<pid>/fd/N` link of the current process opens
/// as itself (a pipe or socket: its target is no path).
pub fn fd_link(node: &NodeRef) -> Option<u32> {
    match &node.kind {
        NodeKind::Symlink(l) => l.borrow().fd,
        _ => None,
    }
}

/// The working directory the host asked for (the first process's).
pub fn boot_cwd() -> NodeRef {
    BOOT_CWD.get().clone().unwrap_or_else(root)
}

// --- host calls --------------------------------------------------------------

fn hret(r: u64) -> Result<u64, Errno> {
    let v = r as i64;
    if v < 0 {
        Err(-v)
    } else {
        Ok(r)
    }
}

/// A stat record the host wrote, decoded.
fn decode_stat(b: &[u8; afs::STAT_SIZE]) -> Result<afs::Stat, Errno> {
    afs::decode_stat(b).map_err(|_| EIO)
}

fn meta_from_host(st: &afs::Stat) -> Meta {
    Meta {
        mode: st.mode,
        uid: 0,
        gid: 0,
        nlink: st.nlink.max(1),
        dev: HOST_DEV,
        ino: st.ino,
        atime: (st.mtime_sec, st.mtime_nsec),
        mtime: (st.mtime_sec, st.mtime_nsec),
        ctime: (st.mtime_sec, st.mtime_nsec),
    }
}

/// A node for host `handle` with status `st`; `parent` is its directory.
fn host_node(handle: u64, st: &afs::Stat, parent: &NodeRef) -> NodeRef {
    let kind = match st.mode & S_IFMT {
        S_IFDIR => NodeKind::Dir(RefCell::new(Dir {
            entries: BTreeMap::new(),
            parent: Rc::downgrade(parent),
            host: Some(HostDir { handle, missing: BTreeSet::new() }),
        })),
        S_IFLNK => NodeKind::Symlink(RefCell::new(Link { target: None, host: Some(handle), fd: None })),
        S_IFREG => NodeKind::File(RefCell::new(FileData {
            pages: Vec::new(),
            size: st.size,
            host: Some(handle),
            readonly: true,
            pinned: false,
            shared: SharedUse::default(),
        })),
        // Devices, sockets and FIFOs on the host are not passed through.
        _ => NodeKind::File(RefCell::new(FileData {
            pages: Vec::new(),
            size: 0,
            host: None,
            readonly: true,
            pinned: false,
            shared: SharedUse::default(),
        })),
    };
    Rc::new(Node { meta: RefCell::new(meta_from_host(st)), kind })
}

fn host_lookup(handle: u64, name: &[u8]) -> Result<(u64, afs::Stat), Errno> {
    let mut st = [0u8; afs::STAT_SIZE];
    let h = hret(hc::call6(
        hcn::FS_LOOKUP,
        [handle, name.as_ptr() as u64, name.len() as u64, st.as_mut_ptr() as u64, 0, 0],
    ))?;
    Ok((h, decode_stat(&st)?))
}

/// What the host said of `name` in directory `dir`, cached there: the
/// node it found, or the name as missing (ENOENT).
fn remember(dir: &NodeRef, name: &[u8], found: Result<(u64, afs::Stat), Errno>) -> Result<NodeRef, Errno> {
    let NodeKind::Dir(d) = &dir.kind else { return Err(ENOTDIR) };
    match found {
        Ok((h, st)) => {
            let node = host_node(h, &st, dir);
            d.borrow_mut().entries.insert(name.to_vec(), node.clone());
            Ok(node)
        }
        Err(e) => {
            if e == ENOENT {
                if let Some(h) = d.borrow_mut().host.as_mut() {
                    h.missing.insert(name.to_vec());
                }
            }
            Err(e)
        }
    }
}

/// When `names[0]` is not known yet in host directory `dir`, looks up it
/// and the plain names after it (up to a `.` or `..`) in one host call,
/// each in the directory the one before it found (`FS_WALK`): a path
/// that goes down several new directories costs one hypercall, not one
/// per name. What is found is cached as a lookup would cache it (and a
/// name found missing as missing); the walk then finds it there. Does
/// nothing for fewer than two names or when the host says no.
fn look_ahead(dir: &NodeRef, names: &[&[u8]]) {
    let NodeKind::Dir(d) = &dir.kind else { return };
    let handle = {
        let d = d.borrow();
        match (&d.host, names.first()) {
            (Some(h), Some(first)) if !d.entries.contains_key(*first) && !h.missing.contains(*first) => h.handle,
            _ => return,
        }
    };
    let n = names
        .iter()
        .take(afs::WALK_MAX)
        .take_while(|&&c| c != b"." && c != b".." && !c.is_empty() && c.len() <= afs::NAME_MAX)
        .count();
    if n < 2 || !crate::heap::has_room() {
        return;
    }
    let mut path: Vec<u8> = Vec::new();
    if path.try_reserve(names[..n].iter().map(|c| c.len() + 1).sum()).is_err() {
        return;
    }
    for (k, c) in names[..n].iter().enumerate() {
        if k > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(c);
    }
    if path.len() > afs::PATH_MAX {
        return;
    }
    let mut out = [0u8; afs::WALK_MAX * afs::WALK_RECORD];
    let r = hc::call6(
        hcn::FS_WALK,
        [handle, path.as_ptr() as u64, path.len() as u64, out.as_mut_ptr() as u64, n as u64, 0],
    );
    if (r as i64) < 0 {
        return;
    }
    let (filled, failed) = ((r & 0xffff_ffff).min(n as u64) as usize, r >> 32);
    let mut cur = dir.clone();
    for (k, record) in out.chunks_exact(afs::WALK_RECORD).take(filled).enumerate() {
        let (h, st) = record.split_at(8);
        let h = u64::from_le_bytes(h.try_into().unwrap_or_default());
        let Ok(st) = st.try_into().map_err(|_| EIO).and_then(decode_stat) else { return };
        let NodeKind::Dir(cd) = &cur.kind else { return };
        // A name the guest knows already may be its own (a mount point,
        // a file it made): what the host found below it is not the
        // guest's view.
        if cd.borrow().entries.contains_key(names[k]) {
            return;
        }
        let Ok(node) = remember(&cur, names[k], Ok((h, st))) else { return };
        cur = node;
    }
    if failed == ENOENT as u64 && filled < n {
        let _ = remember(&cur, names[filled], Err(ENOENT));
    }
}

/// The buffer for host reads (allocated on first use; ENOMEM if that
/// finds the memory gone).
fn staging() -> Result<&'static mut Vec<u8>, Errno> {
    let s = STAGING.get();
    if s.len() < STAGING_LEN {
        s.try_reserve_exact(STAGING_LEN - s.len()).map_err(|_| ENOMEM)?;
        s.resize(STAGING_LEN, 0);
    }
    Ok(s)
}

/// Every entry of a host directory: (name, ino, dtype).
fn host_list(handle: u64) -> Result<Vec<DirEntry>, Errno> {
    let mut out = Vec::new();
    let buf = staging()?;
    let mut index = 0u64;
    loop {
        let n = hret(hc::call6(hcn::FS_READDIR, [handle, index, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0]))?
            as usize;
        if n == 0 || n > buf.len() {
            return Ok(out);
        }
        // Whole records only; a cut one ends this batch.
        let mut got = 0;
        for d in afs::dirents(&buf[..n]).map_while(Result::ok) {
            if !crate::heap::has_room() {
                return Err(ENOMEM);
            }
            out.try_reserve(1).map_err(|_| ENOMEM)?;
            out.push((d.name.to_vec(), d.ino, d.dtype));
            got += 1;
        }
        // The host fills what fits: room left for the longest record means
        // these were the last (one call for most directories, not two).
        if got == 0 || buf.len() - n >= afs::dirent_size(afs::NAME_MAX) {
            return Ok(out);
        }
        index += got;
    }
}

// --- file data -----------------------------------------------------------------

impl FileData {
    fn page_count(&self) -> usize {
        self.size.div_ceil(PAGE) as usize
    }

    /// Makes sure pages `[first, last]` are present (fetched from the host
    /// in large chunks, or fresh zero frames when `alloc` is set).
    pub fn ensure(&mut self, first: usize, last: usize, alloc: bool) -> Result<(), Errno> {
        let need = last + 1;
        if self.pages.len() < need {
            self.pages.try_reserve(need - self.pages.len()).map_err(|_| ENOMEM)?;
            self.pages.resize(need, 0);
        }
        let mut i = first;
        while i <= last {
            if self.pages[i] != 0 {
                i += 1;
                continue;
            }
            match self.host {
                Some(h) if (i as u64) * PAGE < self.size => {
                    // Read ahead up to READ_CHUNK from the first missing
                    // page, straight into fresh frames.
                    let max_pages = (READ_CHUNK as u64 / PAGE) as usize;
                    let mut frames = [0u64; READ_CHUNK / PAGE as usize];
                    let mut n = 0;
                    while n < max_pages && i + n < self.page_count() && self.pages.get(i + n).is_none_or(|&p| p == 0) {
                        let Some(frame) = mm::alloc_data_frame() else { break };
                        frames[n] = frame;
                        n += 1;
                    }
                    if n == 0 {
                        return Err(ENOMEM);
                    }
                    let want = n as u64 * PAGE;
                    let got = hret(hc::call6(
                        hcn::FS_READ_FRAMES,
                        [h, i as u64 * PAGE, frames.as_ptr() as u64, n as u64, 0, 0],
                    ));
                    let got = match got {
                        Ok(got) => got.min(want),
                        Err(e) => {
                            for &frame in &frames[..n] {
                                mm::free_data_frame(frame);
                            }
                            return Err(e);
                        }
                    };
                    if got < want {
                        // The host's file ends here (it shrank, or it
                        // reports a size it does not have, as sysfs
                        // attributes report 4096): so does this one. The
                        // frames past it stay zero.
                        let end = i as u64 * PAGE + got;
                        if end < self.size {
                            self.size = end;
                        }
                    }
                    if self.pages.len() < i + n {
                        self.pages.try_reserve(i + n - self.pages.len()).map_err(|_| ENOMEM)?;
                        self.pages.resize(i + n, 0);
                    }
                    self.pages[i..i + n].copy_from_slice(&frames[..n]);
                    i += n;
                }
                _ => {
                    if alloc {
                        self.pages[i] = mm::alloc_data_frame().ok_or(ENOMEM)?;
                    }
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// A host file whose status says it is empty may still have content
    /// (procfs and sysfs files make theirs as they are read): the first
    /// time, it is read whole from the host and its size becomes what was
    /// read, so stat, read, mmap and lseek agree from then on. A really
    /// empty file costs one host read that returns 0. Past MAX_UNSIZED
    /// bytes the file is taken to be that long (the rest is never seen).
    /// On failure nothing is kept and the next call tries again.
    pub fn learn_size(&mut self) -> Result<(), Errno> {
        let Some(h) = self.host else { return Ok(()) };
        if self.size != 0 {
            return Ok(());
        }
        // Without the handle, the pages written below are the contents.
        self.host = None;
        let r = self.read_whole(h);
        if r.is_err() {
            let _ = self.truncate(0);
            self.host = Some(h);
        }
        r
    }

    /// Appends the contents of host file `h` from offset `size` until the
    /// host says end of file or MAX_UNSIZED.
    fn read_whole(&mut self, h: u64) -> Result<(), Errno> {
        let buf = staging()?;
        while self.size < MAX_UNSIZED {
            if !crate::heap::has_room() {
                return Err(ENOMEM);
            }
            let want = (buf.len() as u64).min(MAX_UNSIZED - self.size);
            let got = hret(hc::call6(hcn::FS_READ, [h, self.size, buf.as_mut_ptr() as u64, want, 0, 0]))?;
            if got == 0 {
                break;
            }
            let got = got.min(want) as usize;
            // A short write or ENOSPC means the frames ran out.
            if self.write_at(self.size, &buf[..got]).ok() != Some(got) {
                return Err(ENOMEM);
            }
        }
        Ok(())
    }

    /// Marks the frames as mapped in place (see `pinned`).
    pub fn pin(&mut self) {
        self.pinned = true;
    }

    /// Fetches every page still on the host and drops the link to it.
    fn own_data(&mut self) -> Result<(), Errno> {
        let pages = self.size.div_ceil(PAGE) as usize;
        if pages > 0 {
            self.ensure(0, pages - 1, false)?;
        }
        self.host = None;
        Ok(())
    }

    /// Before a shared mapping takes this file's frames: a pinned file
    /// gets frames of its own (the old ones stay with the mappings that
    /// pinned them), so that its frames may change from now on.
    pub fn prepare_shared(&mut self) -> Result<(), Errno> {
        if self.pinned {
            self.ensure(0, self.page_count().max(1) - 1, false)?;
            self.unshare()?;
        }
        Ok(())
    }

    /// Gives a pinned file private frames before it changes; the old ones
    /// stay with the processes that map them.
    fn unshare(&mut self) -> Result<(), Errno> {
        if !self.pinned {
            return Ok(());
        }
        let mut fresh = Vec::new();
        fresh.try_reserve(self.pages.len()).map_err(|_| ENOMEM)?;
        for &f in &self.pages {
            if f == 0 {
                fresh.push(0);
                continue;
            }
            let Some(n) = mm::alloc_data_frame() else {
                for &g in &fresh {
                    if g != 0 {
                        mm::free_data_frame(g);
                    }
                }
                return Err(ENOMEM);
            };
            // SAFETY: two distinct whole frames of guest RAM.
            unsafe { core::ptr::copy_nonoverlapping(crate::rt::phys_ptr(f), crate::rt::phys_ptr(n), PAGE as usize) };
            fresh.push(n);
        }
        self.pages = fresh;
        self.pinned = false;
        Ok(())
    }

    /// Copies up to `out.len()` bytes at `off`; returns the count.
    pub fn read_at(&mut self, off: u64, out: &mut [u8]) -> Result<usize, Errno> {
        self.learn_size()?;
        if off >= self.size || out.is_empty() {
            return Ok(0);
        }
        let n = (out.len() as u64).min(self.size - off) as usize;
        let first = (off / PAGE) as usize;
        let last = ((off + n as u64 - 1) / PAGE) as usize;
        self.ensure(first, last, false)?;
        // Fetching from the host may have found the file shorter.
        let n = n.min(self.size.saturating_sub(off) as usize);
        let mut done = 0;
        while done < n {
            let pos = off + done as u64;
            let page = (pos / PAGE) as usize;
            let in_page = (pos % PAGE) as usize;
            let len = (PAGE as usize - in_page).min(n - done);
            let frame = self.pages[page];
            if frame == 0 {
                out[done..done + len].fill(0);
            } else {
                let src = crate::rt::phys_slice(frame + in_page as u64, len as u64);
                out[done..done + len].copy_from_slice(src);
            }
            done += len;
        }
        Ok(n)
    }

    /// Writes `data` at `off`, growing the file; returns the count.
    /// Out of memory midway, it writes what fits (as tmpfs, a short
    /// write; ENOSPC when nothing does).
    pub fn write_at(&mut self, off: u64, mut data: &[u8]) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = off.checked_add(data.len() as u64).ok_or(EFBIG)?;
        if end > (1 << 40) {
            return Err(EFBIG);
        }
        let first = (off / PAGE) as usize;
        let last = ((end - 1) / PAGE) as usize;
        if self.host.is_some() {
            // A run's file read as it is used ([`own_run_files`]): all of
            // it is fetched before it changes, so its size is its own.
            self.own_data()?;
        }
        if self.pinned {
            // Fetch everything before taking private copies.
            self.ensure(0, self.page_count().max(1) - 1, false)?;
            self.unshare()?;
        }
        if let Err(e) = self.ensure(first, last, true) {
            if e != ENOMEM {
                return Err(e);
            }
            // Pages are allocated in order: those from `first` on are ours.
            let have = (first..=last).take_while(|&i| self.pages.get(i).is_some_and(|&p| p != 0)).count();
            let fits = ((first + have) as u64 * PAGE).saturating_sub(off).min(data.len() as u64) as usize;
            if fits == 0 {
                return Err(ENOSPC);
            }
            data = &data[..fits];
        }
        let end = off + data.len() as u64;
        let mut done = 0;
        while done < data.len() {
            let pos = off + done as u64;
            let page = (pos / PAGE) as usize;
            let in_page = (pos % PAGE) as usize;
            let len = (PAGE as usize - in_page).min(data.len() - done);
            // SAFETY: the page's frame is ours (ensured above); the range
            // stays within it.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data[done..].as_ptr(),
                    crate::rt::phys_ptr(self.pages[page] + in_page as u64),
                    len,
                )
            };
            done += len;
        }
        self.size = self.size.max(end);
        Ok(data.len())
    }

    /// Sets the size; frames past it are freed, or, while shared mappings
    /// may still show them, kept until the file goes (see
    /// [`truncate_unmapped`](Self::truncate_unmapped)).
    pub fn truncate(&mut self, len: u64) -> Result<(), Errno> {
        let hold = self.shared.maps > 0;
        self.cut(len, hold)
    }

    /// A truncate once no page table maps the pages past `len` any more
    /// (`shm.rs` took them out): their frames are freed at once.
    pub fn truncate_unmapped(&mut self, len: u64) -> Result<(), Errno> {
        self.cut(len, false)
    }

    fn cut(&mut self, len: u64, hold: bool) -> Result<(), Errno> {
        if len > (1 << 40) {
            return Err(EFBIG);
        }
        if self.host.is_some() && len > 0 {
            // Fetch what stays, then drop the link to the host: pages
            // the file grows by later are zeros, not the host's.
            let last = ((len.min(self.size).max(1) - 1) / PAGE) as usize;
            self.ensure(0, last, false)?;
            self.host = None;
        }
        if self.pinned {
            self.pinned = false;
            // The old frames stay with their mappings.
            self.pages = Vec::new();
            self.host = None;
            if len > 0 {
                return Err(ETXTBSY);
            }
            self.size = 0;
            return Ok(());
        }
        let keep = len.div_ceil(PAGE) as usize;
        if hold && self.pages.len() > keep {
            let cut = self.pages.len() - keep;
            self.shared.detached.try_reserve(cut).map_err(|_| ENOMEM)?;
        }
        while self.pages.len() > keep {
            if let Some(f) = self.pages.pop() {
                if f != 0 && hold {
                    // Still mapped somewhere: freed with the file.
                    self.shared.detached.push(f);
                } else if f != 0 {
                    mm::free_data_frame(f);
                }
            }
        }
        // Zero the tail of the last kept page.
        if !len.is_multiple_of(PAGE) {
            if let Some(&f) = self.pages.get(keep - 1) {
                if f != 0 {
                    let at = len % PAGE;
                    // SAFETY: within one frame we own.
                    unsafe { core::ptr::write_bytes(crate::rt::phys_ptr(f + at), 0, (PAGE - at) as usize) };
                }
            }
        }
        self.size = len;
        if len == 0 {
            self.host = None;
        }
        Ok(())
    }

    /// Frame holding page `index`, loading or allocating it.
    pub fn frame(&mut self, index: usize) -> Result<u64, Errno> {
        self.ensure(index, index, true)?;
        Ok(self.pages[index])
    }
}

impl Drop for FileData {
    fn drop(&mut self) {
        for &f in &self.shared.detached {
            mm::free_data_frame(f);
        }
        if self.pinned {
            return;
        }
        for &f in &self.pages {
            if f != 0 {
                mm::free_data_frame(f);
            }
        }
    }
}

// --- directories ---------------------------------------------------------------

/// The parent of a directory (the root is its own parent).
pub fn parent_of(dir: &NodeRef) -> NodeRef {
    if let NodeKind::Dir(d) = &dir.kind {
        if let Some(p) = d.borrow().parent.upgrade() {
            return p;
        }
    }
    match dir.kind {
        NodeKind::ProcFd(pid) => Node::new(S_IFDIR | 0o555, NodeKind::Proc(Some(pid))),
        NodeKind::Proc(Some(_)) => proc_root(),
        _ => root(),
    }
}

/// Looks up one name in a directory.
pub fn lookup(dir: &NodeRef, name: &[u8]) -> Result<NodeRef, Errno> {
    if name.len() > afs::NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    match &dir.kind {
        NodeKind::Dir(d) => {
            let handle = {
                let d = d.borrow();
                if let Some(n) = d.entries.get(name) {
                    return Ok(n.clone());
                }
                match &d.host {
                    Some(h) if !h.missing.contains(name) => h.handle,
                    _ => return Err(ENOENT),
                }
            };
            // What the host says is cached here: only with room for it.
            if !crate::heap::has_room() {
                return Err(ENOMEM);
            }
            remember(dir, name, host_lookup(handle, name))
        }
        &NodeKind::ProcFd(pid) => {
            let fd = parse_u32(name).ok_or(ENOENT)?;
            let path = (PROC_SELF.get().fd_path)(pid, fd).ok_or(ENOENT)?;
            let link = new_symlink(&path);
            if path.first() != Some(&b'/') && pid == (PROC_SELF.get().current_pid)() {
                if let NodeKind::Symlink(l) = &link.kind {
                    l.borrow_mut().fd = Some(fd);
                }
            }
            Ok(link)
        }
        &NodeKind::Proc(pid) => proc_lookup(pid, name),
        _ => Err(ENOTDIR),
    }
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
}

/// A symlink's target.
pub fn readlink(node: &NodeRef) -> Result<Vec<u8>, Errno> {
    let NodeKind::Symlink(l) = &node.kind else { return Err(EINVAL) };
    let mut l = l.borrow_mut();
    if let Some(t) = &l.target {
        return Ok(t.clone());
    }
    let h = l.host.ok_or(EIO)?;
    let mut buf = [0u8; afs::PATH_MAX];
    let n = hret(hc::call6(hcn::FS_READLINK, [h, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0]))? as usize;
    let t = buf.get(..n).ok_or(EIO)?.to_vec();
    l.target = Some(t.clone());
    Ok(t)
}

/// Entries of a directory for getdents: (name, ino, dtype), with `.` and `..`.
pub fn list(dir: &NodeRef) -> Result<Vec<DirEntry>, Errno> {
    let mut out: Vec<DirEntry> = Vec::new();
    out.push((b".".to_vec(), dir.meta.borrow().ino, 4));
    out.push((b"..".to_vec(), parent_of(dir).meta.borrow().ino, 4));
    match &dir.kind {
        NodeKind::Dir(d) => {
            let d = d.borrow();
            let mut seen = BTreeSet::new();
            for (name, n) in &d.entries {
                // A copy of a large directory's names: only with room.
                if !crate::heap::has_room() {
                    return Err(ENOMEM);
                }
                seen.insert(name.clone());
                out.push((name.clone(), n.meta.borrow().ino, dtype(n.mode())));
            }
            if let Some(h) = &d.host {
                for (name, ino, t) in host_list(h.handle)? {
                    if !seen.contains(&name) {
                        out.try_reserve(1).map_err(|_| ENOMEM)?;
                        out.push((name, ino, t));
                    }
                }
            }
        }
        &NodeKind::Proc(pid) => proc_list(pid, &mut out),
        &NodeKind::ProcFd(pid) => {
            for fd in (PROC_SELF.get().open_fds)(pid) {
                let mut name = Vec::new();
                push_num(&mut name, fd as u64);
                out.push((name, 0x1000 + fd as u64, 10));
            }
        }
        _ => return Err(ENOTDIR),
    }
    Ok(out)
}

pub fn dtype(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFDIR => 4,
        S_IFREG => 8,
        S_IFLNK => 10,
        S_IFCHR => 2,
        S_IFIFO => 1,
        _ => 0,
    }
}

pub fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = 20;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

// --- path resolution --------------------------------------------------------------

/// Resolves `path` from `base` (or the root for absolute paths); follows a
/// final symlink when `follow`.
pub fn resolve(base: &NodeRef, path: &[u8], follow: bool) -> Result<NodeRef, Errno> {
    let mut links = 0;
    walk(base.clone(), path, follow, &mut links)
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty())
}

fn walk(base: NodeRef, path: &[u8], follow: bool, links: &mut u32) -> Result<NodeRef, Errno> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() > afs::PATH_MAX {
        return Err(ENAMETOOLONG);
    }
    let must_be_dir = path.last() == Some(&b'/');
    let mut cur = if path[0] == b'/' { root() } else { base };
    let comps: Vec<&[u8]> = components(path).collect();
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        if !cur.is_dir() {
            return Err(ENOTDIR);
        }
        // Every name is looked up in a directory the user may search.
        if !permitted(&cur, 1) {
            return Err(EACCES);
        }
        if *name == b"." {
            continue;
        }
        if *name == b".." {
            cur = parent_of(&cur);
            continue;
        }
        if !last {
            look_ahead(&cur, &comps[i..]);
        }
        let child = lookup(&cur, name)?;
        if last && follow && fd_link(&child).is_some() {
            // Opened as the descriptor itself (see `fd_link`).
            return Ok(child);
        }
        if child.is_symlink() && (!last || follow || must_be_dir) {
            *links += 1;
            if *links > MAX_LINKS {
                return Err(ELOOP);
            }
            let mut rest = readlink(&child)?;
            for c in &comps[i + 1..] {
                rest.push(b'/');
                rest.extend_from_slice(c);
            }
            if must_be_dir {
                rest.push(b'/');
            }
            return walk(cur, &rest, follow, links);
        }
        cur = child;
    }
    if must_be_dir && !cur.is_dir() {
        return Err(ENOTDIR);
    }
    Ok(cur)
}

/// The path of the file `path` (from `base`) names with no symlink or
/// `.`/`..` in it, as Linux shows a program's (`/proc/<pid>/exe`, the
/// names in `/proc/<pid>/maps`); None if it does not resolve to a file.
pub fn real_path(base: &NodeRef, path: &[u8]) -> Option<Vec<u8>> {
    let (mut dir, mut name) = resolve_parent(base, path).ok()?;
    for _ in 0..MAX_LINKS {
        let node = lookup(&dir, &name).ok()?;
        if !matches!(node.kind, NodeKind::Symlink(_)) {
            if node.is_dir() {
                return None;
            }
            let mut out = path_of(&dir).ok()?;
            if out != b"/" {
                out.push(b'/');
            }
            out.extend_from_slice(&name);
            return Some(out);
        }
        let target = readlink(&node).ok()?;
        (dir, name) = resolve_parent(&dir, &target).ok()?;
    }
    None
}

/// Resolves all but the last component: (directory, last name). The name
/// is never empty; it may be `.` or `..` (callers refuse those where Linux
/// does).
pub fn resolve_parent(base: &NodeRef, path: &[u8]) -> Result<(NodeRef, Vec<u8>), Errno> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() > afs::PATH_MAX {
        return Err(ENAMETOOLONG);
    }
    let trimmed = {
        let mut end = path.len();
        while end > 1 && path[end - 1] == b'/' {
            end -= 1;
        }
        &path[..end]
    };
    match trimmed.iter().rposition(|&c| c == b'/') {
        None => {
            if !base.is_dir() {
                return Err(ENOTDIR);
            }
            Ok((base.clone(), trimmed.to_vec()))
        }
        Some(pos) => {
            let name = &trimmed[pos + 1..];
            if name.is_empty() {
                // The path is "/" itself.
                return Ok((root(), b".".to_vec()));
            }
            let dir_path = if pos == 0 { &b"/"[..] } else { &trimmed[..pos + 1] };
            let dir = resolve(base, dir_path, true)?;
            if !dir.is_dir() {
                return Err(ENOTDIR);
            }
            Ok((dir, name.to_vec()))
        }
    }
}

/// The absolute path of a directory, for getcwd.
/// ENAMETOOLONG past `PATH_MAX` bytes (as Linux's getcwd).
pub fn path_of(node: &NodeRef) -> Result<Vec<u8>, Errno> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut len = 0;
    let mut cur = node.clone();
    loop {
        if len > afs::PATH_MAX {
            return Err(ENAMETOOLONG);
        }
        let parent = parent_of(&cur);
        if Rc::ptr_eq(&parent, &cur) {
            break;
        }
        let name = match &parent.kind {
            NodeKind::Dir(d) => d.borrow().entries.iter().find(|(_, n)| Rc::ptr_eq(n, &cur)).map(|(k, _)| k.clone()),
            _ => None,
        };
        let name = name.unwrap_or_else(|| b"(unreachable)".to_vec());
        len += name.len() + 1;
        parts.push(name);
        cur = parent;
    }
    let mut out = Vec::new();
    for p in parts.iter().rev() {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// Lexically normalises `path` against the working directory, for the
/// record of an open file's path (a directory too deep to name counts as
/// "/...").
pub fn absolute(base: &NodeRef, path: &[u8]) -> Vec<u8> {
    let mut full =
        if path.first() == Some(&b'/') { Vec::new() } else { path_of(base).unwrap_or_else(|_| b"/...".to_vec()) };
    full.push(b'/');
    full.extend_from_slice(path);
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in components(&full) {
        match c {
            b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

// --- changes ------------------------------------------------------------------------

fn dir_of(node: &NodeRef) -> Result<&RefCell<Dir>, Errno> {
    match &node.kind {
        NodeKind::Dir(d) => Ok(d),
        NodeKind::ProcFd(_) | NodeKind::Proc(_) => Err(EACCES),
        _ => Err(ENOTDIR),
    }
}

fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > afs::NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    if name == b"." || name == b".." {
        return Err(EEXIST);
    }
    Ok(())
}

/// Adds `node` as `name` in `dir`.
pub fn link_into(dir: &NodeRef, name: &[u8], node: NodeRef) -> Result<(), Errno> {
    check_name(name)?;
    let d = dir_of(dir)?;
    // As Linux: an existing name is EEXIST, even where nothing could be
    // created.
    match lookup(dir, name) {
        Ok(_) => return Err(EEXIST),
        Err(ENOENT) => {}
        Err(e) => return Err(e),
    }
    if dir.readonly() {
        return Err(EROFS);
    }
    // tmpfs's answer when its memory is gone.
    if !crate::heap::has_room() {
        return Err(ENOSPC);
    }
    if let NodeKind::Dir(nd) = &node.kind {
        nd.borrow_mut().parent = Rc::downgrade(dir);
        dir.meta.borrow_mut().nlink += 1;
    }
    d.borrow_mut().entries.insert(name.to_vec(), node);
    dir.touch();
    Ok(())
}

/// A new file `name` in `dir` with `mode` (the caller's umask applied).
/// A new named pipe `name` in `dir` (mknod S_IFIFO; umask applied).
pub fn create_fifo(dir: &NodeRef, name: &[u8], mode: u32) -> Result<(), Errno> {
    link_into(dir, name, Node::new(S_IFIFO | (mode & 0o7777), NodeKind::Dev(Dev::Fifo)))
}

/// A new socket name `name` in `dir` (bind, mknod S_IFSOCK; umask applied).
pub fn create_socket_node(dir: &NodeRef, name: &[u8], mode: u32) -> Result<NodeRef, Errno> {
    let node = Node::new(S_IFSOCK | (mode & 0o7777), NodeKind::Dev(Dev::Socket));
    link_into(dir, name, node.clone())?;
    Ok(node)
}

pub fn create_file(dir: &NodeRef, name: &[u8], mode: u32) -> Result<NodeRef, Errno> {
    let node = new_file(mode);
    link_into(dir, name, node.clone())?;
    Ok(node)
}

/// A new directory `name` in `dir` with `mode` (the caller's umask
/// applied).
pub fn mkdir(dir: &NodeRef, name: &[u8], mode: u32) -> Result<NodeRef, Errno> {
    let node = new_dir(dir, mode);
    link_into(dir, name, node.clone())?;
    Ok(node)
}

pub fn symlink(dir: &NodeRef, name: &[u8], target: &[u8]) -> Result<(), Errno> {
    if target.is_empty() {
        return Err(ENOENT);
    }
    link_into(dir, name, new_symlink(target))
}

/// Removes `name` from `dir`: a non-directory (`want_dir` false) or an
/// empty directory (`want_dir` true).
pub fn remove(dir: &NodeRef, name: &[u8], want_dir: bool) -> Result<(), Errno> {
    if name == b"." {
        return Err(EINVAL);
    }
    if name == b".." {
        return Err(ENOTEMPTY);
    }
    let node = lookup(dir, name)?;
    let d = dir_of(dir)?;
    if dir.readonly() {
        return Err(EROFS);
    }
    match (&node.kind, want_dir) {
        (NodeKind::Dir(nd), true) => {
            let nd = nd.borrow();
            if !nd.entries.is_empty() || nd.host.is_some() {
                return Err(if nd.host.is_some() { EBUSY } else { ENOTEMPTY });
            }
            dir.meta.borrow_mut().nlink -= 1;
        }
        (NodeKind::Dir(_), false) => return Err(EISDIR),
        (_, true) => return Err(ENOTDIR),
        (_, false) => {
            let mut m = node.meta.borrow_mut();
            m.nlink = m.nlink.saturating_sub(1);
        }
    }
    d.borrow_mut().entries.remove(name);
    dir.touch();
    Ok(())
}

fn is_ancestor(a: &NodeRef, b: &NodeRef) -> bool {
    let mut cur = b.clone();
    for _ in 0..4096 {
        if Rc::ptr_eq(a, &cur) {
            return true;
        }
        let p = parent_of(&cur);
        if Rc::ptr_eq(&p, &cur) {
            return false;
        }
        cur = p;
    }
    false
}

pub fn rename(odir: &NodeRef, oname: &[u8], ndir: &NodeRef, nname: &[u8], noreplace: bool) -> Result<(), Errno> {
    if oname == b"." || oname == b".." || nname == b"." || nname == b".." {
        return Err(EBUSY);
    }
    check_name(nname)?;
    let node = lookup(odir, oname)?;
    if odir.readonly() || ndir.readonly() {
        return Err(EROFS);
    }
    // Checked before anything moves (link_into below checks it again).
    if !crate::heap::has_room() {
        return Err(ENOSPC);
    }
    dir_of(ndir)?;
    if node.is_dir() && is_ancestor(&node, ndir) {
        return Err(EINVAL);
    }
    match lookup(ndir, nname) {
        Ok(existing) => {
            if Rc::ptr_eq(&existing, &node) {
                return Ok(());
            }
            if noreplace {
                return Err(EEXIST);
            }
            match (node.is_dir(), existing.is_dir()) {
                (true, true) => remove(ndir, nname, true)?,
                (false, false) => remove(ndir, nname, false)?,
                (true, false) => return Err(ENOTDIR),
                (false, true) => return Err(EISDIR),
            }
        }
        Err(ENOENT) => {}
        Err(e) => return Err(e),
    }
    dir_of(odir)?.borrow_mut().entries.remove(oname);
    if node.is_dir() {
        odir.meta.borrow_mut().nlink -= 1;
    }
    odir.touch();
    link_into(ndir, nname, node)
}

/// Creates every missing directory of `path` (absolute), like `mkdir -p`.
fn mkdir_p(path: &[u8]) -> Result<NodeRef, Errno> {
    let mut cur = root();
    for c in components(path) {
        cur = match lookup(&cur, c) {
            Ok(n) if n.is_dir() => n,
            Ok(_) => return Err(ENOTDIR),
            Err(ENOENT) => {
                let d = new_dir(&cur, 0o755);
                dir_of(&cur)?.borrow_mut().entries.insert(c.to_vec(), d.clone());
                d
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// Puts `node` at absolute `path`, replacing whatever was there.
fn graft(path: &[u8], node: NodeRef) -> Result<(), Errno> {
    let (dir, name) = resolve_parent(&root(), path)?;
    if name == b"." || name == b".." {
        return Err(EINVAL);
    }
    if let NodeKind::Dir(nd) = &node.kind {
        nd.borrow_mut().parent = Rc::downgrade(&dir);
    }
    dir_of(&dir)?.borrow_mut().entries.insert(name, node);
    Ok(())
}

// --- start and end ----------------------------------------------------------------------

fn add_file(path: &[u8], mode: u32, data: &[u8]) {
    let f = new_file(mode);
    if let NodeKind::File(fd) = &f.kind {
        let _ = fd.borrow_mut().write_at(0, data);
    }
    let _ = graft(path, f);
}

/// Builds the tree: the standard directories and devices, then the host's
/// manifest (mounts, files, directories, working directory).
pub fn init(_info: &abi::BootInfo) {
    let root = Rc::new(Node {
        meta: RefCell::new(new_meta(S_IFDIR | 0o755)),
        kind: NodeKind::Dir(RefCell::new(Dir { entries: BTreeMap::new(), parent: Weak::new(), host: None })),
    });
    root.meta.borrow_mut().uid = 0;
    root.meta.borrow_mut().gid = 0;
    *ROOT.get() = Some(root.clone());
    let _ = mkdir_p(b"/tmp").map(|t| t.meta.borrow_mut().mode = S_IFDIR | 0o1777);
    if let Ok(dev) = mkdir_p(b"/dev") {
        for (name, kind) in [
            (b"null" as &[u8], Dev::Null),
            (b"zero", Dev::Zero),
            (b"full", Dev::Full),
            (b"random", Dev::Random),
            (b"urandom", Dev::Random),
        ] {
            let n = Node::new(S_IFCHR | 0o666, NodeKind::Dev(kind));
            if let NodeKind::Dir(d) = &dev.kind {
                d.borrow_mut().entries.insert(name.to_vec(), n);
            }
        }
        for (name, target) in [
            (b"stdin" as &[u8], b"/proc/self/fd/0" as &[u8]),
            (b"stdout", b"/proc/self/fd/1"),
            (b"stderr", b"/proc/self/fd/2"),
            (b"fd", b"/proc/self/fd"),
        ] {
            let _ = symlink(&dev, name, target);
        }
        let _ = mkdir_p(b"/dev/shm").map(|t| t.meta.borrow_mut().mode = S_IFDIR | 0o1777);
        for (name, kind) in [(b"ptmx" as &[u8], Dev::Ptmx), (b"tty", Dev::Tty)] {
            let n = Node::new(S_IFCHR | 0o666, NodeKind::Dev(kind));
            n.meta.borrow_mut().uid = 0;
            if let NodeKind::Dir(d) = &dev.kind {
                d.borrow_mut().entries.insert(name.to_vec(), n);
            }
        }
        if let Ok(pts) = mkdir_p(b"/dev/pts") {
            pts.meta.borrow_mut().mode = S_IFDIR | 0o755;
            pts.meta.borrow_mut().uid = 0;
            pts.meta.borrow_mut().gid = 0;
        }
        if let Ok(hv) = mkdir_p(b"/dev/hvsandbox") {
            let n = Node::new(S_IFCHR | 0o444, NodeKind::Dev(Dev::Checkpoint));
            let env = Node::new(S_IFCHR | 0o444, NodeKind::Dev(Dev::Env));
            if let NodeKind::Dir(d) = &hv.kind {
                d.borrow_mut().entries.insert(b"checkpoint".to_vec(), n);
                d.borrow_mut().entries.insert(b"env".to_vec(), env);
            }
        }
    }
    let proc = Node::new(S_IFDIR | 0o555, NodeKind::Proc(None));
    proc.meta.borrow_mut().uid = 0;
    proc.meta.borrow_mut().gid = 0;
    let _ = graft(b"/proc", proc);
    sys_tree();
    let _ = mkdir_p(b"/etc");
    add_file(b"/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/tmp:/bin/sh\n");
    add_file(b"/etc/group", 0o644, b"root:x:0:\nsandbox:x:1000:\n");
    add_file(b"/etc/hostname", 0o644, b"hvsandbox\n");
}

/// `/sys`: [`SYSFS_FILES`] in root's directories.
fn sys_tree() {
    for (i, path) in SYSFS_FILES.iter().enumerate() {
        let mut full = b"/sys/".to_vec();
        full.extend_from_slice(path);
        let Some(slash) = full.iter().rposition(|&c| c == b'/') else { continue };
        let Ok(dir) = mkdir_p(&full[..slash]) else { continue };
        let file = Node::new(S_IFREG | 0o444, NodeKind::Dev(Dev::Sys(i as u8)));
        file.meta.borrow_mut().uid = 0;
        file.meta.borrow_mut().gid = 0;
        if let NodeKind::Dir(d) = &dir.kind {
            d.borrow_mut().entries.insert(full[slash + 1..].to_vec(), file);
        }
    }
    // Its directories are root's and read-only, as sysfs's are.
    let mut dirs = alloc::vec![resolve(&root(), b"/sys", false)];
    while let Some(Ok(d)) = dirs.pop() {
        d.meta.borrow_mut().mode = S_IFDIR | 0o555;
        d.meta.borrow_mut().uid = 0;
        d.meta.borrow_mut().gid = 0;
        if let NodeKind::Dir(entries) = &d.kind {
            dirs.extend(entries.borrow().entries.values().filter(|n| n.is_dir()).map(|n| Ok(n.clone())));
        }
    }
}

fn pts_dir() -> Option<NodeRef> {
    resolve(&root(), b"/dev/pts", true).ok()
}

/// Adds /dev/pts/`index` (a new pseudo-terminal's slave side).
pub fn pts_add(index: u32) -> Result<(), Errno> {
    let dir = pts_dir().ok_or(ENOENT)?;
    let NodeKind::Dir(d) = &dir.kind else { return Err(ENOTDIR) };
    let n = Node::new(S_IFCHR | 0o620, NodeKind::Dev(Dev::Pts(index)));
    n.meta.borrow_mut().gid = 5; // tty
    d.borrow_mut().entries.insert(decimal(index as u64), n);
    Ok(())
}

/// Removes /dev/pts/`index` (its master side closed).
pub fn pts_remove(index: u32) {
    if let Some(dir) = pts_dir() {
        if let NodeKind::Dir(d) = &dir.kind {
            d.borrow_mut().entries.remove(&decimal(index as u64));
        }
    }
}

/// The program the host placed in RAM, as a file at `path` (unless the
/// filesystem already has one there). Its frames are used in place. With
/// `host_ino` (not 0) it has the host file's identity, as the same file
/// reached through a mount has: `/proc/<pid>/maps` names its segments so,
/// and a stat of `/proc/self/exe` agrees.
pub fn add_image(path: &[u8], gpa: u64, len: u64, host_ino: u64) -> Result<NodeRef, Errno> {
    let npages = len.div_ceil(PAGE);
    let mut pages = Vec::new();
    pages.try_reserve(npages as usize).map_err(|_| ENOMEM)?;
    for i in 0..npages {
        pages.push(gpa + i * PAGE);
    }
    mm::count_foreign_frames(npages);
    let node = Node::new(
        S_IFREG | 0o755,
        NodeKind::File(RefCell::new(FileData {
            pages,
            size: len,
            host: None,
            readonly: false,
            pinned: true,
            shared: SharedUse::default(),
        })),
    );
    if host_ino != 0 {
        let mut m = node.meta.borrow_mut();
        m.dev = HOST_DEV;
        m.ino = host_ino;
    }
    if path.first() == Some(&b'/') && resolve(&root(), path, true).is_err() {
        if let Some(pos) = path.iter().rposition(|&c| c == b'/') {
            if mkdir_p(&path[..pos]).is_ok() {
                let _ = graft(path, node.clone());
            }
        }
    }
    Ok(node)
}

/// The guest paths host directories are mounted at (what `/proc/mounts`
/// lists), in the order the manifest gave them.
static MOUNT_POINTS: Global<Vec<Vec<u8>>> = Global::new(Vec::new());
const MAX_MOUNT_POINTS: usize = 256;

pub fn mount_points() -> Vec<Vec<u8>> {
    MOUNT_POINTS.get().clone()
}

/// The run's files (manifest `ENTRY_FILE`s) that may still read pages
/// from their host handle.
static RUN_FILES: Global<Vec<Weak<Node>>> = Global::new(Vec::new());

/// Reads what the run's files still have on the host into guest frames
/// and drops their handles, which belong to this run only: a snapshot
/// taken next must not depend on them. A file that cannot be read whole
/// (guest memory full) ends the guest: the snapshot would lose it.
pub fn own_run_files() {
    for f in core::mem::take(RUN_FILES.get()) {
        if let Some(NodeKind::File(d)) = f.upgrade().as_ref().map(|n| &n.kind) {
            if d.borrow_mut().own_data().is_err() {
                crate::hc::panic(b"cannot read the run's files ahead of a snapshot");
            }
        }
    }
}

/// Applies the boot manifest (the run's mounts, files and directories).
pub fn apply_manifest(info: &abi::BootInfo) {
    if info.manifest_len == 0 {
        return;
    }
    apply_manifest_bytes(crate::rt::phys_slice(info.manifest_gpa, info.manifest_len));
}

/// Applies manifest records (at boot, or for a restored snapshot's run).
/// A record the decoder refuses is skipped (it stops at a cut one).
pub fn apply_manifest_bytes(bytes: &[u8]) {
    for e in afs::manifest_entries(bytes).flatten() {
        if e.path.first() != Some(&b'/') {
            continue;
        }
        let _ = apply_entry(&e, e.path);
    }
}

fn apply_entry(e: &afs::ManifestView<'_>, path: &[u8]) -> Result<(), Errno> {
    match e.kind {
        afs::ENTRY_MOUNT => {
            // The host sends its root's status along (no FS_STAT at boot;
            // the decoder refuses a mount record without it).
            let st = e.root.ok_or(EIO)?;
            if st.mode & S_IFMT != S_IFDIR {
                return Err(ENOTDIR);
            }
            let points = MOUNT_POINTS.get();
            if !points.iter().any(|p| p == path) && points.len() < MAX_MOUNT_POINTS {
                points.push(path.to_vec());
            }
            if let Some(pos) = path.iter().rposition(|&c| c == b'/') {
                mkdir_p(&path[..pos])?;
            }
            let parent = root();
            let node = host_node(e.handle, &st, &parent);
            graft(path, node)
        }
        afs::ENTRY_FILE => {
            if let Some(pos) = path.iter().rposition(|&c| c == b'/') {
                mkdir_p(&path[..pos])?;
            }
            let f = Node::new(
                S_IFREG | (e.mode & 0o7777),
                NodeKind::File(RefCell::new(FileData {
                    pages: Vec::new(),
                    size: e.size,
                    host: Some(e.handle),
                    readonly: false,
                    pinned: false,
                    shared: SharedUse::default(),
                })),
            );
            // Read as it is used (a file the program never reads costs
            // nothing); the handle belongs to this run only, so a
            // snapshot point reads what is left first ([`own_run_files`]),
            // and so does a change ([`FileData::write_at`]).
            let files = RUN_FILES.get();
            if let NodeKind::File(d) = &f.kind {
                let mut d = d.borrow_mut();
                if e.size == 0 || files.try_reserve(1).is_err() {
                    d.own_data()?;
                } else {
                    files.push(Rc::downgrade(&f));
                }
            }
            graft(path, f)
        }
        afs::ENTRY_DIR => mkdir_p(path).map(|_| ()),
        afs::ENTRY_CWD => {
            let d = mkdir_p(path)?;
            *BOOT_CWD.get() = Some(d);
            Ok(())
        }
        afs::ENTRY_COLLECT => {
            COLLECT.get().push(path.to_vec());
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Sends the files under the collected paths back to the host (at exit).
pub fn collect() {
    let paths = core::mem::take(COLLECT.get());
    for p in paths {
        if let Ok(node) = resolve(&root(), &p, true) {
            let mut path = p.clone();
            while path.len() > 1 && path.last() == Some(&b'/') {
                path.pop();
            }
            if send_tree(&path, &node, 0).is_err() {
                return;
            }
        }
    }
}

fn send_tree(path: &[u8], node: &NodeRef, depth: u32) -> Result<(), Errno> {
    if depth > 64 {
        return Ok(());
    }
    match &node.kind {
        NodeKind::File(f) => send_file(path, &mut f.borrow_mut(), node.mode()),
        NodeKind::Dir(d) => {
            if d.borrow().host.is_some() {
                return Ok(());
            }
            let children: Vec<(Vec<u8>, NodeRef)> =
                d.borrow().entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (name, child) in children {
                let mut cp = path.to_vec();
                if cp.last() != Some(&b'/') {
                    cp.push(b'/');
                }
                cp.extend_from_slice(&name);
                send_tree(&cp, &child, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn send_file(path: &[u8], f: &mut FileData, mode: u32) -> Result<(), Errno> {
    let buf = staging()?;
    let mut off = 0u64;
    loop {
        let n = f.read_at(off, &mut buf[..])?;
        if n == 0 && off > 0 {
            return Ok(());
        }
        hret(hc::call6(
            hcn::FILE_OUT,
            [path.as_ptr() as u64, path.len() as u64, buf.as_ptr() as u64, n as u64, off, (mode & 0o7777) as u64],
        ))?;
        if n == 0 {
            return Ok(());
        }
        off += n as u64;
    }
}

/// Permission check for the sandbox user (uid 1000) against `mode` bits:
/// `want` is a mask of 4 (read), 2 (write), 1 (execute/search).
pub fn permitted(node: &NodeRef, want: u32) -> bool {
    let m = node.meta.borrow();
    let bits = if m.uid == crate::rt::UID as u32 { (m.mode >> 6) & 7 } else { m.mode & 7 };
    bits & want == want
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_vfs;

    fn at(path: &[u8]) -> Result<NodeRef, Errno> {
        resolve(&root(), path, true)
    }

    fn same(a: &NodeRef, b: &NodeRef) -> bool {
        Rc::ptr_eq(a, b)
    }

    #[test]
    fn paths_resolve_through_dot_dotdot_and_symlinks() {
        let _g = fresh_vfs();
        let a = mkdir(&root(), b"a", 0o755).unwrap();
        let b = mkdir(&a, b"b", 0o755).unwrap();
        let f = create_file(&b, b"f", 0o644).unwrap();
        assert!(same(&at(b"/a/b/f").unwrap(), &f));
        assert!(same(&at(b"//a/./b//f").unwrap(), &f));
        assert!(same(&at(b"/a/b/../b/f").unwrap(), &f));
        assert!(same(&at(b"/../../a").unwrap(), &a), "the root is its own parent");
        assert!(same(&resolve(&b, b"../b/f", true).unwrap(), &f), "relative to a base");
        assert!(same(&resolve(&b, b"/a", true).unwrap(), &a), "absolute ignores the base");
        assert_eq!(at(b"/a/b/f/").err(), Some(ENOTDIR), "a file with a trailing slash");
        assert_eq!(at(b"/a/b/f/x").err(), Some(ENOTDIR));
        assert_eq!(at(b"/a/missing").err(), Some(ENOENT));
        assert_eq!(at(b"").err(), Some(ENOENT));
        let long = alloc::vec![b'x'; afs::PATH_MAX + 1];
        assert_eq!(at(&long).err(), Some(ENAMETOOLONG));
        // Symlinks: relative and absolute targets, in the middle and at
        // the end; a final one is followed only when asked.
        symlink(&root(), b"rel", b"a/b").unwrap();
        symlink(&a, b"abs", b"/a/b/f").unwrap();
        assert!(same(&at(b"/rel/f").unwrap(), &f));
        assert!(same(&at(b"/a/abs").unwrap(), &f));
        let link = resolve(&root(), b"/a/abs", false).unwrap();
        assert!(link.is_symlink());
        assert_eq!(readlink(&link).unwrap(), b"/a/b/f");
        assert!(same(&resolve(&root(), b"/rel/", false).unwrap(), &b), "a trailing slash follows");
        // Loops end with ELOOP.
        symlink(&root(), b"loop1", b"loop2").unwrap();
        symlink(&root(), b"loop2", b"/loop1").unwrap();
        assert_eq!(at(b"/loop1").err(), Some(ELOOP));
        assert_eq!(symlink(&root(), b"empty", b""), Err(ENOENT));
    }

    #[test]
    fn parents_and_absolute_paths() {
        let _g = fresh_vfs();
        let a = mkdir(&root(), b"a", 0o755).unwrap();
        let (d, name) = resolve_parent(&root(), b"/a/new//").unwrap();
        assert!(same(&d, &a));
        assert_eq!(name, b"new");
        let (d, name) = resolve_parent(&a, b"x").unwrap();
        assert!(same(&d, &a));
        assert_eq!(name, b"x");
        assert_eq!(resolve_parent(&root(), b"/").unwrap().1, b".");
        assert_eq!(resolve_parent(&root(), b"/nope/x").err(), Some(ENOENT));
        assert_eq!(resolve_parent(&root(), b"").err(), Some(ENOENT));
        assert_eq!(path_of(&a).unwrap(), b"/a");
        assert_eq!(path_of(&root()).unwrap(), b"/");
        assert_eq!(absolute(&a, b"../b/./c/.."), b"/b");
        assert_eq!(absolute(&a, b"x/y"), b"/a/x/y");
        assert_eq!(absolute(&a, b"/../.."), b"/");
    }

    #[test]
    fn tree_changes_keep_links_and_refuse_what_linux_refuses() {
        let _g = fresh_vfs();
        let r = root();
        let d = mkdir(&r, b"d", 0o755).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o755);
        assert_eq!(d.meta.borrow().nlink, 2);
        let sub = mkdir(&d, b"sub", 0o700).unwrap();
        assert_eq!(d.meta.borrow().nlink, 3, "a subdirectory's ..");
        let f = create_file(&d, b"f", 0o600).unwrap();
        assert_eq!(f.mode(), S_IFREG | 0o600);
        assert_eq!(create_file(&d, b"f", 0o600).err(), Some(EEXIST));
        assert_eq!(mkdir(&d, b"..", 0o755).err(), Some(EEXIST));
        let long = [b'n'; afs::NAME_MAX + 1];
        assert_eq!(mkdir(&d, &long, 0o755).err(), Some(ENAMETOOLONG));
        assert_eq!(create_file(&f, b"x", 0o600).err(), Some(ENOTDIR));
        // rmdir and unlink.
        assert_eq!(remove(&r, b"d", true), Err(ENOTEMPTY));
        assert_eq!(remove(&d, b"f", true), Err(ENOTDIR));
        assert_eq!(remove(&d, b"sub", false), Err(EISDIR));
        assert_eq!(remove(&d, b".", true), Err(EINVAL));
        // rename: into its own subtree, over a non-empty directory, over
        // a file, and a plain move.
        assert_eq!(rename(&r, b"d", &sub, b"x", false), Err(EINVAL));
        let g = create_file(&r, b"g", 0o644).unwrap();
        assert_eq!(rename(&r, b"g", &d, b"f", true), Err(EEXIST), "RENAME_NOREPLACE");
        rename(&r, b"g", &d, b"f", false).unwrap();
        assert!(same(&lookup(&d, b"f").unwrap(), &g));
        assert_eq!(lookup(&r, b"g").err(), Some(ENOENT));
        assert_eq!(rename(&d, b"f", &d, b"sub", false), Err(EISDIR));
        rename(&d, b"sub", &r, b"moved", false).unwrap();
        assert_eq!(d.meta.borrow().nlink, 2);
        assert!(same(&parent_of(&sub), &r));
        assert_eq!(path_of(&sub).unwrap(), b"/moved");
        remove(&d, b"f", false).unwrap();
        remove(&r, b"d", true).unwrap();
        assert_eq!(lookup(&r, b"d").err(), Some(ENOENT));
        // Listing: . and .., then the names in order.
        let names: Vec<Vec<u8>> = list(&r).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(&names[..2], [b".".to_vec(), b"..".to_vec()]);
        assert!(names.windows(2).skip(2).all(|w| w[0] < w[1]));
        assert!(names.contains(&b"moved".to_vec()) && !names.contains(&b"d".to_vec()));
    }

    #[test]
    fn the_standard_tree_and_proc_self() {
        let _g = fresh_vfs();
        assert_eq!(at(b"/tmp").unwrap().mode(), S_IFDIR | 0o1777);
        assert!(matches!(at(b"/dev/null").unwrap().kind, NodeKind::Dev(Dev::Null)));
        assert!(matches!(at(b"/dev/hvsandbox/checkpoint").unwrap().kind, NodeKind::Dev(Dev::Checkpoint)));
        assert!(at(b"/tmp").unwrap().meta.borrow().uid == crate::rt::UID as u32);
        assert_eq!(root().meta.borrow().uid, 0);
        assert!(!permitted(&root(), 2), "the root is root's");
        assert!(permitted(&at(b"/tmp").unwrap(), 7));
        // /proc/self answers through the process layer's hooks.
        set_proc_self(ProcSelf {
            current_pid: || 7,
            pids: || alloc::vec![1, 7],
            exe: |pid| (pid == 7).then(|| b"/bin/prog".to_vec()),
            fd_path: |pid, fd| match (pid, fd) {
                (7, 3) => Some(b"/tmp/three".to_vec()),
                (7, 5) => Some(b"pipe:[9]".to_vec()),
                _ => None,
            },
            open_fds: |pid| if pid == 7 { alloc::vec![0, 3] } else { alloc::vec![] },
            file: |_, _| None,
            cwd: |pid| (pid == 7).then(|| b"/tmp".to_vec()),
            tids: |pid| if pid == 7 { alloc::vec![7, 9] } else { alloc::vec![] },
            // (No frames for file data here: empty files.)
            thread_file: |_, tid, name| (tid == 9 || name != b"stat").then(Vec::new),
            fdinfo: |pid, fd| (pid == 7 && fd == 3).then(Vec::new),
            net: |_| None,
            sysfs: |path| (path == b"fs/cgroup/cpu.max").then(|| b"max 100000\n".to_vec()),
            comm: |tid| (tid == 9).then(|| b"nine\n".to_vec()),
            set_comm: |_, _| Err(EINVAL),
        });
        assert_eq!(readlink(&resolve(&root(), b"/proc/self/cwd", false).unwrap()).unwrap(), b"/tmp");
        assert!(resolve(&root(), b"/proc/self/cwd", true).unwrap().is_dir());
        assert_eq!(at(b"/proc/7/task").err(), Some(ENOENT), "thread 7 has no stat");
        set_proc_self(ProcSelf { thread_file: |_, _, _| Some(Vec::new()), ..*PROC_SELF.get() });
        let tids: Vec<Vec<u8>> = list(&at(b"/proc/7/task").unwrap()).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(tids, [b".".to_vec(), b"..".to_vec(), b"7".to_vec(), b"9".to_vec()]);
        let files: Vec<Vec<u8>> = list(&at(b"/proc/self/task/9").unwrap()).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(files[2..], [b"comm".to_vec(), b"stat".to_vec(), b"status".to_vec()]);
        assert_eq!(at(b"/proc/self/task/9/comm").unwrap().mode() & S_IFMT, S_IFREG);
        assert_eq!(at(b"/proc/7/task/8").err(), Some(ENOENT));
        assert_eq!(readlink(&resolve(&root(), b"/proc/self", false).unwrap()).unwrap(), b"7");
        let procs: Vec<Vec<u8>> = list(&at(b"/proc").unwrap()).unwrap().into_iter().map(|e| e.0).collect();
        assert!(procs.contains(&b"1".to_vec()) && procs.contains(&b"7".to_vec()) && procs.contains(&b"self".to_vec()));
        assert_eq!(at(b"/proc/2").err(), Some(ENOENT), "not a live process");
        assert_eq!(at(b"/proc/1/fd/3").err(), Some(ENOENT));
        // A pipe's descriptor resolves to the link itself (opened as the descriptor).
        assert_eq!(fd_link(&at(b"/dev/fd/5").unwrap()), Some(5));
        assert_eq!(fd_link(&resolve(&root(), b"/proc/self/fd/3", false).unwrap()), None);
        assert!(matches!(parent_of(&at(b"/proc/7/fd").unwrap()).kind, NodeKind::Proc(Some(7))));
        assert_eq!(readlink(&resolve(&root(), b"/proc/self/exe", false).unwrap()).unwrap(), b"/bin/prog");
        let fd3 = resolve(&root(), b"/proc/self/fd/3", false).unwrap();
        assert_eq!(readlink(&fd3).unwrap(), b"/tmp/three");
        assert_eq!(at(b"/proc/self/fd/4").err(), Some(ENOENT));
        // fdinfo: a file for each descriptor the hook answers for.
        assert!(at(b"/proc/self/fdinfo/3").is_ok());
        assert_eq!(at(b"/proc/self/fdinfo/0").err(), Some(ENOENT));
        assert_eq!(at(b"/proc/self/fd/03").err(), Some(ENOENT), "not a canonical number");
        let names: Vec<Vec<u8>> = list(&at(b"/proc/self/fd").unwrap()).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(names, [b".".to_vec(), b"..".to_vec(), b"0".to_vec(), b"3".to_vec()]);
    }
}
