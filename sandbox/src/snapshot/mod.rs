//! Snapshots: a guest frozen at a well-defined point — right after the
//! runtime loaded the program (before its first instruction), or at a
//! checkpoint the program asked for by reading `/dev/hvsandbox/checkpoint`
//! — that sandboxes start from instead of booting.
//!
//! The `Snapshot` type; its file format is `file.rs`.
//!
//! A snapshot is its guest RAM in a sealed memory file plus the vCPU's
//! registers. Sandboxes built from it map that file copy-on-write (no copy;
//! clones share every page they do not change) and, between runs, map it
//! afresh and put the registers back: nothing a run wrote survives, whatever
//! the guest claims. Snapshots can be saved to a file and loaded in another
//! process or on another host with the same runtime build. A snapshot file
//! is untrusted input: every field is bounded and checked before use, and
//! the host paths it records are never opened unless the caller names them
//! (see `SandboxBuilder::build_from`).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use hvsandbox_core::{abi, HugePages, VcpuState, Vm};

use crate::error::{Error, Result};
use crate::fs::{FsEntry, Mount};

mod file;
pub use file::reseal_for_fuzzing;
use file::{data_extent, memfd, seal, StoredPages};

/// Where a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotPoint {
    /// After the runtime loaded the program, before its first instruction:
    /// each run brings its own argv and environment.
    Entry,
    /// Where the program read `/dev/hvsandbox/checkpoint`: each run brings
    /// its own stdin, files, and the arguments that read returns.
    Checkpoint,
}

/// Allowed `max_processes` (see [`GuestLimits`]).
pub(crate) const MAX_PROCESSES_RANGE: std::ops::RangeInclusive<u32> = 1..=4096;
/// Allowed `max_open_files` (see [`GuestLimits`]).
pub(crate) const MAX_OPEN_FILES_RANGE: std::ops::RangeInclusive<u32> = 3..=65536;

/// Limits the guest runtime enforces itself, fixed when it boots: a
/// snapshot's guest keeps the ones it was booted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestLimits {
    pub(crate) max_processes: u32,
    pub(crate) max_open_files: u32,
}

/// A program's argv (never empty: argv[0] first) and environment
/// (KEY=VALUE strings), as it was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
}

impl Invocation {
    /// argv[0].
    pub(crate) fn argv0(&self) -> &[u8] {
        self.argv.first().map(Vec::as_slice).unwrap_or_default()
    }
}

/// A frozen guest that sandboxes can start from. Cheap to clone (shared),
/// immutable, `Send + Sync`.
#[derive(Clone)]
pub struct Snapshot(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    /// Guest RAM, sealed. A snapshot loaded from a file makes it only when
    /// something needs it (see [`Snapshot::memory_file`]): until then, VMs
    /// that copy the snapshot read its pages from `stored`.
    memory: std::sync::OnceLock<File>,
    /// Held while `memory` is made.
    making_memory: std::sync::Mutex<()>,
    /// Where a loaded snapshot's pages are in its file.
    stored: Option<StoredPages>,
    pub(crate) mem_size: u64,
    pub(crate) vcpu: VcpuState,
    pub(crate) point: SnapshotPoint,
    /// The argv (argv[0] first: an entry snapshot's runs keep it) and
    /// environment (KEY=VALUE) the snapshot's program was started with.
    pub(crate) started: Invocation,
    /// Read-only host directories the guest had mounted (with their kernel
    /// filesystem choice), in handle order: runs from the snapshot mount the
    /// same guest paths.
    pub(crate) mounts: Vec<Mount>,
    /// Read from a file: its host paths are untrusted, never opened unless
    /// the caller gives them (see `SandboxBuilder::build_from`).
    pub(crate) from_file: bool,
    /// The limits the guest runtime was booted with (they live in its
    /// memory).
    pub(crate) limits: GuestLimits,
    /// The host file service's handle table at the snapshot (the guest
    /// refers to host files by these handles).
    pub(crate) fs: Vec<FsEntry>,
    /// Bytes of guest RAM that hold data (the rest is zero).
    pub(crate) resident: u64,
    /// New VMs copy `memory` rather than map it ([`Snapshot::copy_memory`]).
    pub(crate) copy: std::sync::atomic::AtomicBool,
    /// The byte ranges of `memory` that hold data, once a copy is asked for
    /// (or once `memory` is made from `stored`).
    pub(crate) data: std::sync::OnceLock<Vec<(u64, u64)>>,
    /// The pages a run from this snapshot wrote (learned from the first
    /// reset in this process): a new clone writes them ahead of its first
    /// run (see `Vm::touch_pages`).
    pub(crate) hot: std::sync::OnceLock<Vec<u32>>,
    /// The guest frames that run touched, learned at the same time: a
    /// clone made ahead has the guest read them before its first run (see
    /// `Vm::prefault`).
    pub(crate) touched: std::sync::OnceLock<hvsandbox_core::FrameRanges>,
    /// Resets that found no measurement of the pages a run touched (the
    /// runs were cut short, say): after a few, runs stop measuring.
    pub(crate) touched_misses: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("point", &self.0.point)
            .field("memory", &self.0.mem_size)
            .field("resident", &self.0.resident)
            .finish()
    }
}

impl Snapshot {
    /// Puts `vm`'s vCPU in this snapshot's state.
    pub(crate) fn restore_vcpu_in(&self, vm: &mut Vm) -> Result<()> {
        vm.restore_vcpu(&self.0.vcpu)
            .map_err(|e| Error::SnapshotFailed(format!("KVM refused the snapshot's vCPU state: {e}")))
    }

    /// Where the snapshot was taken.
    pub fn point(&self) -> SnapshotPoint {
        self.0.point
    }

    /// Guest memory size, bytes: sandboxes from this snapshot have this much.
    pub fn memory_bytes(&self) -> u64 {
        self.0.mem_size
    }

    /// Bytes of guest memory that are not zero (what a saved file holds).
    pub fn resident_bytes(&self) -> u64 {
        self.0.resident
    }

    /// Most processes alive at once in its guest (fixed when the guest
    /// booted; see [`crate::SandboxBuilder::max_processes`]).
    pub fn max_processes(&self) -> u32 {
        self.0.limits.max_processes
    }

    /// Most open files per guest process (fixed when the guest booted; see
    /// [`crate::SandboxBuilder::max_open_files`]).
    pub fn max_open_files(&self) -> u32 {
        self.0.limits.max_open_files
    }

    /// The arguments (after argv[0]) its program was started with, when
    /// the snapshot was taken. An entry snapshot's runs get the arguments
    /// of their [`Command::resume`](crate::Command::resume) instead; to
    /// run it as it was taken, pass these:
    /// `Command::resume().args(snapshot.args())`.
    pub fn args(&self) -> impl Iterator<Item = &std::ffi::OsStr> {
        self.0.started.argv.iter().skip(1).map(|a| std::ffi::OsStr::from_bytes(a))
    }

    /// The environment its program was started with (the sandbox's and
    /// the command's), as (name, value). An entry snapshot's runs get the
    /// environment of their sandbox and command instead; add these to
    /// the command to start from the snapshot's.
    pub fn env(&self) -> impl Iterator<Item = (&std::ffi::OsStr, &std::ffi::OsStr)> {
        self.0.started.env.iter().map(|kv| {
            let eq = kv.iter().position(|&c| c == b'=').unwrap_or(kv.len());
            let value = kv.get(eq + 1..).unwrap_or_default();
            (std::ffi::OsStr::from_bytes(&kv[..eq]), std::ffi::OsStr::from_bytes(value))
        })
    }

    /// The read-only mounts its guest has, as (host directory when the
    /// snapshot was taken, guest path). A sandbox built from the snapshot
    /// must mount the same guest paths: see
    /// [`crate::SandboxBuilder::build_from`].
    pub fn mounts(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.0.mounts.iter().map(|m| (m.host.as_path(), m.guest.as_str()))
    }

    /// The snapshot's memory file, made now if it was not: a snapshot
    /// loaded from a file reads its pages there again (checked against the
    /// file's checksum). Only on a caller's thread: the jail of the vCPU
    /// and VM factory threads refuses `memfd_create`.
    pub(crate) fn memory_file(&self) -> Result<&File> {
        if let Some(memory) = self.0.memory.get() {
            return Ok(memory);
        }
        let _making = self.0.making_memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(memory) = self.0.memory.get() {
            return Ok(memory);
        }
        let stored = self.0.stored.as_ref().ok_or_else(no_memory_file)?;
        let memory = stored.to_memory_file(self.0.mem_size)?;
        Ok(self.0.memory.get_or_init(|| memory))
    }

    /// The snapshot's memory file, if it was made (see
    /// [`Snapshot::memory_file`]).
    pub(crate) fn memory_fd(&self) -> Result<BorrowedFd<'_>> {
        self.0.memory.get().map(File::as_fd).ok_or_else(no_memory_file)
    }

    /// Whether sandboxes built from the snapshot need its memory file: to
    /// map it (unless new VMs copy the snapshot's memory) or to reset
    /// their VM after a run (`reset_ahead`).
    pub(crate) fn needs_memory_file(&self, reset_ahead: bool) -> bool {
        !self.0.copy.load(std::sync::atomic::Ordering::Relaxed) || reset_ahead
    }

    /// Whether VMs made from now on for this snapshot (by any of its
    /// handles) get their own copy of its memory instead of mapping it
    /// copy-on-write (the default).
    ///
    /// Sharing costs no copy, and clones share every page they do not
    /// write. But on hosts whose KVM uses shadow paging, a fresh VM's
    /// guest then takes a hypervisor fault for each 4 KiB page it touches,
    /// writes copying it, where a VM with its own memory (anonymous, on
    /// transparent huge pages where the host has them) takes about as few
    /// as a booted one. Measured here, `python3 -c` resumed from its entry
    /// snapshot in a fresh VM: ~90 ms in the guest shared, ~30 ms copied
    /// (the copy: ~3 ms for its 11 MB). So copy for a snapshot that runs
    /// once or a few times in a process (the `hvsandbox` command's
    /// `--from-snapshot` does); share for pools and many clones, whose
    /// first runs a clone made ahead speeds up anyway (see
    /// [`Sandbox::warm`](crate::Sandbox::warm)).
    ///
    /// A snapshot [loaded](Snapshot::load) from a regular file and copied
    /// needs no memory file of its own: each new VM reads the pages from
    /// the file (kept open; it must not change while the snapshot is in
    /// use, or runs fail with `SnapshotInvalid`). Mapping it, or resetting
    /// a VM after a run ([`reset_ahead`](crate::SandboxBuilder::reset_ahead)),
    /// makes that memory file once, when a sandbox is built.
    pub fn copy_memory(&self, copy: bool) {
        match self.0.memory.get() {
            // The ranges that hold data, found here: the vCPU threads'
            // jail does not let them seek. (A loaded snapshot knew them
            // from its file.)
            Some(memory) if copy => {
                self.0.data.get_or_init(|| {
                    let mut data = Vec::new();
                    let mut at = 0;
                    while let Some((start, end)) = data_extent(memory.as_fd(), at, self.0.mem_size) {
                        data.push((start, end));
                        at = end;
                    }
                    data
                });
            }
            // Made here, on the caller's thread, for the VMs that map it:
            // a failure (the file changed) fails their sandboxes' runs.
            None if !copy => {
                let _ = self.memory_file();
            }
            _ => {}
        }
        self.0.copy.store(copy, std::sync::atomic::Ordering::Relaxed);
    }

    /// A new VM holding this snapshot's memory: mapped copy-on-write, or
    /// copied (see [`Snapshot::copy_memory`]), from its memory file or,
    /// with none made, straight from the snapshot's file. A copy's RAM
    /// comes from the host's hugetlb pool as `huge` says.
    pub(crate) fn new_vm(&self, huge: HugePages) -> Result<Vm> {
        let copy = self.0.copy.load(std::sync::atomic::Ordering::Relaxed);
        match (self.0.memory.get(), &self.0.stored) {
            (Some(memory), _) => match self.0.data.get().filter(|_| copy) {
                Some(data) => Vm::from_snapshot_copy(memory.as_fd(), self.0.mem_size, data, huge),
                None => Vm::from_snapshot_memory(memory.as_fd(), self.0.mem_size),
            }
            .map_err(Error::from),
            (None, Some(stored)) if copy => stored.new_vm(self.0.mem_size, huge),
            (None, _) => Err(no_memory_file()),
        }
    }

    /// Takes a snapshot of a stopped VM: its registers (already captured)
    /// and every page of RAM that holds data.
    pub(crate) fn capture(
        vm: &Vm,
        vcpu: VcpuState,
        point: SnapshotPoint,
        started: Invocation,
        mounts: Vec<Mount>,
        limits: GuestLimits,
        fs: Vec<FsEntry>,
    ) -> Result<Snapshot> {
        let (base, len) = vm.host_memory();
        let memory = memfd(len as u64)?;
        let page = abi::PAGE_SIZE as usize;
        let pages = len / page;
        // Pages the guest never touched are not resident and read as zero:
        // skip them (the file stays sparse).
        let mut resident = vec![0u8; pages];
        // SAFETY: `base..base+len` is the VM's guest RAM mapping, alive for
        // the duration of this call; `resident` has one byte per page.
        if unsafe { libc::mincore(base as *mut libc::c_void, len, resident.as_mut_ptr()) } != 0 {
            resident.fill(1);
        }
        let mut copied = 0u64;
        let mut i = 0;
        while i < pages {
            if resident[i] & 1 == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i < pages && resident[i] & 1 != 0 {
                i += 1;
            }
            // SAFETY: the range lies inside guest RAM (see above); the VM
            // is stopped, so nothing changes it meanwhile.
            let bytes = unsafe { std::slice::from_raw_parts(base.add(start * page), (i - start) * page) };
            memory.write_all_at(bytes, (start * page) as u64).map_err(|e| Error::Internal {
                context: "cannot write snapshot memory".into(),
                source: Some(std::sync::Arc::new(e)),
            })?;
            copied += bytes.len() as u64;
        }
        reopen_output_streams(vm, &memory, len as u64)?;
        seal(memory.as_fd())?;
        Ok(Snapshot(Arc::new(Inner {
            memory: std::sync::OnceLock::from(memory),
            making_memory: std::sync::Mutex::new(()),
            stored: None,
            mem_size: len as u64,
            vcpu,
            point,
            started,
            mounts,
            from_file: false,
            limits,
            fs,
            resident: copied,
            copy: std::sync::atomic::AtomicBool::new(false),
            data: std::sync::OnceLock::new(),
            hot: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            touched_misses: std::sync::atomic::AtomicU32::new(0),
        })))
    }

    /// Writes the snapshot to `path`: a versioned header (format, guest ABI
    /// and runtime build, CPU features, memory size, the guest's limits),
    /// the vCPU state, the mounts, the file handles, the runs of non-zero
    /// pages, then those pages, each part with its checksum (see
    /// `snapshot/file.rs`). Streams: guest memory goes
    /// from the snapshot's memory file to `path` a chunk at a time, never
    /// copied whole.
    ///
    /// A new file, or one that replaces a regular file, is written beside
    /// `path` and renamed over it once complete and synced: a reader never
    /// sees half a snapshot, and snapshots loaded from the file `path`
    /// named before keep reading theirs (see [`Snapshot::copy_memory`]).
    /// A symlink or another kind of file at `path` is written through, in
    /// place.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::SnapshotFile { path: path.display().to_string(), reason: e.to_string() };
        let memory = self.memory_file()?;
        let replace = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta.file_type().is_file(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        let Some(name) = path.file_name().filter(|_| replace) else {
            return file::encode(&self.0, path, memory).map_err(io);
        };
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut part = std::ffi::OsString::from(".");
        part.push(name);
        part.push(format!(".{}-{}.part", std::process::id(), SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let part = path.with_file_name(part);
        let written = file::encode(&self.0, &part, memory).and_then(|()| std::fs::rename(&part, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        written.map_err(io)
    }

    /// Reads a snapshot written by [`Snapshot::save`]. A file from another
    /// format or runtime build, for other CPU features, truncated,
    /// corrupted or not a snapshot at all is refused with `SnapshotInvalid`
    /// saying why.
    ///
    /// The file is untrusted input. Its fixed-size header is read first
    /// and checked (magic, versions, memory size, how much data follows),
    /// and every count and length after it is bounded before anything is
    /// allocated, so a huge, sparse or endless file (`/dev/zero`) is
    /// refused at once. Everything before the guest's pages is read and
    /// checked now. A regular file stays open and its pages are read where
    /// they are needed (a sandbox's build or run), checked against their
    /// own checksum there, so a corrupted page is refused then, with the
    /// same error kind; a stream's (a pipe's) pages are read and checked
    /// now, into a sealed memory file. The host directories the snapshot's guest had mounted are recorded
    /// but never opened from the file: see [`SandboxBuilder::build_from`].
    ///
    /// [`SandboxBuilder::build_from`]: crate::SandboxBuilder::build_from
    pub fn load(path: impl AsRef<Path>) -> Result<Snapshot> {
        let path = path.as_ref();
        let bad = |reason: String| Error::SnapshotFile { path: path.display().to_string(), reason };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if meta.is_dir() {
            return Err(bad("is a directory".into()));
        }
        // Only a regular file's length says anything (a pipe's or a
        // device's is 0): the rest is bounded as it is read. A regular
        // file stays open for its pages, which are read again where they
        // are needed; a stream's go into a memory file now.
        if !meta.is_file() {
            return Self::read_from(std::io::BufReader::with_capacity(1 << 20, file), None, None).map_err(bad);
        }
        let reader = file.try_clone().map_err(|e| bad(e.to_string()))?;
        let keep = Some((file, path.display().to_string()));
        Self::read_from(std::io::BufReader::with_capacity(1 << 20, reader), Some(meta.len()), keep).map_err(bad)
    }

    /// Parses a snapshot file's bytes; every field is checked (as by
    /// [`Snapshot::load`]).
    pub fn from_bytes(data: &[u8]) -> Result<Snapshot> {
        Self::read_from(data, Some(data.len() as u64), None)
            .map_err(|reason| Error::SnapshotFile { path: "(bytes)".into(), reason })
    }

    /// Decodes a snapshot from `src` (see [`file::decode`]).
    fn read_from(
        src: impl std::io::Read,
        len: Option<u64>,
        keep: Option<(File, String)>,
    ) -> std::result::Result<Snapshot, String> {
        let d = file::decode(src, len, keep)?;
        // The ranges that hold data, for VMs that copy them.
        let data = std::sync::OnceLock::new();
        if let Some(stored) = &d.stored {
            let _ = data.set(stored.byte_ranges());
        }
        Ok(Snapshot(Arc::new(Inner {
            memory: d.memory.map_or_else(std::sync::OnceLock::new, std::sync::OnceLock::from),
            making_memory: std::sync::Mutex::new(()),
            stored: d.stored,
            mem_size: d.mem_size,
            vcpu: d.vcpu,
            point: d.point,
            started: d.started,
            mounts: d.mounts,
            from_file: true,
            limits: d.limits,
            fs: d.fs,
            resident: d.resident,
            copy: std::sync::atomic::AtomicBool::new(false),
            data,
            hot: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            touched_misses: std::sync::atomic::AtomicU32::new(0),
        })))
    }
}

/// Clears, in the snapshot's copy of guest RAM (`memory`, `len` bytes),
/// the flags by which the guest runtime stops sending output once the host
/// said a stream is full: that was the snapshot run's output limit, and
/// each run from the snapshot starts with its own. The buffers' place is
/// published in the stats page; a place outside guest RAM is left alone
/// (a runtime that never published it has no flags to clear).
fn reopen_output_streams(vm: &Vm, memory: &File, len: u64) -> Result<()> {
    let at = abi::STATS_GPA + std::mem::offset_of!(abi::RuntimeStats, out_buffers_gpa) as u64;
    let Ok(buffers) = vm.read_obj::<u64>(at) else { return Ok(()) };
    let stride = std::mem::size_of::<abi::OutBuffer>() as u64;
    let discard = std::mem::offset_of!(abi::OutBuffer, discard) as u64;
    if buffers == 0 || buffers.checked_add(2 * stride).is_none_or(|end| end > len) {
        return Ok(());
    }
    for stream in 0..2 {
        memory.write_all_at(&0u64.to_le_bytes(), buffers + stream * stride + discard).map_err(|e| Error::Internal {
            context: "cannot write snapshot memory".into(),
            source: Some(std::sync::Arc::new(e)),
        })?;
    }
    Ok(())
}

/// A snapshot's memory file was needed but not made.
fn no_memory_file() -> Error {
    Error::Internal { context: "the snapshot's memory file was not made".into(), source: None }
}
