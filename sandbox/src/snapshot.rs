//! Snapshots: a guest frozen at a well-defined point — right after the
//! runtime loaded the program (before its first instruction), or at a
//! checkpoint the program asked for by reading `/dev/hvsandbox/checkpoint`
//! — that sandboxes start from instead of booting.
//!
//! One file of ~1,000 lines: the `Snapshot` type and its file format (the
//! writer and the checking reader), which must agree field by field.
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
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crc32fast::Hasher;
use hvsandbox_core::{abi, VcpuState, Vm};

use crate::error::{Error, Result};
use crate::fs::{FsEntry, Mount};

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
    /// that copy the snapshot read its pages from `records`.
    memory: std::sync::OnceLock<File>,
    /// Held while `memory` is made.
    making_memory: std::sync::Mutex<()>,
    /// Where a loaded snapshot's pages are in its file.
    records: Option<PageRecords>,
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
    /// (or once `memory` is made from `records`).
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
        let records = self.0.records.as_ref().ok_or_else(no_memory_file)?;
        let memory = records.to_memory_file(self.0.mem_size)?;
        Ok(self.0.memory.get_or_init(|| memory))
    }

    /// The snapshot's memory file, if it was made (see
    /// [`Snapshot::memory_file`]).
    pub(crate) fn memory_fd(&self) -> Result<BorrowedFd<'_>> {
        self.0.memory.get().map(File::as_fd).ok_or_else(no_memory_file)
    }

    /// Whether sandboxes built from the snapshot with `config` need its
    /// memory file: to map it (unless new VMs copy the snapshot's memory)
    /// or to reset their VM after a run.
    pub(crate) fn needs_memory_file(&self, config: &crate::config::Config) -> bool {
        !self.0.copy.load(std::sync::atomic::Ordering::Relaxed) || config.reset_ahead
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
    /// with none made, straight from the snapshot's file.
    pub(crate) fn new_vm(&self) -> Result<Vm> {
        let copy = self.0.copy.load(std::sync::atomic::Ordering::Relaxed);
        match (self.0.memory.get(), &self.0.records) {
            (Some(memory), _) => match self.0.data.get().filter(|_| copy) {
                Some(data) => Vm::from_snapshot_copy(memory.as_fd(), self.0.mem_size, data),
                None => Vm::from_snapshot_memory(memory.as_fd(), self.0.mem_size),
            }
            .map_err(Error::from),
            (None, Some(records)) if copy => records.new_vm(self.0.mem_size),
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
            records: None,
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
    /// the vCPU state, the mounts, the file handles, and the non-zero
    /// pages, with a checksum over all of it. Streams: guest memory goes
    /// from the snapshot's memory file to `path` a chunk at a time, never
    /// copied whole.
    ///
    /// The file is written beside `path` and renamed over it once complete
    /// and synced: a reader never sees half a snapshot, and snapshots
    /// loaded from the file `path` named before keep reading theirs (see
    /// [`Snapshot::copy_memory`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::SnapshotFile { path: path.display().to_string(), reason: e.to_string() };
        let memory = self.memory_file()?;
        let name = path.file_name().ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut part = std::ffi::OsString::from(".");
        part.push(name);
        part.push(format!(".{}-{}.part", std::process::id(), SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let part = path.with_file_name(part);
        let written = self.write_to(&part, memory).and_then(|()| std::fs::rename(&part, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        written.map_err(io)
    }

    /// Writes the snapshot file to `path` (created or truncated), synced.
    fn write_to(&self, path: &Path, memory: &File) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut out = Sink { w: std::io::BufWriter::with_capacity(1 << 20, &file), len: 0, sum: Hasher::new() };
        // The header goes last, once the payload's length and checksum are
        // known: until then it is zeros, which no loader accepts.
        out.w.write_all(&[0u8; HEADER_LEN])?;
        self.write_payload(&mut out, memory)?;
        let Sink { w, len, sum } = out;
        w.into_inner().map_err(|e| e.into_error())?;
        let mut h = Header::current(self.0.mem_size, self.0.point, self.0.limits);
        h.payload_len = len;
        h.checksum = sum.finalize().into();
        file.write_all_at(&h.to_bytes(), 0)?;
        file.sync_all()
    }

    fn write_payload(&self, out: &mut Sink<'_>, memory: &File) -> std::io::Result<()> {
        let s = &self.0;
        out.put_bytes(pod_bytes(&s.vcpu.regs))?;
        out.put_bytes(pod_bytes(&s.vcpu.sregs))?;
        out.put_bytes(pod_bytes(&s.vcpu.xsave))?;
        out.put_bytes(pod_bytes(&s.vcpu.xcrs))?;
        for strings in [&s.started.argv, &s.started.env] {
            out.put_u64(strings.len() as u64)?;
            for a in strings {
                out.put_bytes(a)?;
            }
        }
        out.put_u64(s.mounts.len() as u64)?;
        for m in &s.mounts {
            out.put_bytes(m.host.as_os_str().as_bytes())?;
            out.put_bytes(m.guest.as_bytes())?;
        }
        out.put_u64(s.fs.len() as u64)?;
        for e in &s.fs {
            match e {
                FsEntry::Mount(i) => {
                    out.put_u64(RECORD_MOUNT)?;
                    out.put_u64(*i as u64)?;
                }
                FsEntry::Child { parent, name, fmt, .. } => {
                    // Identity (dev, inode) is left out: it means nothing
                    // on another host; names decide there.
                    out.put_u64(RECORD_CHILD)?;
                    out.put_u64(*parent)?;
                    out.put_u64(*fmt as u64)?;
                    out.put_bytes(name)?;
                }
                FsEntry::Blob => out.put_u64(RECORD_BLOB)?,
            }
        }
        // Pages: (index, 4 KiB) for every non-zero page, in order.
        for_each_data_page(memory, s.mem_size, |index, page| {
            out.put_u64(index)?;
            out.put(page)
        })
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
    /// refused at once. Guest memory streams into a sealed memory file.
    /// The host directories the snapshot's guest had mounted are recorded
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

    /// Decodes a snapshot from `src`, which holds `len` bytes when known.
    /// With `keep` (`src`'s file, read from its start, and its path), the
    /// pages are checked and left there ([`PageRecords`]); else they go
    /// into a memory file.
    fn read_from(
        mut src: impl Read,
        len: Option<u64>,
        keep: Option<(File, String)>,
    ) -> std::result::Result<Snapshot, String> {
        let mut head = [0u8; HEADER_LEN];
        src.read_exact(&mut head).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => NOT_A_SNAPSHOT.to_string(),
            _ => e.to_string(),
        })?;
        let h = Header::parse(&head)?;
        let pages = h.mem_size / abi::PAGE_SIZE;
        let most = MAX_RECORDS_LEN + pages * (8 + abi::PAGE_SIZE);
        if h.payload_len > most {
            return Err(format!(
                "the header claims {} bytes of data; a snapshot of {} MiB holds at most {most}",
                h.payload_len,
                h.mem_size >> 20
            ));
        }
        let want = HEADER_LEN as u64 + h.payload_len;
        match len {
            Some(len) if len < want => return Err(format!("truncated: {len} of {want} bytes")),
            Some(len) if len > want => return Err(format!("{} bytes past the end of the snapshot", len - want)),
            _ => {}
        }
        let mut p = Payload { src, len: h.payload_len, left: h.payload_len, sum: Hasher::new() };
        let regs = p.pod()?;
        let sregs = p.pod()?;
        let xsave = p.pod()?;
        let xcrs = p.pod()?;
        let started = read_invocation(&mut p)?;
        let mounts = read_mounts(&mut p)?;
        let fs = read_handles(&mut p, mounts.len())?;
        let before = p.sum.clone();
        let (memory, records, resident) = match keep {
            Some((file, path)) => {
                let runs = index_pages(&mut p, pages)?;
                let resident = runs.iter().map(|r| r.count).sum::<u64>() * abi::PAGE_SIZE;
                (None, Some(PageRecords { file, path, runs, before, checksum: h.checksum }), resident)
            }
            None => {
                let memory = memfd(h.mem_size).map_err(|e| e.to_string())?;
                let resident = read_pages(&mut p, &memory)?;
                (Some(memory), None, resident)
            }
        };
        // Nothing may follow the payload (a stream's length is not known
        // up front).
        if p.src.read(&mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
            return Err("data past the end of the snapshot".into());
        }
        if u64::from(p.sum.finalize()) != h.checksum {
            return Err("checksum mismatch: the file is corrupted".into());
        }
        if let Some(memory) = &memory {
            seal(memory.as_fd()).map_err(|e| e.to_string())?;
        }
        // The ranges that hold data, for VMs that copy them.
        let data = std::sync::OnceLock::new();
        if let Some(records) = &records {
            let _ = data.set(records.byte_ranges());
        }
        let vcpu = VcpuState { regs, sregs, xsave, xcrs };
        Ok(Snapshot(Arc::new(Inner {
            memory: memory.map_or_else(std::sync::OnceLock::new, std::sync::OnceLock::from),
            making_memory: std::sync::Mutex::new(()),
            records,
            mem_size: h.mem_size,
            vcpu,
            point: h.point,
            started,
            mounts,
            from_file: true,
            limits: h.limits,
            fs,
            resident,
            copy: std::sync::atomic::AtomicBool::new(false),
            data,
            hot: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            touched_misses: std::sync::atomic::AtomicU32::new(0),
        })))
    }
}

/// The argv and environment of a snapshot file: as the guest took them
/// at boot (NUL-free strings, argv not empty, every environment string
/// NAME=VALUE with a name), within the guest's argument area.
fn read_invocation<R: Read>(p: &mut Payload<R>) -> std::result::Result<Invocation, String> {
    let mut total = 0u64;
    let mut strings = |what: &str| -> std::result::Result<Vec<Vec<u8>>, String> {
        let n = p.u64()?;
        if n > abi::ARGS_MAX {
            return Err(format!("{n} {what} strings; at most {}", abi::ARGS_MAX));
        }
        let mut out = Vec::new();
        for _ in 0..n {
            let s = p.bytes(abi::ARGS_MAX as usize, what)?;
            total += s.len() as u64 + 1;
            if total > abi::ARGS_MAX {
                return Err(format!("the arguments and environment take more than {} bytes", abi::ARGS_MAX));
            }
            if s.contains(&0) {
                return Err(format!("a {what} string has a NUL byte"));
            }
            out.push(s);
        }
        Ok(out)
    };
    let argv = strings("argv")?;
    let env = strings("environment")?;
    if argv.is_empty() {
        return Err("no argv[0]".into());
    }
    if env.iter().any(|kv| kv.iter().position(|&c| c == b'=').is_none_or(|eq| eq == 0)) {
        return Err("an environment string is not NAME=VALUE".into());
    }
    Ok(Invocation { argv, env })
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

/// The mount list of a snapshot file: host path as recorded, guest path.
/// Guest paths are checked as a builder's are; host paths are only
/// recorded (never opened from the file), and whether kernel filesystems
/// may be entered is the caller's choice when it gives the mount again.
fn read_mounts<R: Read>(p: &mut Payload<R>) -> std::result::Result<Vec<Mount>, String> {
    let n = p.u64()?;
    if n > MAX_MOUNTS {
        return Err(format!("{n} mounts; at most {MAX_MOUNTS}"));
    }
    let mut mounts: Vec<Mount> = Vec::new();
    for _ in 0..n {
        let host = p.bytes(abi::fs::PATH_MAX, "a mount's host path")?;
        if host.is_empty() || host.contains(&0) {
            return Err("a mount's host path is empty or has a NUL byte".into());
        }
        let guest = String::from_utf8(p.bytes(abi::fs::PATH_MAX, "a mount's guest path")?)
            .map_err(|_| "a mount's guest path is not UTF-8")?;
        crate::fs::check_guest_path(&guest).map_err(|why| format!("mount point {guest:?} {why}"))?;
        if guest == "/" || mounts.iter().any(|m| m.guest == guest) {
            return Err(format!("invalid or repeated mount point {guest:?}"));
        }
        mounts.push(Mount { host: PathBuf::from(std::ffi::OsStr::from_bytes(&host)), guest, kernel_fs: false });
    }
    Ok(mounts)
}

/// The file handle table of a snapshot file, every record checked as a
/// live lookup would be: mount roots in order, each name looked up in an
/// earlier directory handle, a single valid name (no `/`, not `.` or `..`,
/// not empty, no NUL, at most 255 bytes) of a directory, file or symlink,
/// each (directory, name) once.
fn read_handles<R: Read>(p: &mut Payload<R>, mounts: usize) -> std::result::Result<Vec<FsEntry>, String> {
    let n = p.u64()?;
    if n > crate::fs::MAX_HANDLES as u64 {
        return Err(format!("{n} file handles; at most {}", crate::fs::MAX_HANDLES));
    }
    let mut entries: Vec<FsEntry> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut roots = 0;
    for handle in (0..n).map(|i| i + abi::fs::FIRST_HANDLE) {
        let entry = match p.u64()? {
            RECORD_MOUNT => {
                let i = p.u64()?;
                if i != roots as u64 || roots >= mounts {
                    return Err(format!("file handle {handle}: mount {i} is missing or out of order"));
                }
                roots += 1;
                FsEntry::Mount(i as usize)
            }
            RECORD_CHILD => {
                let parent = p.u64()?;
                let fmt = u32::try_from(p.u64()?).unwrap_or(0);
                let name = p.bytes(abi::fs::NAME_MAX, "a file name")?;
                crate::fs::check_name(&name)
                    .map_err(|_| format!("file handle {handle}: invalid name {:?}", String::from_utf8_lossy(&name)))?;
                if !matches!(fmt, libc::S_IFDIR | libc::S_IFREG | libc::S_IFLNK) {
                    return Err(format!("file handle {handle}: invalid file type {fmt:#o}"));
                }
                let in_dir = parent
                    .checked_sub(abi::fs::FIRST_HANDLE)
                    .and_then(|i| entries.get(usize::try_from(i).ok()?))
                    .is_some_and(|e| match e {
                        FsEntry::Mount(_) => true,
                        FsEntry::Child { fmt, .. } => *fmt == libc::S_IFDIR,
                        FsEntry::Blob => false,
                    });
                if !in_dir {
                    return Err(format!("file handle {handle}: parent {parent} is not an earlier directory"));
                }
                if !names.insert((parent, name.clone())) {
                    return Err(format!("file handle {handle}: the same name twice in directory {parent}"));
                }
                FsEntry::Child { parent, name, dev: 0, ino: 0, fmt }
            }
            RECORD_BLOB => FsEntry::Blob,
            k => return Err(format!("file handle {handle}: invalid record kind {k}")),
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads the (index, page) records that make up the rest of the payload,
/// checked (indices inside the guest's `pages`, strictly increasing), and
/// calls `each` with each page's index, the offset of its record in the
/// file and its bytes.
fn page_records<R: Read>(
    p: &mut Payload<R>,
    pages: u64,
    mut each: impl FnMut(u64, u64, &[u8]) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let mut page = vec![0u8; abi::PAGE_SIZE as usize];
    let mut next = 0u64;
    while p.left > 0 {
        let at = HEADER_LEN as u64 + (p.len - p.left);
        let i = p.u64()?;
        if i >= pages {
            return Err(format!("page {i} is outside the guest's {pages} pages"));
        }
        if i < next {
            return Err(format!("page {i} is out of order"));
        }
        next = i + 1;
        p.fill(&mut page)?;
        each(i, at, &page)?;
    }
    Ok(())
}

/// Reads the page records that make up the rest of the payload (see
/// [`page_records`]) into `memory`; returns the bytes read.
fn read_pages<R: Read>(p: &mut Payload<R>, memory: &File) -> std::result::Result<u64, String> {
    let pages = memory.metadata().map_err(|e| e.to_string())?.len() / abi::PAGE_SIZE;
    let mut batch = PageBatch::new(memory);
    let mut resident = 0u64;
    page_records(p, pages, |index, _, page| {
        resident += abi::PAGE_SIZE;
        batch.push(index, page).map_err(|e| e.to_string())
    })?;
    batch.flush().map_err(|e| e.to_string())?;
    Ok(resident)
}

/// Checks the page records that make up the rest of the payload (see
/// [`page_records`]) and returns where they are, leaving them in the file.
fn index_pages<R: Read>(p: &mut Payload<R>, pages: u64) -> std::result::Result<Vec<PageRun>, String> {
    let mut runs: Vec<PageRun> = Vec::new();
    page_records(p, pages, |index, at, _| {
        match runs.last_mut() {
            Some(run) if run.first + run.count == index => run.count += 1,
            _ => runs.push(PageRun { first: index, count: 1, offset: at }),
        }
        Ok(())
    })?;
    Ok(runs)
}

/// Pages written into a memory file, consecutive ones together.
struct PageBatch<'a> {
    memory: &'a File,
    buf: Vec<u8>,
    first: u64,
    pages: usize,
}

impl<'a> PageBatch<'a> {
    const PAGES: usize = 256;

    fn new(memory: &'a File) -> Self {
        PageBatch { memory, buf: vec![0u8; Self::PAGES * abi::PAGE_SIZE as usize], first: 0, pages: 0 }
    }

    /// Page `index` (above the last one given) holds `page`.
    fn push(&mut self, index: u64, page: &[u8]) -> std::io::Result<()> {
        if self.pages == Self::PAGES || (self.pages > 0 && index != self.first + self.pages as u64) {
            self.flush()?;
        }
        if self.pages == 0 {
            self.first = index;
        }
        let at = self.pages * abi::PAGE_SIZE as usize;
        self.buf[at..at + page.len()].copy_from_slice(page);
        self.pages += 1;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let n = std::mem::take(&mut self.pages);
        self.memory.write_all_at(&self.buf[..n * abi::PAGE_SIZE as usize], self.first * abi::PAGE_SIZE)
    }
}

/// Records of consecutive pages in a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageRun {
    /// The first page's index in guest RAM.
    first: u64,
    /// How many pages.
    count: u64,
    /// Where the first page's record starts in the file.
    offset: u64,
}

/// Where a loaded snapshot's pages are: its file, kept open, and the runs
/// of records the load checked. Read again, each record must be where the
/// load found it and all of them must match the file's checksum: a file
/// changed since is refused (`SnapshotFile`).
pub(crate) struct PageRecords {
    file: File,
    path: String,
    runs: Vec<PageRun>,
    /// The checksum of the payload before the pages.
    before: Hasher,
    checksum: u64,
}

impl PageRecords {
    const RECORD: u64 = 8 + abi::PAGE_SIZE;
    /// Records read at a time.
    const CHUNK: u64 = 256;

    /// The byte ranges of guest RAM that hold data.
    fn byte_ranges(&self) -> Vec<(u64, u64)> {
        self.runs.iter().map(|r| (r.first * abi::PAGE_SIZE, (r.first + r.count) * abi::PAGE_SIZE)).collect()
    }

    /// Calls `f` with each page's index and bytes, in order, then checks
    /// the checksum (so an error after `f` saw pages is possible: discard
    /// what it made).
    fn each(&self, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let failed = |reason: String| Error::SnapshotFile { path: self.path.clone(), reason };
        let changed = || failed("the file changed since the snapshot was loaded".into());
        let mut buf = vec![0u8; (Self::CHUNK * Self::RECORD) as usize];
        let mut sum = self.before.clone();
        for run in &self.runs {
            let mut done = 0;
            while done < run.count {
                let n = (run.count - done).min(Self::CHUNK);
                let chunk = &mut buf[..(n * Self::RECORD) as usize];
                let at = run.offset + done * Self::RECORD;
                self.file.read_exact_at(chunk, at).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => changed(),
                    _ => failed(e.to_string()),
                })?;
                sum.update(chunk);
                for (k, record) in chunk.chunks_exact(Self::RECORD as usize).enumerate() {
                    let (index, page) = record.split_at(8);
                    let index = u64::from_le_bytes(index.try_into().unwrap_or_default());
                    if index != run.first + done + k as u64 {
                        return Err(changed());
                    }
                    f(index, page)?;
                }
                done += n;
            }
        }
        if u64::from(sum.finalize()) != self.checksum {
            return Err(changed());
        }
        Ok(())
    }

    /// A VM whose memory is these pages (the rest zero).
    fn new_vm(&self, mem_size: u64) -> Result<Vm> {
        let vm = Vm::for_snapshot_pages(mem_size)?;
        self.each(|index, page| vm.write_bytes(index * abi::PAGE_SIZE, page).map_err(Error::from))?;
        Ok(vm)
    }

    /// A sealed memory file of `mem_size` bytes holding these pages.
    fn to_memory_file(&self, mem_size: u64) -> Result<File> {
        let memory = memfd(mem_size)?;
        let internal = |e: std::io::Error| Error::Internal {
            context: "cannot write snapshot memory".into(),
            source: Some(std::sync::Arc::new(e)),
        };
        let mut batch = PageBatch::new(&memory);
        self.each(|index, page| batch.push(index, page).map_err(internal))?;
        batch.flush().map_err(internal)?;
        seal(memory.as_fd())?;
        Ok(memory)
    }
}

/// A snapshot's memory file was needed but not made.
fn no_memory_file() -> Error {
    Error::Internal { context: "the snapshot's memory file was not made".into(), source: None }
}

/// Test hook for fuzzing the decoder past its checksum: rewrites the
/// header's payload length and checksum to match `file`'s payload.
#[doc(hidden)]
pub fn reseal_for_fuzzing(file: &mut [u8]) {
    if file.len() < HEADER_LEN {
        return;
    }
    let (head, payload) = file.split_at_mut(HEADER_LEN);
    head[56..64].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    head[64..72].copy_from_slice(&u64::from(crc32fast::hash(payload)).to_le_bytes());
}

const MAGIC: [u8; 8] = *b"HVSBSNAP";
/// Format 2: the guest's limits in the header; file handle records checked.
/// Format 3: the checksum is CRC-32 (IEEE).
/// Format 4: the program's whole argv and its environment (was: argv[0]).
const FORMAT: u32 = 4;
const HEADER_LEN: usize = 96;
const NOT_A_SNAPSHOT: &str = "not an hvsandbox snapshot file";
const RECORD_MOUNT: u64 = 1;
const RECORD_CHILD: u64 = 2;
const RECORD_BLOB: u64 = 3;
/// Most mounts recorded.
const MAX_MOUNTS: u64 = 1024;
/// Most bytes of the records before the pages: the vCPU state, argv and
/// environment (two counts, then a length and at least one byte, with its
/// NUL in the guest, per string), the mounts and the file handles, each at
/// its maximum.
const MAX_RECORDS_LEN: u64 = (4 * 8 + std::mem::size_of::<VcpuState>() as u64)
    + (2 * 8 + abi::ARGS_MAX * 8 + abi::ARGS_MAX)
    + (8 + MAX_MOUNTS * (2 * 8 + 2 * abi::fs::PATH_MAX as u64))
    + (8 + crate::fs::MAX_HANDLES as u64 * (4 * 8 + abi::fs::NAME_MAX as u64));

/// The fixed-size header of a snapshot file.
struct Header {
    format: u32,
    abi_version: u32,
    runtime_id: u64,
    cpu_features: [u32; 4],
    mem_size: u64,
    point: SnapshotPoint,
    limits: GuestLimits,
    payload_len: u64,
    /// CRC-32 (IEEE) of the payload, in a 64-bit field (the upper half
    /// zero). It detects corruption (a torn write, flipped bits, a wrong
    /// length), not tampering: a snapshot file is as trusted as the program
    /// it holds, and its decoder checks every field anyway. CRC-32 catches
    /// every burst error of up to 32 bits and, with the CPU's carry-less
    /// multiply, runs at memory speed over GiBs of guest pages.
    checksum: u64,
}

/// CPU features a guest may have used (CPUID.1 ECX/EDX, CPUID.7 EBX/ECX):
/// a snapshot only resumes where they all exist.
fn cpu_features() -> [u32; 4] {
    let l1 = core::arch::x86_64::__cpuid(1);
    let l7 = core::arch::x86_64::__cpuid_count(7, 0);
    // Bits that describe the CPU's identity or state, not features, are
    // left out (APIC id, OSXSAVE is the same everywhere we run).
    [l1.ecx & !(1 << 27), l1.edx, l7.ebx, l7.ecx]
}

impl Header {
    fn current(mem_size: u64, point: SnapshotPoint, limits: GuestLimits) -> Header {
        Header {
            format: FORMAT,
            abi_version: abi::ABI_VERSION,
            runtime_id: runtime_id(),
            cpu_features: cpu_features(),
            mem_size,
            point,
            limits,
            payload_len: 0,
            checksum: 0,
        }
    }

    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.format.to_le_bytes());
        b[12..16].copy_from_slice(&self.abi_version.to_le_bytes());
        b[16..24].copy_from_slice(&self.runtime_id.to_le_bytes());
        for (i, f) in self.cpu_features.iter().enumerate() {
            b[24 + 4 * i..28 + 4 * i].copy_from_slice(&f.to_le_bytes());
        }
        b[40..48].copy_from_slice(&self.mem_size.to_le_bytes());
        b[48] = match self.point {
            SnapshotPoint::Entry => 1,
            SnapshotPoint::Checkpoint => 2,
        };
        b[56..64].copy_from_slice(&self.payload_len.to_le_bytes());
        b[64..72].copy_from_slice(&self.checksum.to_le_bytes());
        b[72..76].copy_from_slice(&self.limits.max_processes.to_le_bytes());
        b[76..80].copy_from_slice(&self.limits.max_open_files.to_le_bytes());
        b
    }

    fn parse(data: &[u8; HEADER_LEN]) -> std::result::Result<Header, String> {
        if data[0..8] != MAGIC {
            return Err(NOT_A_SNAPSHOT.into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or_default());
        let format = u32_at(8);
        if format != FORMAT {
            return Err(format!("snapshot format {format}; this build reads format {FORMAT}"));
        }
        let abi_version = u32_at(12);
        if abi_version != abi::ABI_VERSION {
            return Err(format!("guest ABI version {abi_version}; this build has {}", abi::ABI_VERSION));
        }
        let runtime = u64_at(16);
        if runtime != runtime_id() {
            return Err(format!(
                "taken with another guest runtime build ({runtime:016x}; this one is {:016x})",
                runtime_id()
            ));
        }
        let mut cpu = [0u32; 4];
        for (i, c) in cpu.iter_mut().enumerate() {
            *c = u32_at(24 + 4 * i);
        }
        let here = cpu_features();
        if cpu.iter().zip(&here).any(|(want, have)| want & !have != 0) {
            return Err("the CPU lacks features the snapshot's guest may use".into());
        }
        let mem_size = u64_at(40);
        if !(abi::MIN_MEMORY..=abi::MAX_MEMORY).contains(&mem_size) || !mem_size.is_multiple_of(abi::HUGE_PAGE_SIZE) {
            return Err(format!("invalid memory size {mem_size}"));
        }
        let point = match data[48] {
            1 => SnapshotPoint::Entry,
            2 => SnapshotPoint::Checkpoint,
            p => return Err(format!("invalid snapshot point {p}")),
        };
        let limits = GuestLimits { max_processes: u32_at(72), max_open_files: u32_at(76) };
        if !MAX_PROCESSES_RANGE.contains(&limits.max_processes)
            || !MAX_OPEN_FILES_RANGE.contains(&limits.max_open_files)
        {
            return Err(format!("invalid guest limits {limits:?}"));
        }
        Ok(Header {
            format,
            abi_version,
            runtime_id: runtime,
            cpu_features: cpu,
            mem_size,
            point,
            limits,
            payload_len: u64_at(56),
            checksum: u64_at(64),
        })
    }
}

/// Identity of the embedded guest runtime build: its CRC-32 (IEEE) and,
/// above it, its length.
fn runtime_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let image = hvsandbox_core::runtime::RUNTIME_IMAGE;
        ((image.len() as u64) << 32) | u64::from(crc32fast::hash(image))
    })
}

/// Where [`Snapshot::save`] writes the payload: counted and checksummed.
struct Sink<'a> {
    w: std::io::BufWriter<&'a std::fs::File>,
    len: u64,
    sum: Hasher,
}

impl Sink<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.sum.update(b);
        self.len += b.len() as u64;
        Ok(())
    }
    fn put_u64(&mut self, v: u64) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn put_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.put_u64(b.len() as u64)?;
        self.put(b)
    }
}

/// The payload of a snapshot file as it is read: no read goes past the
/// length the header gave, and every byte read is checksummed.
struct Payload<R> {
    src: R,
    /// The payload's length.
    len: u64,
    /// Bytes of the payload not read yet.
    left: u64,
    sum: Hasher,
}

impl<R: Read> Payload<R> {
    fn fill(&mut self, buf: &mut [u8]) -> std::result::Result<(), String> {
        if buf.len() as u64 > self.left {
            return Err("a record runs past the end of the snapshot".into());
        }
        self.src.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "truncated".to_string(),
            _ => e.to_string(),
        })?;
        self.sum.update(buf);
        self.left -= buf.len() as u64;
        Ok(())
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// A length-prefixed record of at most `max` bytes.
    fn bytes(&mut self, max: usize, what: &str) -> std::result::Result<Vec<u8>, String> {
        let n = self.u64()?;
        if n > max as u64 || n > self.left {
            return Err(format!("{what} of {n} bytes is too large"));
        }
        let mut b = vec![0u8; n as usize];
        self.fill(&mut b)?;
        Ok(b)
    }
    /// A KVM register structure, as [`pod_bytes`] wrote it.
    fn pod<T>(&mut self) -> std::result::Result<T, String> {
        let b = self.bytes(std::mem::size_of::<T>(), "vCPU state")?;
        pod_from(&b)
    }
}

/// Calls `f` with the index and bytes of every page of `fd`'s first `len`
/// bytes that is not all zeros, in order. Holes (never-written ranges of
/// the memory file) are skipped without reading them.
fn for_each_data_page(
    file: &File,
    len: u64,
    mut f: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const PAGE: u64 = abi::PAGE_SIZE;
    let mut buf = vec![0u8; 64 * PAGE as usize];
    let mut at = 0u64;
    while at < len {
        let (start, end) = match data_extent(file.as_fd(), at, len) {
            Some(extent) => extent,
            None => break,
        };
        let mut off = start;
        while off < end {
            let n = (end - off).min(buf.len() as u64);
            let chunk = &mut buf[..n as usize];
            file.read_exact_at(chunk, off)?;
            for (i, page) in chunk.chunks(PAGE as usize).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    f(off / PAGE + i as u64, page)?;
                }
            }
            off += n;
        }
        at = end;
    }
    Ok(())
}

/// The next range of `fd` at or after `at` (below `len`) that may hold
/// data, page-aligned; `None` past the last. Without SEEK_DATA support the
/// whole rest is one range.
fn data_extent(fd: BorrowedFd<'_>, at: u64, len: u64) -> Option<(u64, u64)> {
    let page = abi::PAGE_SIZE;
    // SAFETY: lseek on a live fd; the result is only an offset (reads use
    // pread, so the fd's position does not matter).
    let start = unsafe { libc::lseek(fd.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => None,
            _ => Some((at, len)),
        };
    }
    let start = (start as u64 / page * page).max(at);
    if start >= len {
        return None;
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd.as_raw_fd(), start as libc::off_t, libc::SEEK_HOLE) };
    let end = if end < 0 { len } else { (end as u64).div_ceil(page) * page };
    Some((start, end.clamp(start + page, len)))
}

/// The bytes of a plain-old-data KVM structure.
fn pod_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: T is one of the KVM register structures: repr(C) integers
    // without padding that matters; any initialised value may be viewed
    // as bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn pod_from<T>(b: &[u8]) -> std::result::Result<T, String> {
    if b.len() != std::mem::size_of::<T>() {
        return Err("vCPU state of the wrong size".into());
    }
    // SAFETY: the length matches and T is a repr(C) KVM structure of
    // integers, valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

fn memfd(len: u64) -> Result<File> {
    let err = |e: std::io::Error| Error::Internal {
        context: "cannot create snapshot memory".into(),
        source: Some(std::sync::Arc::new(e)),
    };
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"hvsandbox-snapshot".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(File::from(fd))
}

fn seal(fd: BorrowedFd<'_>) -> Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Error::Internal {
            context: "cannot seal snapshot memory".into(),
            source: Some(std::sync::Arc::new(std::io::Error::last_os_error())),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_another_format_are_refused_by_their_header() {
        let limits = GuestLimits { max_processes: 64, max_open_files: 1024 };
        let mut head = Header::current(64 << 20, SnapshotPoint::Entry, limits).to_bytes();
        assert!(Header::parse(&head).is_ok());
        // Format 2 had another checksum, format 3 only argv[0]: their
        // files are refused, saying so.
        for old in [2u32, 3] {
            head[8..12].copy_from_slice(&old.to_le_bytes());
            let err = Header::parse(&head).err().unwrap_or_default();
            assert_eq!(err, format!("snapshot format {old}; this build reads format {FORMAT}"));
        }
    }

    /// The argv and environment records of a snapshot file, as
    /// `write_payload` lays them out.
    fn invocation_bytes(argv: &[&[u8]], env: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for strings in [argv, env] {
            b.extend_from_slice(&(strings.len() as u64).to_le_bytes());
            for s in strings {
                b.extend_from_slice(&(s.len() as u64).to_le_bytes());
                b.extend_from_slice(s);
            }
        }
        b
    }

    fn decode_invocation(bytes: &[u8]) -> std::result::Result<Invocation, String> {
        read_invocation(&mut Payload {
            src: bytes,
            len: bytes.len() as u64,
            left: bytes.len() as u64,
            sum: Hasher::new(),
        })
    }

    #[test]
    fn argv_and_environment_records_are_checked() {
        let ok = decode_invocation(&invocation_bytes(&[b"/bin/sh", b"-c", b""], &[b"A=1", b"B="])).unwrap();
        assert_eq!(ok.argv, [&b"/bin/sh"[..], b"-c", b""]);
        assert_eq!(ok.env, [&b"A=1"[..], b"B="]);
        let big = vec![b'x'; abi::ARGS_MAX as usize / 2];
        type Strings<'a> = &'a [&'a [u8]];
        let bad: [(Strings, Strings, &str); 6] = [
            (&[], &[], "no argv[0]"),
            (&[b"a\0b"], &[], "NUL"),
            (&[b"a"], &[b"NOVALUE"], "NAME=VALUE"),
            (&[b"a"], &[b"=1"], "NAME=VALUE"),
            (&[&big, &big], &[], "more than"),
            (&[b"a"], &[&big, &big], "more than"),
        ];
        for (argv, env, why) in bad {
            let err = decode_invocation(&invocation_bytes(argv, env)).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        // A count past the argument area, and a count with no strings.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&0u64.to_le_bytes());
        assert!(decode_invocation(&huge).unwrap_err().contains("strings; at most"));
        assert!(decode_invocation(&7u64.to_le_bytes()).is_err());
    }

    #[test]
    fn data_pages_skip_holes_and_zero_pages() {
        let page = abi::PAGE_SIZE;
        let len = 64 * page;
        let fd = memfd(len).unwrap();
        for (index, byte) in [(0u64, 1u8), (5, 2), (6, 3), (63, 4)] {
            fd.write_all_at(&[byte], index * page + 17).unwrap();
        }
        // Written zeros are data to the file but not to the snapshot.
        fd.write_all_at(&vec![0; page as usize], 9 * page).unwrap();
        let mut seen = Vec::new();
        for_each_data_page(&fd, len, |index, bytes| {
            assert_eq!(bytes.len() as u64, page);
            seen.push((index, bytes[17]));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(0, 1), (5, 2), (6, 3), (63, 4)]);
    }
}
