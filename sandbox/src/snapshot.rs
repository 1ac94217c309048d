//! Snapshots: a guest frozen at a well-defined point — right after the
//! runtime loaded the program (before its first instruction), or at a
//! checkpoint the program asked for by reading `/dev/hvsandbox/checkpoint`
//! — that sandboxes start from instead of booting.
//!
//! A snapshot is its guest RAM in a sealed memory file plus the vCPU's
//! registers. Sandboxes built from it map that file copy-on-write (no copy;
//! clones share every page they do not change) and, between runs, map it
//! afresh and put the registers back: nothing a run wrote survives, whatever
//! the guest claims. Snapshots can be saved to a file and loaded in another
//! process or on another host with the same runtime build.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use hvsandbox_core::{abi, VcpuState, Vm};

use crate::error::{Error, Result};

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

/// A frozen guest that sandboxes can start from. Cheap to clone (shared),
/// immutable, `Send + Sync`.
#[derive(Clone)]
pub struct Snapshot(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    /// Guest RAM, sealed.
    pub(crate) memory: OwnedFd,
    pub(crate) mem_size: u64,
    pub(crate) vcpu: VcpuState,
    pub(crate) point: SnapshotPoint,
    /// argv[0] of the program the snapshot runs (an entry snapshot's runs
    /// keep it).
    pub(crate) argv0: Vec<u8>,
    /// Read-only host directories the guest had mounted (with their kernel
    /// filesystem choice), in handle order: runs from the snapshot mount
    /// the same.
    pub(crate) mounts: Vec<crate::fs::Mount>,
    /// The host file service's handle table at the snapshot (the guest
    /// refers to host files by these handles).
    pub(crate) fs: Vec<crate::fs::FsEntry>,
    /// Bytes of guest RAM that hold data (the rest is zero).
    pub(crate) resident: u64,
    /// The pages a run from this snapshot wrote (learned from the first
    /// reset in this process): a new clone writes them ahead of its first
    /// run (see `Vm::touch_pages`).
    pub(crate) hot: std::sync::OnceLock<Vec<u32>>,
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

    pub(crate) fn memory_fd(&self) -> BorrowedFd<'_> {
        self.0.memory.as_fd()
    }

    /// Takes a snapshot of a stopped VM: its registers (already captured)
    /// and every page of RAM that holds data.
    pub(crate) fn capture(
        vm: &Vm,
        vcpu: VcpuState,
        point: SnapshotPoint,
        argv0: Vec<u8>,
        mounts: Vec<crate::fs::Mount>,
        fs: Vec<crate::fs::FsEntry>,
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
            write_all_at(memory.as_fd(), bytes, (start * page) as u64).map_err(|e| Error::Internal {
                context: "cannot write snapshot memory".into(),
                source: Some(Box::new(e)),
            })?;
            copied += bytes.len() as u64;
        }
        seal(memory.as_fd())?;
        Ok(Snapshot(Arc::new(Inner {
            memory,
            mem_size: len as u64,
            vcpu,
            point,
            argv0,
            mounts,
            fs,
            resident: copied,
            hot: std::sync::OnceLock::new(),
        })))
    }

    /// Writes the snapshot to `path`: a versioned header (format, guest ABI
    /// and runtime build, CPU features, memory size), the vCPU state, the
    /// mounts, and the non-zero pages, with a checksum over all of it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::SnapshotFile { path: path.display().to_string(), reason: e.to_string() };
        let mut body = Vec::new();
        self.encode(&mut body).map_err(io)?;
        let mut file = std::fs::File::create(path).map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(())
    }

    fn encode(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let s = &self.0;
        let mut h = Header::current(s.mem_size, s.point);
        let mut payload = Vec::new();
        put_bytes(&mut payload, pod_bytes(&s.vcpu.regs));
        put_bytes(&mut payload, pod_bytes(&s.vcpu.sregs));
        put_bytes(&mut payload, pod_bytes(&s.vcpu.xsave));
        put_bytes(&mut payload, pod_bytes(&s.vcpu.xcrs));
        put_bytes(&mut payload, &s.argv0);
        put_u64(&mut payload, s.mounts.len() as u64);
        for m in &s.mounts {
            put_bytes(&mut payload, m.host.as_os_str().as_bytes());
            put_bytes(&mut payload, m.guest.as_bytes());
            put_u64(&mut payload, u64::from(m.kernel_fs));
        }
        put_u64(&mut payload, s.fs.len() as u64);
        for e in &s.fs {
            match e {
                crate::fs::FsEntry::Mount(i) => {
                    put_u64(&mut payload, 1);
                    put_u64(&mut payload, *i as u64);
                }
                crate::fs::FsEntry::Child { parent, name, fmt, .. } => {
                    // Identity (dev, inode) is left out: it means nothing
                    // on another host; names decide there.
                    put_u64(&mut payload, 2);
                    put_u64(&mut payload, *parent);
                    put_u64(&mut payload, *fmt as u64);
                    put_bytes(&mut payload, name);
                }
                crate::fs::FsEntry::Blob => put_u64(&mut payload, 3),
            }
        }
        // Pages: (index, 4 KiB) for every non-zero page.
        let page = abi::PAGE_SIZE as usize;
        let mut buf = vec![0u8; page];
        for i in 0..(s.mem_size as usize / page) {
            read_exact_at(s.memory.as_fd(), &mut buf, (i * page) as u64)?;
            if buf.iter().any(|&b| b != 0) {
                put_u64(&mut payload, i as u64);
                payload.extend_from_slice(&buf);
            }
        }
        h.payload_len = payload.len() as u64;
        h.checksum = checksum(&payload);
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(&payload);
        Ok(())
    }

    /// Reads a snapshot written by [`Snapshot::save`]. A file from another
    /// format or runtime build, for other CPU features, truncated or
    /// corrupted, is refused with `SnapshotInvalid` saying why.
    pub fn load(path: impl AsRef<Path>) -> Result<Snapshot> {
        let path = path.as_ref();
        let bad = |reason: String| Error::SnapshotFile { path: path.display().to_string(), reason };
        let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        if len > MAX_FILE {
            return Err(bad(format!("{len} bytes is larger than any snapshot")));
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| bad(e.to_string()))?;
        Self::decode(&data).map_err(bad)
    }

    /// Parses a snapshot file's bytes; every field is checked.
    pub fn from_bytes(data: &[u8]) -> Result<Snapshot> {
        Self::decode(data).map_err(|reason| Error::SnapshotFile { path: "(bytes)".into(), reason })
    }

    fn decode(data: &[u8]) -> std::result::Result<Snapshot, String> {
        let h = Header::parse(data)?;
        let payload = &data[HEADER_LEN..];
        if payload.len() as u64 != h.payload_len {
            return Err(format!("truncated: {} of {} bytes", payload.len(), h.payload_len));
        }
        if checksum(payload) != h.checksum {
            return Err("checksum mismatch: the file is corrupted".into());
        }
        let mut r = Reader { data: payload, at: 0 };
        let regs = pod_from(r.bytes()?)?;
        let sregs = pod_from(r.bytes()?)?;
        let xsave = pod_from(r.bytes()?)?;
        let xcrs = pod_from(r.bytes()?)?;
        let argv0 = r.bytes()?.to_vec();
        let nmounts = r.u64()?;
        if nmounts > 1024 {
            return Err("too many mounts".into());
        }
        let mut mounts = Vec::new();
        for _ in 0..nmounts {
            let host = std::ffi::OsStr::from_bytes(r.bytes()?).to_owned();
            let guest = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| "a mount's guest path is not UTF-8")?;
            let kernel_fs = match r.u64()? {
                0 => false,
                1 => true,
                _ => return Err("a mount's kernel filesystem flag is not 0 or 1".into()),
            };
            mounts.push(crate::fs::Mount { host: std::path::PathBuf::from(host), guest, kernel_fs });
        }
        let nfs = r.u64()?;
        if nfs > crate::fs::MAX_HANDLES as u64 {
            return Err("too many file handles".into());
        }
        let mut fs = Vec::new();
        for _ in 0..nfs {
            fs.push(match r.u64()? {
                1 => {
                    let i = r.u64()? as usize;
                    if i >= mounts.len() {
                        return Err("a file handle names a missing mount".into());
                    }
                    crate::fs::FsEntry::Mount(i)
                }
                2 => {
                    let parent = r.u64()?;
                    let fmt = r.u64()? as u32;
                    let name = r.bytes()?.to_vec();
                    crate::fs::FsEntry::Child { parent, name, dev: 0, ino: 0, fmt }
                }
                3 => crate::fs::FsEntry::Blob,
                k => return Err(format!("invalid file handle record {k}")),
            });
        }
        let memory = memfd(h.mem_size).map_err(|e| e.to_string())?;
        let page = abi::PAGE_SIZE as usize;
        let pages = h.mem_size / page as u64;
        let mut resident = 0u64;
        while !r.done() {
            let i = r.u64()?;
            if i >= pages {
                return Err(format!("page {i} is outside the guest's {pages} pages"));
            }
            let bytes = r.take(page)?;
            write_all_at(memory.as_fd(), bytes, i * page as u64).map_err(|e| e.to_string())?;
            resident += page as u64;
        }
        seal(memory.as_fd()).map_err(|e| e.to_string())?;
        let vcpu = VcpuState { regs, sregs, xsave, xcrs };
        Ok(Snapshot(Arc::new(Inner {
            memory,
            mem_size: h.mem_size,
            vcpu,
            point: h.point,
            argv0,
            mounts,
            fs,
            resident,
            hot: std::sync::OnceLock::new(),
        })))
    }
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
    head[64..72].copy_from_slice(&checksum(payload).to_le_bytes());
}

/// Largest snapshot file accepted (guest memory is at most 16 GiB).
const MAX_FILE: u64 = abi::MAX_MEMORY + (64 << 20);
const MAGIC: [u8; 8] = *b"HVSBSNAP";
const FORMAT: u32 = 2;
const HEADER_LEN: usize = 96;

/// The fixed-size header of a snapshot file.
struct Header {
    format: u32,
    abi_version: u32,
    runtime_id: u64,
    cpu_features: [u32; 4],
    mem_size: u64,
    point: SnapshotPoint,
    payload_len: u64,
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
    fn current(mem_size: u64, point: SnapshotPoint) -> Header {
        Header {
            format: FORMAT,
            abi_version: abi::ABI_VERSION,
            runtime_id: runtime_id(),
            cpu_features: cpu_features(),
            mem_size,
            point,
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
        b
    }

    fn parse(data: &[u8]) -> std::result::Result<Header, String> {
        if data.len() < HEADER_LEN || data[0..8] != MAGIC {
            return Err("not an hvsandbox snapshot file".into());
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
        Ok(Header {
            format,
            abi_version,
            runtime_id: runtime,
            cpu_features: cpu,
            mem_size,
            point,
            payload_len: u64_at(56),
            checksum: u64_at(64),
        })
    }
}

/// Identity of the embedded guest runtime build.
fn runtime_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| checksum(hvsandbox_core::runtime::RUNTIME_IMAGE))
}

/// FNV-1a, 64 bits: detects corruption (not tampering: a snapshot file is
/// as trusted as the program it holds).
fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in data.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0100_0000_01b3);
        h ^= h >> 29;
    }
    h ^ data.len() as u64
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("truncated record")?;
        let b = &self.data[self.at..end];
        self.at = end;
        Ok(b)
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated")?))
    }
    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.u64()?;
        if n > 1 << 20 {
            return Err(format!("record of {n} bytes is too large"));
        }
        self.take(n as usize)
    }
    fn done(&self) -> bool {
        self.at == self.data.len()
    }
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

fn memfd(len: u64) -> Result<OwnedFd> {
    let err = |e: std::io::Error| Error::Internal {
        context: "cannot create snapshot memory".into(),
        source: Some(Box::new(e)),
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
    Ok(fd)
}

fn seal(fd: BorrowedFd<'_>) -> Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Error::Internal {
            context: "cannot seal snapshot memory".into(),
            source: Some(Box::new(std::io::Error::last_os_error())),
        });
    }
    Ok(())
}

fn write_all_at(fd: BorrowedFd<'_>, mut buf: &[u8], mut off: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: pwrite from a live buffer of its length.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
        off += n as u64;
    }
    Ok(())
}

fn read_exact_at(fd: BorrowedFd<'_>, mut buf: &mut [u8], mut off: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: pread into a live buffer of its length.
        let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = n as usize;
        buf = &mut buf[n..];
        off += n as u64;
    }
    Ok(())
}
