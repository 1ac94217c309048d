//! Loading an ELF program (static, static-PIE, or dynamic with its
//! PT_INTERP loader) from a file of the guest filesystem into the current
//! address space. Every offset and size in the file is checked here.
//!
//! Read-only segments map the file's cached frames in place (shared, so
//! every process running the same binary shares its text); writable ones
//! get private frames with the file bytes copied in.

use alloc::vec::Vec;

use hvsandbox_abi::user;

use crate::errno::*;
use crate::mm::{self, page_down, page_up, PROT_EXEC, PROT_READ, PROT_WRITE};
use crate::vfs::{self, FileData, NodeKind, NodeRef};

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PAGE: u64 = mm::PAGE;

/// What the stack builder needs to know about the loaded program.
#[derive(Clone, Copy)]
pub struct Loaded {
    /// Where execution starts (the interpreter's entry if there is one).
    pub entry: u64,
    /// The program's own entry (AT_ENTRY).
    pub prog_entry: u64,
    /// The interpreter's load base (AT_BASE), 0 without one.
    pub interp_base: u64,
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

#[derive(Clone, Copy)]
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn prot_of(flags: u32) -> u32 {
    let mut prot = 0;
    if flags & 4 != 0 {
        prot |= PROT_READ;
    }
    if flags & 2 != 0 {
        prot |= PROT_WRITE;
    }
    if flags & 1 != 0 {
        prot |= PROT_EXEC;
    }
    prot
}

/// A parsed and checked ELF file, not yet mapped.
pub struct Image {
    node: NodeRef,
    e_type: u16,
    entry: u64,
    phoff: u64,
    phent: u64,
    phdrs: Vec<Phdr>,
    pub interp: Option<Vec<u8>>,
}

fn with_data<T>(node: &NodeRef, f: impl FnOnce(&mut FileData) -> T) -> Result<T, i64> {
    match &node.kind {
        NodeKind::File(d) => Ok(f(&mut d.borrow_mut())),
        NodeKind::Dir(_) | NodeKind::ProcFd => Err(EISDIR),
        _ => Err(EACCES),
    }
}

fn read_exact(node: &NodeRef, off: u64, len: usize) -> Result<Vec<u8>, i64> {
    let mut buf = Vec::new();
    buf.try_reserve(len).map_err(|_| ENOMEM)?;
    buf.resize(len, 0);
    let n = with_data(node, |d| d.read_at(off, &mut buf))??;
    if n != len {
        return Err(ENOEXEC);
    }
    Ok(buf)
}

/// Reads and checks the headers of `node`.
pub fn parse(node: &NodeRef) -> Result<Image, i64> {
    let hdr = read_exact(node, 0, 64)?;
    if hdr.get(0..4) != Some(b"\x7fELF") || hdr[4] != 2 || hdr[5] != 1 {
        return Err(ENOEXEC);
    }
    let e_type = u16_at(&hdr, 16).ok_or(ENOEXEC)?;
    if u16_at(&hdr, 18) != Some(EM_X86_64) || !(e_type == ET_EXEC || e_type == ET_DYN) {
        return Err(ENOEXEC);
    }
    let entry = u64_at(&hdr, 24).ok_or(ENOEXEC)?;
    let phoff = u64_at(&hdr, 32).ok_or(ENOEXEC)?;
    let phent = u16_at(&hdr, 54).ok_or(ENOEXEC)? as u64;
    let phnum = u16_at(&hdr, 56).ok_or(ENOEXEC)? as u64;
    if phent < 56 || phnum == 0 || phnum > 256 {
        return Err(ENOEXEC);
    }
    let table = read_exact(node, phoff, (phent * phnum) as usize)?;
    let size = node.size();
    let mut phdrs = Vec::new();
    let mut interp = None;
    for i in 0..phnum as usize {
        let o = i * phent as usize;
        let ph = Phdr {
            p_type: u32_at(&table, o).ok_or(ENOEXEC)?,
            flags: u32_at(&table, o + 4).ok_or(ENOEXEC)?,
            offset: u64_at(&table, o + 8).ok_or(ENOEXEC)?,
            vaddr: u64_at(&table, o + 16).ok_or(ENOEXEC)?,
            filesz: u64_at(&table, o + 32).ok_or(ENOEXEC)?,
            memsz: u64_at(&table, o + 40).ok_or(ENOEXEC)?,
        };
        let file_end = ph.offset.checked_add(ph.filesz).ok_or(ENOEXEC)?;
        match ph.p_type {
            PT_LOAD => {
                if ph.filesz > ph.memsz || file_end > size || ph.vaddr % PAGE != ph.offset % PAGE {
                    return Err(ENOEXEC);
                }
                ph.vaddr.checked_add(ph.memsz).ok_or(ENOEXEC)?;
            }
            PT_INTERP => {
                if ph.filesz == 0 || ph.filesz > 4096 || file_end > size {
                    return Err(ENOEXEC);
                }
                let mut p = read_exact(node, ph.offset, ph.filesz as usize)?;
                while p.last() == Some(&0) {
                    p.pop();
                }
                interp = Some(p);
            }
            _ => {}
        }
        phdrs.push(ph);
    }
    if !phdrs.iter().any(|p| p.p_type == PT_LOAD) {
        return Err(ENOEXEC);
    }
    let img = Image { node: node.clone(), e_type, entry, phoff, phent, phdrs, interp };
    // The entry point must lie in the loaded segments (one outside the
    // address range, e.g. non-canonical, could not even be jumped to).
    let (lo, hi) = img.span();
    if entry < lo || entry >= hi {
        return Err(ENOEXEC);
    }
    Ok(img)
}

impl Image {
    fn span(&self) -> (u64, u64) {
        let loads = self.phdrs.iter().filter(|p| p.p_type == PT_LOAD);
        let lo = loads.clone().map(|p| page_down(p.vaddr)).min().unwrap_or(0);
        let hi = loads.map(|p| p.vaddr + p.memsz).max().unwrap_or(0);
        (lo, page_up(hi))
    }

    /// Maps the segments at `base` in the current address space; returns
    /// the end of the highest segment.
    /// `program`: the main program, which must leave room for its brk heap
    /// below the mmap area (an interpreter goes where `reserve` put it).
    fn map(&self, base: u64, program: bool) -> Result<u64, i64> {
        let (lo, hi) = self.span();
        let (start, end) = (lo.checked_add(base).ok_or(ENOEXEC)?, hi.checked_add(base).ok_or(ENOEXEC)?);
        if start < user::MIN_ADDR || (program && end > user::MMAP_TOP - user::BRK_MAX) || end > user::ADDR_LIMIT {
            return Err(ENOEXEC);
        }
        let mut bytes = Vec::new();
        for ph in self.phdrs.iter().filter(|p| p.p_type == PT_LOAD && p.memsz > 0) {
            let prot = prot_of(ph.flags) | PROT_READ;
            let va = ph.vaddr + base;
            let seg_start = page_down(va);
            let seg_end = page_up(va + ph.memsz);
            if prot & PROT_WRITE == 0 && ph.memsz == ph.filesz {
                // Read-only and no bss: the file's pages, shared.
                let first_page = page_down(ph.offset) / PAGE;
                let npages = (seg_end - seg_start) / PAGE;
                with_data(&self.node, |d| -> Result<(), i64> {
                    d.pin();
                    for i in 0..npages {
                        let frame = d.frame((first_page + i) as usize)?;
                        mm::map_shared_frame(seg_start + i * PAGE, frame, prot)?;
                    }
                    Ok(())
                })??;
                mm::add_vma(seg_start, seg_end, prot)?;
                continue;
            }
            mm::map_keep(seg_start, seg_end - seg_start, prot)?;
            // The file bytes, then zeros up to the end of their last page.
            let n = ph.filesz as usize;
            bytes.clear();
            bytes.try_reserve(n).map_err(|_| ENOMEM)?;
            bytes.resize(n, 0);
            if with_data(&self.node, |d| d.read_at(ph.offset, &mut bytes))?? != n {
                return Err(ENOEXEC);
            }
            mm::copy_to_frames(va, &bytes);
            let tail = page_up(va + ph.filesz) - (va + ph.filesz);
            if tail > 0 {
                let zeros = [0u8; PAGE as usize];
                mm::copy_to_frames(va + ph.filesz, &zeros[..tail as usize]);
            }
        }
        Ok(end)
    }

    fn phdr_va(&self, base: u64) -> u64 {
        if let Some(p) = self.phdrs.iter().find(|p| p.p_type == PT_PHDR) {
            return p.vaddr + base;
        }
        self.phdrs
            .iter()
            .find(|p| p.p_type == PT_LOAD && (p.offset..p.offset + p.filesz).contains(&self.phoff))
            .map_or(0, |p| p.vaddr + base + (self.phoff - p.offset))
    }
}

/// Resolves and parses the interpreter a program asks for.
pub fn parse_interp(img: &Image) -> Result<Option<Image>, i64> {
    let Some(path) = &img.interp else {
        return Ok(None);
    };
    let node = vfs::resolve(&vfs::root(), path, true)?;
    let interp = parse(&node)?;
    if interp.interp.is_some() || interp.e_type != ET_DYN {
        return Err(ELIBBAD);
    }
    Ok(Some(interp))
}

const ELIBBAD: i64 = 80;

/// Maps a parsed program (and its interpreter) into the current, empty
/// address space.
pub fn load(img: &Image, interp: Option<&Image>) -> Result<Loaded, i64> {
    let base = if img.e_type == ET_DYN { user::PIE_BASE } else { 0 };
    let top = img.map(base, true)?;
    mm::set_brk_start(top);
    let mut loaded = Loaded {
        entry: img.entry.wrapping_add(base),
        prog_entry: img.entry.wrapping_add(base),
        interp_base: 0,
        phdr: img.phdr_va(base),
        phent: img.phent,
        phnum: img.phdrs.len() as u64,
    };
    if let Some(ld) = interp {
        let (lo, hi) = ld.span();
        let at = mm::reserve(hi - lo)?;
        let ld_base = at - lo;
        ld.map(ld_base, false)?;
        loaded.interp_base = ld_base;
        loaded.entry = ld.entry.wrapping_add(ld_base);
    }
    Ok(loaded)
}

/// A message for an exec error, for programs that cannot start at boot.
pub fn describe(e: i64) -> &'static str {
    match e {
        ENOEXEC => "not a valid x86-64 ELF executable",
        ENOENT => {
            "it is dynamically linked and its interpreter (dynamic loader) is not in the sandbox's filesystem: \
             mount the directories it needs (e.g. --mount /lib:/lib --mount /lib64:/lib64 --mount /usr:/usr)"
        }
        ELIBBAD => "its interpreter is not a valid dynamic loader",
        ENOMEM => "out of memory while loading it",
        EACCES => "permission denied",
        _ => "it could not be loaded",
    }
}
