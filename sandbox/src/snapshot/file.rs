//! The snapshot file format, written by `Snapshot::save` and checked by
//! `Snapshot::load`. One file of ~900 lines (a fifth of them tests): the
//! writer and the checking reader, which must agree field by field.
//!
//! Format 5, in order:
//! - a fixed-size header (magic, format, guest ABI and runtime build, CPU
//!   features, memory size, snapshot point, the guest's limits, the
//!   payload's length, where the pages start and two checksums);
//! - the records: the vCPU state, argv and environment, the mounts, the
//!   file handles, and the runs of non-zero pages (first page, count);
//! - zeros up to the next 4 KiB boundary of the file;
//! - the runs' pages, in order, 4 KiB each.
//!
//! The header's `checksum` covers the records and the zeros after them,
//! `pages_checksum` the pages. A load reads and checks everything up to
//! the pages at once; a regular file's pages are read (and checked) where
//! they are needed, a stream's (a pipe, bytes in memory) at once. Pages
//! start on a 4 KiB boundary of the file, so runs of them are read with
//! one call each, straight into a VM's memory or a memory file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crc32fast::Hasher;
use hvsandbox_core::{abi, HugePages, VcpuState, Vm};

use super::{GuestLimits, Inner, Invocation, SnapshotPoint, MAX_OPEN_FILES_RANGE, MAX_PROCESSES_RANGE};
use crate::error::{Error, Result};
use crate::fs::{FsEntry, Mount};

const PAGE: u64 = abi::PAGE_SIZE;

/// What a snapshot file holds, decoded and checked.
pub(super) struct Decoded {
    pub(super) mem_size: u64,
    pub(super) point: SnapshotPoint,
    pub(super) limits: GuestLimits,
    pub(super) vcpu: VcpuState,
    pub(super) started: Invocation,
    pub(super) mounts: Vec<Mount>,
    pub(super) fs: Vec<FsEntry>,
    /// The pages, in a sealed memory file (read from a stream)...
    pub(super) memory: Option<File>,
    /// ... or left in the file (read from a regular file).
    pub(super) stored: Option<StoredPages>,
    /// Bytes of guest RAM that hold data.
    pub(super) resident: u64,
}

/// Decodes a snapshot from `src`, which holds `len` bytes when known.
/// With `keep` (`src`'s file, read from its start, and its path), the
/// pages are left there ([`StoredPages`]); else they are read into a
/// memory file now.
pub(super) fn decode(
    mut src: impl Read,
    len: Option<u64>,
    keep: Option<(File, String)>,
) -> std::result::Result<Decoded, String> {
    let mut head = [0u8; HEADER_LEN];
    src.read_exact(&mut head).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => NOT_A_SNAPSHOT.to_string(),
        _ => e.to_string(),
    })?;
    let h = Header::parse(&head)?;
    let pages = h.mem_size / PAGE;
    let records_len = h.pages_at - HEADER_LEN as u64;
    let most = MAX_RECORDS_LEN + 8 + pages * 16 + PAGE;
    if records_len > most || h.payload_len > most + pages * PAGE || h.payload_len < records_len {
        return Err(format!(
            "the header claims {} bytes of data, {records_len} before the pages; a snapshot of {} MiB holds at most {most} before its pages",
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
    let mut p = Payload { src, left: records_len, sum: Hasher::new() };
    let regs = p.pod()?;
    let sregs = p.pod()?;
    let xsave = p.pod()?;
    let xcrs = p.pod()?;
    let started = read_invocation(&mut p)?;
    let mounts = read_mounts(&mut p)?;
    let fs = read_handles(&mut p, mounts.len())?;
    let runs = read_runs(&mut p, pages, h.pages_at)?;
    // Zeros up to the pages (fewer than a page's worth).
    if p.left >= PAGE {
        return Err(format!("{} bytes between the records and the pages", p.left));
    }
    let mut pad = vec![0u8; p.left as usize];
    p.fill(&mut pad)?;
    if pad.iter().any(|&b| b != 0) {
        return Err("data between the records and the pages".into());
    }
    if u64::from(p.sum.finalize()) != h.checksum {
        return Err("checksum mismatch: the file is corrupted".into());
    }
    let resident = runs.iter().map(|r| r.count).sum::<u64>() * PAGE;
    if h.payload_len - records_len != resident {
        return Err(format!("{} bytes of pages, but the runs hold {resident}", h.payload_len - records_len));
    }
    let stored = StoredPages { runs, checksum: h.pages_checksum, source: None };
    let (memory, stored) = match keep {
        Some((file, path)) => (None, Some(StoredPages { source: Some((file, path)), ..stored })),
        None => {
            let mut src = p.src;
            let memory = memfd(h.mem_size).map_err(|e| e.to_string())?;
            stored.copy(
                |_, buf| {
                    src.read_exact(buf).map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => "truncated".to_string(),
                        _ => e.to_string(),
                    })
                },
                |first, bytes| memory.write_all_at(bytes, first * PAGE).map_err(|e| e.to_string()),
                || "checksum mismatch: the pages are corrupted".to_string(),
            )?;
            // Nothing may follow the payload (a stream's length is not
            // known up front).
            if src.read(&mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
                return Err("data past the end of the snapshot".into());
            }
            seal(memory.as_fd()).map_err(|e| e.to_string())?;
            (Some(memory), None)
        }
    };
    Ok(Decoded {
        mem_size: h.mem_size,
        point: h.point,
        limits: h.limits,
        vcpu: VcpuState { regs, sregs, xsave, xcrs },
        started,
        mounts,
        fs,
        memory,
        stored,
        resident,
    })
}

/// Writes `snap`'s file to `path` (created or truncated), synced; its
/// pages come from `memory`, the snapshot's memory file.
pub(super) fn encode(snap: &Inner, path: &Path, memory: &File) -> std::io::Result<()> {
    // The runs of non-zero pages go before the pages: found first.
    let mut runs: Vec<PageRun> = Vec::new();
    for_each_data_page(memory, snap.mem_size, |index, _| {
        match runs.last_mut() {
            Some(run) if run.first + run.count == index => run.count += 1,
            _ => runs.push(PageRun { first: index, count: 1, offset: 0 }),
        }
        Ok(())
    })?;
    let file = std::fs::File::create(path)?;
    let mut out = Sink { w: std::io::BufWriter::with_capacity(1 << 20, &file), len: 0, sum: Hasher::new() };
    // The header goes last, once the lengths and checksums are known:
    // until then it is zeros, which no loader accepts.
    out.w.write_all(&[0u8; HEADER_LEN])?;
    write_records(snap, &runs, &mut out)?;
    let pages_at = (HEADER_LEN as u64 + out.len).next_multiple_of(PAGE);
    out.put(&vec![0u8; (pages_at - HEADER_LEN as u64 - out.len) as usize])?;
    let checksum = std::mem::take(&mut out.sum).finalize();
    let mut buf = vec![0u8; (StoredPages::CHUNK * PAGE) as usize];
    for (first, _, n) in chunks(&runs) {
        let chunk = &mut buf[..(n * PAGE) as usize];
        memory.read_exact_at(chunk, first * PAGE)?;
        out.put(chunk)?;
    }
    let Sink { w, len, sum } = out;
    w.into_inner().map_err(|e| e.into_error())?;
    let mut h = Header::current(snap.mem_size, snap.point, snap.limits);
    h.payload_len = len;
    h.checksum = checksum.into();
    h.pages_at = pages_at;
    h.pages_checksum = sum.finalize().into();
    file.write_all_at(&h.to_bytes(), 0)?;
    file.sync_all()
}

/// The records before the pages (see the module's comment).
fn write_records(s: &Inner, runs: &[PageRun], out: &mut Sink<'_>) -> std::io::Result<()> {
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
    out.put_u64(runs.len() as u64)?;
    for run in runs {
        out.put_u64(run.first)?;
        out.put_u64(run.count)?;
    }
    Ok(())
}

/// The runs of pages: inside the guest's `pages`, in order, not touching
/// (the writer joins them), none empty; their pages follow one another in
/// the file from `pages_at`.
fn read_runs<R: Read>(p: &mut Payload<R>, pages: u64, pages_at: u64) -> std::result::Result<Vec<PageRun>, String> {
    let n = p.u64()?;
    if n > pages.div_ceil(2) {
        return Err(format!("{n} runs of pages; the guest's {pages} pages make at most {}", pages.div_ceil(2)));
    }
    let mut runs: Vec<PageRun> = Vec::new();
    let mut offset = pages_at;
    for _ in 0..n {
        let (first, count) = (p.u64()?, p.u64()?);
        let end = first.checked_add(count).filter(|&end| count > 0 && end <= pages);
        let Some(end) = end else {
            return Err(format!("pages {first} + {count} are outside the guest's {pages} pages"));
        };
        if runs.last().is_some_and(|r| r.first + r.count >= first) {
            return Err(format!("the run at page {first} is out of order or touches the one before"));
        }
        runs.push(PageRun { first, count, offset });
        offset += (end - first) * PAGE;
    }
    Ok(runs)
}

/// `runs` cut into pieces of at most [`StoredPages::CHUNK`] pages, in
/// order: (the first page's index, where it starts in the file, pages).
fn chunks(runs: &[PageRun]) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    runs.iter().flat_map(|r| {
        (0..r.count)
            .step_by(StoredPages::CHUNK as usize)
            .map(move |done| (r.first + done, r.offset + done * PAGE, (r.count - done).min(StoredPages::CHUNK)))
    })
}

/// Consecutive pages in a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageRun {
    /// The first page's index in guest RAM.
    first: u64,
    /// How many pages.
    count: u64,
    /// Where the first page starts in the file.
    offset: u64,
}

/// Where a loaded snapshot's pages are: the runs the load checked and,
/// for a regular file, the file, kept open. Read again, they must match
/// the header's checksum: a file changed since is refused
/// (`SnapshotFile`).
pub(super) struct StoredPages {
    runs: Vec<PageRun>,
    /// The pages' checksum.
    checksum: u64,
    /// The file and its path.
    source: Option<(File, String)>,
}

impl StoredPages {
    /// Pages read at a time.
    const CHUNK: u64 = 256;

    /// The byte ranges of guest RAM that hold data.
    pub(super) fn byte_ranges(&self) -> Vec<(u64, u64)> {
        self.runs.iter().map(|r| (r.first * PAGE, (r.first + r.count) * PAGE)).collect()
    }

    /// Reads the pages, a chunk of consecutive ones at a time, with
    /// `read(offset in the file, buffer)`, gives each chunk to
    /// `put(first page, bytes)`, then checks the checksum (`mismatch` if it
    /// differs: so an error can come after `put` saw pages; discard what it
    /// made).
    fn copy<E>(
        &self,
        mut read: impl FnMut(u64, &mut [u8]) -> std::result::Result<(), E>,
        mut put: impl FnMut(u64, &[u8]) -> std::result::Result<(), E>,
        mismatch: impl FnOnce() -> E,
    ) -> std::result::Result<(), E> {
        let most = self.runs.iter().map(|r| r.count).max().unwrap_or(0).min(Self::CHUNK);
        let mut buf = vec![0u8; (most * PAGE) as usize];
        let mut sum = Hasher::new();
        for (first, offset, n) in chunks(&self.runs) {
            let chunk = &mut buf[..(n * PAGE) as usize];
            read(offset, chunk)?;
            sum.update(chunk);
            put(first, chunk)?;
        }
        if u64::from(sum.finalize()) != self.checksum {
            return Err(mismatch());
        }
        Ok(())
    }

    /// Reads the pages from the file with `put` (see [`StoredPages::copy`]).
    fn copy_from_file(&self, put: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let (file, failed) = self.file()?;
        let read = |at: u64, buf: &mut [u8]| {
            file.read_exact_at(buf, at).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => failed(CHANGED),
                _ => failed(&e.to_string()),
            })
        };
        self.copy(read, put, || failed(MISMATCH))
    }

    /// A VM whose memory is these pages (the rest zero), read from the
    /// file straight into its RAM, a chunk per call.
    pub(super) fn new_vm(&self, mem_size: u64, huge: HugePages) -> Result<Vm> {
        let (file, failed) = self.file()?;
        let mut vm = Vm::for_snapshot_pages(mem_size, huge)?;
        let mut sum = Hasher::new();
        for (first, offset, n) in chunks(&self.runs) {
            let (gpa, len) = (first * PAGE, n * PAGE);
            match vm.pread_into(gpa, file.as_fd(), offset, len) {
                Ok(got) if got == len => {}
                Ok(_) => return Err(failed(CHANGED)),
                Err(e) => return Err(failed(&e.to_string())),
            }
            vm.with_guest_bytes(gpa, len, |bytes| sum.update(bytes))?;
        }
        if u64::from(sum.finalize()) != self.checksum {
            return Err(failed(MISMATCH));
        }
        Ok(vm)
    }

    /// The file, and the error for it.
    fn file(&self) -> Result<(&File, impl Fn(&str) -> Error + '_)> {
        let Some((file, path)) = &self.source else { return Err(super::no_memory_file()) };
        Ok((file, move |reason: &str| Error::SnapshotFile { path: path.clone(), reason: reason.to_string() }))
    }

    /// A sealed memory file of `mem_size` bytes holding these pages.
    pub(super) fn to_memory_file(&self, mem_size: u64) -> Result<File> {
        let memory = memfd(mem_size)?;
        self.copy_from_file(|first, bytes| {
            memory.write_all_at(bytes, first * PAGE).map_err(|e| Error::Internal {
                context: "cannot write snapshot memory".into(),
                source: Some(std::sync::Arc::new(e)),
            })
        })?;
        seal(memory.as_fd())?;
        Ok(memory)
    }
}

/// Why pages read from a snapshot's file are refused.
const CHANGED: &str = "the file changed since the snapshot was loaded";
const MISMATCH: &str = "checksum mismatch: the pages are corrupted, or the file changed since the snapshot was loaded";

/// Test hook for fuzzing the decoder past its checksums: rewrites the
/// header's payload length and checksums to match `file`'s contents (the
/// pages starting where the header says, or at the end of the file).
#[doc(hidden)]
pub fn reseal_for_fuzzing(file: &mut [u8]) {
    if file.len() < HEADER_LEN {
        return;
    }
    let (head, payload) = file.split_at_mut(HEADER_LEN);
    let pages_at = u64::from_le_bytes(head[88..96].try_into().unwrap_or_default());
    let split = usize::try_from(pages_at).unwrap_or(usize::MAX).saturating_sub(HEADER_LEN).min(payload.len());
    let (records, pages) = payload.split_at(split);
    head[56..64].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    head[64..72].copy_from_slice(&u64::from(crc32fast::hash(records)).to_le_bytes());
    head[80..88].copy_from_slice(&u64::from(crc32fast::hash(pages)).to_le_bytes());
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

const MAGIC: [u8; 8] = *b"HVSBSNAP";
/// Format 2: the guest's limits in the header; file handle records checked.
/// Format 3: the checksum is CRC-32 (IEEE).
/// Format 4: the program's whole argv and its environment (was: argv[0]).
/// Format 5: the pages in runs after the records, on a 4 KiB boundary,
/// with a checksum of their own (was: each page after its index).
const FORMAT: u32 = 5;
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
    /// Where the pages start in the file: a multiple of 4 KiB, after the
    /// header, within the payload.
    pages_at: u64,
    /// CRC-32 (IEEE) of the pages, as `checksum`.
    pages_checksum: u64,
    /// CRC-32 (IEEE) of the payload before the pages, in a 64-bit field
    /// (the upper half zero). It detects corruption (a torn write, flipped bits, a wrong
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
            pages_at: 0,
            pages_checksum: 0,
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
        b[80..88].copy_from_slice(&self.pages_checksum.to_le_bytes());
        b[88..96].copy_from_slice(&self.pages_at.to_le_bytes());
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
        let pages_at = u64_at(88);
        if pages_at < HEADER_LEN as u64 || !pages_at.is_multiple_of(PAGE) {
            return Err(format!("the pages cannot start at byte {pages_at}"));
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
            pages_at,
            pages_checksum: u64_at(80),
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

/// The records of a snapshot file as they are read: no read goes past
/// where the header says the pages start, and every byte read is
/// checksummed.
struct Payload<R> {
    src: R,
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
pub(super) fn data_extent(fd: BorrowedFd<'_>, at: u64, len: u64) -> Option<(u64, u64)> {
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

pub(super) fn memfd(len: u64) -> Result<File> {
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

pub(super) fn seal(fd: BorrowedFd<'_>) -> Result<()> {
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
        let mut h = Header::current(64 << 20, SnapshotPoint::Entry, limits);
        h.pages_at = 2 * PAGE;
        let mut head = h.to_bytes();
        assert!(Header::parse(&head).is_ok());
        // The pages start on a page boundary after the header.
        for at in [0, 96, PAGE + 8] {
            let mut bad = head;
            bad[88..96].copy_from_slice(&at.to_le_bytes());
            assert_eq!(Header::parse(&bad).err().unwrap_or_default(), format!("the pages cannot start at byte {at}"));
        }
        // Format 2 had another checksum, format 3 only argv[0], format 4
        // each page after its index: their files are refused, saying so.
        for old in [2u32, 3, 4] {
            head[8..12].copy_from_slice(&old.to_le_bytes());
            let err = Header::parse(&head).err().unwrap_or_default();
            assert_eq!(err, format!("snapshot format {old}; this build reads format {FORMAT}"));
        }
    }

    /// The argv and environment records of a snapshot file, as
    /// `write_records` lays them out.
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
        read_invocation(&mut Payload { src: bytes, left: bytes.len() as u64, sum: Hasher::new() })
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
