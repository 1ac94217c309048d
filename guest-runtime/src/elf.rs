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
/// Whether the stack must be executable (its flags' PF_X).
const PT_GNU_STACK: u32 = 0x6474_e551;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PAGE: u64 = mm::PAGE;
const HUGE: u64 = hvsandbox_abi::HUGE_PAGE_SIZE;

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
    /// The vDSO's address (AT_SYSINFO_EHDR).
    pub vdso: u64,
    /// The program asks for an executable stack (PT_GNU_STACK with PF_X,
    /// as GCC's trampolines for nested functions need); without one, or
    /// without that flag, the stack is not executable, as on Linux x86-64.
    pub exec_stack: bool,
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

impl Phdr {
    /// A segment mapped from the file in place: read-only, no bss (the
    /// file's frames, shared; anything else gets private copies).
    fn in_place(&self) -> bool {
        prot_of(self.flags) & PROT_WRITE == 0 && self.memsz == self.filesz
    }
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

/// An ELF file's checked headers.
pub struct Headers {
    e_type: u16,
    entry: u64,
    phoff: u64,
    phent: u64,
    phdrs: Vec<Phdr>,
    pub interp: Option<Vec<u8>>,
}

/// A parsed and checked ELF file, not yet mapped.
pub struct Image {
    node: NodeRef,
    hdr: Headers,
}

impl Image {
    /// The file it was parsed from.
    pub fn node(&self) -> &NodeRef {
        &self.node
    }
}

impl core::ops::Deref for Image {
    type Target = Headers;
    fn deref(&self) -> &Headers {
        &self.hdr
    }
}

fn with_data<T>(node: &NodeRef, f: impl FnOnce(&mut FileData) -> T) -> Result<T, i64> {
    match &node.kind {
        NodeKind::File(d) => Ok(f(&mut d.borrow_mut())),
        NodeKind::Dir(_) | NodeKind::ProcFd(_) | NodeKind::Proc(_) => Err(EISDIR),
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
    let hdr = check(&mut |off, len| read_exact(node, off, len), node.size())?;
    Ok(Image { node: node.clone(), hdr })
}

/// Checks the headers of a file of `size` bytes that `read(offset, len)`
/// reads exactly (ENOEXEC when it ends first): the identification, type
/// and machine, the program header table, and every segment's offsets
/// and sizes; the entry point must lie in a loaded segment.
fn check(read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, i64>, size: u64) -> Result<Headers, i64> {
    let hdr = read(0, 64)?;
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
    let table = read(phoff, (phent * phnum) as usize)?;
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
                let mut p = read(ph.offset, ph.filesz as usize)?;
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
    let img = Headers { e_type, entry, phoff, phent, phdrs, interp };
    // The entry point must lie in the loaded segments (one outside the
    // address range, e.g. non-canonical, could not even be jumped to).
    let (lo, hi) = img.span();
    if entry < lo || entry >= hi {
        return Err(ENOEXEC);
    }
    Ok(img)
}

impl Headers {
    fn span(&self) -> (u64, u64) {
        let loads = self.phdrs.iter().filter(|p| p.p_type == PT_LOAD);
        let lo = loads.clone().map(|p| page_down(p.vaddr)).min().unwrap_or(0);
        let hi = loads.map(|p| p.vaddr + p.memsz).max().unwrap_or(0);
        (lo, page_up(hi))
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

impl Image {
    /// Maps the segments at `base` in the current address space; returns
    /// the end of the highest segment. Each segment's pages of the file
    /// go into `named` (start, end, file offset), for `/proc/<pid>/maps`
    /// to name as Linux does (its zero-filled rest is anonymous).
    /// `program`: the main program, which must leave room for its brk heap
    /// below the mmap area (an interpreter goes where `reserve` put it).
    fn map(&self, base: u64, program: bool, named: &mut Vec<(u64, u64, u64)>) -> Result<u64, i64> {
        let (lo, hi) = self.span();
        let (start, end) = (lo.checked_add(base).ok_or(ENOEXEC)?, hi.checked_add(base).ok_or(ENOEXEC)?);
        if start < user::MIN_ADDR || (program && end > user::MMAP_TOP - user::BRK_MAX) || end > user::ADDR_LIMIT {
            return Err(ENOEXEC);
        }
        let huge = self.map_huge_ranges(base)?;
        let mut bytes = Vec::new();
        for (index, ph) in self.phdrs.iter().enumerate().filter(|(_, p)| p.p_type == PT_LOAD && p.memsz > 0) {
            // The pages this segment put in 2 MiB pages of its own are
            // mapped already (another segment's are not skipped: over
            // them it finds its pages mapped, as page by page).
            let in_huge = |va: u64| huge.binary_search(&(index, va & !(HUGE - 1))).is_ok();
            let prot = prot_of(ph.flags) | PROT_READ;
            let va = ph.vaddr + base;
            let seg_start = page_down(va);
            let seg_end = page_up(va + ph.memsz);
            // Where the rewriter finds the functions of code mapped here,
            // and what maps names.
            let mut code = |node| {
                if prot & PROT_EXEC != 0 {
                    crate::rewrite::file_mapped(seg_start, seg_end, page_down(ph.offset), node);
                }
                if ph.filesz > 0 && named.try_reserve(1).is_ok() {
                    named.push((seg_start, page_up(va + ph.filesz).min(seg_end), page_down(ph.offset)));
                }
            };
            if ph.in_place() {
                // Read-only and no bss: the file's pages, shared.
                let first_page = page_down(ph.offset) / PAGE;
                let npages = (seg_end - seg_start) / PAGE;
                with_data(&self.node, |d| -> Result<(), i64> {
                    d.pin();
                    for i in (0..npages).filter(|&i| !in_huge(seg_start + i * PAGE)) {
                        let frame = d.frame((first_page + i) as usize)?;
                        mm::map_shared_frame(seg_start + i * PAGE, frame, prot)?;
                    }
                    Ok(())
                })??;
                mm::add_vma(seg_start, seg_end, prot)?;
                code(&self.node);
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
            // A fresh mapping of this space's own: nothing is shared.
            let _ = mm::copy_to_frames(va, &bytes);
            let tail = page_up(va + ph.filesz) - (va + ph.filesz);
            if tail > 0 {
                let zeros = [0u8; PAGE as usize];
                let _ = mm::copy_to_frames(va + ph.filesz, &zeros[..tail as usize]);
            }
            code(&self.node);
        }
        Ok(end)
    }

    /// Maps the whole 2 MiB ranges of this image's read-only segments
    /// without bss (as mapped at `base`) whose file pages lie in 512
    /// contiguous frames from a 2 MiB boundary (the host lays a large
    /// program's file out so) as 2 MiB pages (`mm::map_file_huge`);
    /// returns them as (segment's index in `phdrs`, address), sorted.
    /// The segment loop maps the rest.
    fn map_huge_ranges(&self, base: u64) -> Result<Vec<(usize, u64)>, i64> {
        let mut mapped = Vec::new();
        let segments = self.phdrs.iter().enumerate();
        for (index, ph) in segments.filter(|(_, p)| p.p_type == PT_LOAD && p.memsz > 0 && p.in_place()) {
            let prot = prot_of(ph.flags) | PROT_READ;
            let va = ph.vaddr + base;
            let (seg_start, seg_end) = (page_down(va), page_up(va + ph.memsz));
            let mut at = seg_start.next_multiple_of(HUGE);
            while at.saturating_add(HUGE) <= seg_end {
                let first = (page_down(ph.offset) + (at - seg_start)) / PAGE;
                let frames = with_data(&self.node, |d| -> Result<Option<u64>, i64> {
                    let start = d.frame(first as usize)?;
                    if !start.is_multiple_of(HUGE) {
                        return Ok(None);
                    }
                    for k in 1..HUGE / PAGE {
                        if d.frame((first + k) as usize)? != start + k * PAGE {
                            return Ok(None);
                        }
                    }
                    d.pin();
                    Ok(Some(start))
                })??;
                if let Some(start) = frames {
                    if mapped.try_reserve(1).is_ok() && mm::map_file_huge(at, start, prot) {
                        mapped.push((index, at));
                    }
                }
                at += HUGE;
            }
        }
        Ok(mapped)
    }
}

/// Where a position-independent program from a file of `size` bytes
/// goes: Linux's base, or for a file the host lays out 2 MiB-aligned
/// (4 MiB or more: `core`'s `boot.rs`) the 2 MiB boundary below it, so
/// that its addresses and its file's frames agree modulo 2 MiB and its
/// read-only segments can go in 2 MiB pages (`Image::map_huge_ranges`).
fn pie_base(size: u64) -> u64 {
    if size >= 2 * HUGE {
        user::PIE_BASE & !(HUGE - 1)
    } else {
        user::PIE_BASE
    }
}

/// Resolves and parses the interpreter a program asks for.
pub fn parse_interp(img: &Image) -> Result<Option<Image>, i64> {
    let Some(path) = &img.interp else { return Ok(None) };
    let node = vfs::resolve(&vfs::root(), path, true)?;
    let interp = parse(&node)?;
    if interp.interp.is_some() || interp.e_type != ET_DYN {
        return Err(ELIBBAD);
    }
    Ok(Some(interp))
}

/// The file of the dynamic loader `node` (an ELF program) names, if any.
pub fn interpreter_node(node: &NodeRef) -> Option<NodeRef> {
    let img = parse(node).ok()?;
    Some(parse_interp(&img).ok()??.node)
}

const ELIBBAD: i64 = 80;

/// The file ranges of a loaded program and of its interpreter: (start,
/// end, file offset) of each segment's pages of the file.
#[derive(Default)]
pub struct Named {
    pub program: Vec<(u64, u64, u64)>,
    pub interp: Vec<(u64, u64, u64)>,
}

/// Maps a parsed program (and its interpreter) into the current, empty
/// address space; `named` gets where each shows its file.
pub fn load(img: &Image, interp: Option<&Image>, named: &mut Named) -> Result<Loaded, i64> {
    let base = if img.e_type == ET_DYN { pie_base(img.node.size()) } else { 0 };
    let top = img.map(base, true, &mut named.program)?;
    mm::set_brk_start(top);
    let exec_stack = img.phdrs.iter().any(|p| p.p_type == PT_GNU_STACK && p.flags & 1 != 0);
    let mut loaded = Loaded {
        exec_stack,
        entry: img.entry.wrapping_add(base),
        prog_entry: img.entry.wrapping_add(base),
        interp_base: 0,
        phdr: img.phdr_va(base),
        phent: img.phent,
        phnum: img.phdrs.len() as u64,
        vdso: crate::vdso::map()?,
    };
    if let Some(ld) = interp {
        let (lo, hi) = ld.span();
        let at = mm::reserve(hi - lo)?;
        let ld_base = at - lo;
        ld.map(ld_base, false, &mut named.interp)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 x86-64 file: header, program headers at 64, then `tail`
    /// bytes of content. Each segment is (type, flags, offset, vaddr,
    /// filesz, memsz).
    fn elf(e_type: u16, entry: u64, segs: &[(u32, u32, u64, u64, u64, u64)], tail: usize) -> Vec<u8> {
        let mut b = alloc::vec![0u8; 64 + 56 * segs.len() + tail];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, &(t, flags, off, va, filesz, memsz)) in segs.iter().enumerate() {
            let o = 64 + 56 * i;
            b[o..o + 4].copy_from_slice(&t.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&va.to_le_bytes());
            b[o + 32..o + 40].copy_from_slice(&filesz.to_le_bytes());
            b[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        b
    }

    fn check_bytes(b: &[u8]) -> Result<Headers, i64> {
        check(
            &mut |off, len| {
                let start = usize::try_from(off).map_err(|_| ENOEXEC)?;
                b.get(start..start.checked_add(len).ok_or(ENOEXEC)?).map(<[u8]>::to_vec).ok_or(ENOEXEC)
            },
            b.len() as u64,
        )
    }

    const TEXT: u64 = 0x40_0000;

    fn good() -> Vec<u8> {
        elf(
            ET_EXEC,
            TEXT + 0x100,
            &[(PT_LOAD, 5, 0, TEXT, 0x200, 0x200), (PT_LOAD, 6, 0x200, TEXT + 0x1200, 0x10, 0x1000)],
            0x200,
        )
    }

    #[test]
    fn a_static_executable_is_accepted() {
        let h = check_bytes(&good()).unwrap();
        assert_eq!((h.e_type, h.entry, h.phdrs.len()), (ET_EXEC, TEXT + 0x100, 2));
        assert!(h.interp.is_none());
        assert_eq!(h.span(), (TEXT, TEXT + 0x3000));
        assert_eq!(h.phdr_va(0), TEXT + 64, "the table lies in the first segment");
        assert_eq!(prot_of(5), PROT_READ | PROT_EXEC);
    }

    #[test]
    fn bad_identification_type_or_table_is_enoexec() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (at, v) in [(0, 0u8), (4, 1), (5, 2), (18, 3), (16, 1)] {
            let mut b = good();
            b[at] = v;
            cases.push(b);
        }
        let mut b = good();
        b[56..58].copy_from_slice(&0u16.to_le_bytes()); // no program headers
        cases.push(b);
        let mut b = good();
        b[54..56].copy_from_slice(&40u16.to_le_bytes()); // entries too small
        cases.push(b);
        let mut b = good();
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // table outside the file
        cases.push(b);
        cases.push(good()[..63].to_vec()); // cut inside the header
        cases.push(good()[..64 + 56].to_vec()); // cut inside the table
        for (i, b) in cases.iter().enumerate() {
            assert_eq!(check_bytes(b).err(), Some(ENOEXEC), "case {i}");
        }
    }

    #[test]
    fn segments_must_fit_the_file_and_hold_the_entry() {
        let cases = [
            // File bytes past the end of the file.
            elf(ET_EXEC, TEXT, &[(PT_LOAD, 5, 0, TEXT, 0x10_0000, 0x10_0000)], 0x100),
            // An offset so large that offset + size wraps.
            elf(ET_EXEC, TEXT, &[(PT_LOAD, 5, u64::MAX - 4, TEXT, 0x10, 0x10)], 0x100),
            // More file bytes than memory.
            elf(ET_EXEC, TEXT, &[(PT_LOAD, 5, 0, TEXT, 0x100, 0x80)], 0x100),
            // Address and offset not congruent modulo the page.
            elf(ET_EXEC, TEXT + 0x10, &[(PT_LOAD, 5, 0, TEXT + 8, 0x100, 0x100)], 0x100),
            // A segment that wraps the address space.
            elf(ET_EXEC, u64::MAX - 0x1000 + 0x10, &[(PT_LOAD, 5, 0, u64::MAX - 0xfff, 0x100, 0x2000)], 0x100),
            // The entry outside every segment.
            elf(ET_EXEC, TEXT + 0x5000, &[(PT_LOAD, 5, 0, TEXT, 0x100, 0x100)], 0x100),
            // No loadable segment at all.
            elf(ET_EXEC, TEXT, &[(PT_PHDR, 4, 64, TEXT, 56, 56)], 0x100),
            // An interpreter path that is empty or too long.
            elf(ET_DYN, 0x100, &[(PT_LOAD, 5, 0, 0, 0x100, 0x100), (PT_INTERP, 4, 0x80, 0, 0, 0)], 0x100),
            elf(ET_DYN, 0x100, &[(PT_LOAD, 5, 0, 0, 0x100, 0x100), (PT_INTERP, 4, 0, 0, 4097, 4097)], 0x1100),
        ];
        for (i, b) in cases.iter().enumerate() {
            assert_eq!(check_bytes(b).err(), Some(ENOEXEC), "case {i}");
        }
    }

    #[test]
    fn the_interpreter_path_is_read_without_its_nul() {
        let mut b = elf(ET_DYN, 0x100, &[(PT_LOAD, 5, 0, 0, 0x200, 0x200), (PT_INTERP, 4, 0x100, 0, 12, 12)], 0x200);
        b[0x100..0x10c].copy_from_slice(b"/lib/ld.so\0\0");
        let h = check_bytes(&b).unwrap();
        assert_eq!(h.interp.as_deref(), Some(&b"/lib/ld.so"[..]));
        assert_eq!(h.e_type, ET_DYN);
    }
}
