//! Where an ELF file's functions start, for the system-call rewriter
//! (`rewrite.rs`): the ranges its unwind table (`.eh_frame`: one FDE per
//! function, and per hand-written routine with CFI) and its symbol tables
//! (`.symtab`, `.dynsym`: FUNC symbols with a size) cover. Each range
//! starts at an instruction boundary; the rewriter sweeps instruction
//! lengths from there. Built from the file's bytes (every offset and size
//! checked, every table bounded), then only looked up.

use alloc::vec::Vec;

/// Largest `.eh_frame` read, and most symbols read per table.
const MAX_EH_FRAME: u64 = 16 << 20;
const MAX_SYMS: u64 = 1 << 19;
/// Most ranges kept (16 bytes each).
const MAX_RANGES: usize = 1 << 18;

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const PT_LOAD: u32 = 1;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;

/// One loaded segment: file offset, file size, virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub filesz: u64,
    pub vaddr: u64,
}

/// The function ranges of one ELF file, in its own virtual addresses.
#[derive(Debug, Default)]
pub struct FnIndex {
    pub segments: Vec<Segment>,
    /// `[start, end)`, sorted by start; they may overlap (aliases, an FDE
    /// and a symbol for the same function).
    ranges: Vec<(u64, u64)>,
    /// Gaps between the ranges (see `gaps_between`), sorted.
    gaps: Vec<(u64, u64)>,
}

/// Largest gap between functions taken for padding: alignment leaves
/// fewer bytes; anything longer may be code no table describes.
const MAX_GAP: u64 = 64;

impl FnIndex {
    /// The virtual address of file offset `off`, if a segment loads it.
    pub fn vaddr_of(&self, off: u64) -> Option<Segment> {
        self.segments.iter().copied().find(|s| off >= s.offset && off - s.offset < s.filesz)
    }

    /// The closest start of a range holding `va` (a function start at or
    /// below it).
    pub fn function_start(&self, va: u64) -> Option<u64> {
        let n = self.ranges.partition_point(|r| r.0 <= va);
        // Ranges are short against the distance between most functions:
        // look back over a few (nested or overlapping ones).
        self.ranges[..n].iter().rev().take(16).filter(|r| r.1 > va).map(|r| r.0).max()
    }

    /// The gaps no range covers, of `MAX_GAP` bytes at most (alignment
    /// padding between functions), that meet `[lo, hi)`.
    pub fn gaps_between(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let i = self.gaps.partition_point(|g| g.1 <= lo);
        self.gaps[i..].iter().copied().take_while(move |g| g.0 < hi)
    }

    /// The function ranges, `[start, end)`, sorted by start (for the
    /// eager sweep of a program at its entry, `eager.rs`).
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// Reads exactly `len` bytes at `off` (None if the file ends first or
/// memory runs out).
fn read_vec(read: &mut dyn FnMut(u64, &mut [u8]) -> usize, off: u64, len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    (read(off, &mut v) == len).then_some(v)
}

/// Builds the index of the ELF file `read` reads (None if it is not a
/// 64-bit little-endian x86-64 ELF file or has no usable table).
pub fn build(read: &mut dyn FnMut(u64, &mut [u8]) -> usize) -> Option<FnIndex> {
    let eh = read_vec(read, 0, 64)?;
    if eh.get(0..4) != Some(b"\x7fELF") || eh[4] != 2 || eh[5] != 1 || u16_at(&eh, 18)? != 62 {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(&eh, 32)?, u16_at(&eh, 54)? as u64, u16_at(&eh, 56)? as u64);
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(&eh, 40)?, u16_at(&eh, 58)? as u64, u16_at(&eh, 60)? as u64, u16_at(&eh, 62)? as usize);
    if phentsize != 56 || phnum > 256 {
        return None;
    }
    let ph = read_vec(read, phoff, phentsize * phnum)?;
    let mut idx = FnIndex::default();
    let mut eh_frame_hdr = None;
    for i in 0..phnum as usize {
        let p = i * phentsize as usize;
        let (offset, vaddr, filesz) = (u64_at(&ph, p + 8)?, u64_at(&ph, p + 16)?, u64_at(&ph, p + 32)?);
        match u32_at(&ph, p)? {
            PT_LOAD => idx.segments.push(Segment { offset, filesz, vaddr }),
            PT_GNU_EH_FRAME => eh_frame_hdr = Some((offset, vaddr, filesz)),
            _ => {}
        }
    }
    // Section headers: .eh_frame by name, the symbol tables by type.
    let mut eh_frame = None;
    if shentsize == 64 && shnum > 0 {
        if let Some(sh) = read_vec(read, shoff, shentsize * shnum) {
            let shdr = |i: usize| -> Option<(u32, u32, u64, u64, u64, u32, u64)> {
                let s = i.checked_mul(shentsize as usize)?;
                Some((
                    u32_at(&sh, s)?,      // name
                    u32_at(&sh, s + 4)?,  // type
                    u64_at(&sh, s + 16)?, // addr
                    u64_at(&sh, s + 24)?, // offset
                    u64_at(&sh, s + 32)?, // size
                    u32_at(&sh, s + 40)?, // link
                    u64_at(&sh, s + 56)?, // entsize
                ))
            };
            let names = shdr(shstrndx).and_then(|(_, _, _, off, size, _, _)| read_vec(read, off, size.min(1 << 20)));
            for i in 0..shnum as usize {
                let Some((name, ty, addr, off, size, link, entsize)) = shdr(i) else { break };
                let is_eh =
                    names.as_ref().and_then(|n| n.get(name as usize..)).is_some_and(|n| n.starts_with(b".eh_frame\0"));
                if is_eh {
                    eh_frame = Some((off, addr, size));
                } else if (ty == SHT_SYMTAB || ty == SHT_DYNSYM) && entsize == 24 {
                    let _ = link;
                    add_symbols(read, &mut idx.ranges, off, size / 24);
                }
            }
        }
    }
    if eh_frame.is_none() {
        // No section headers (or no .eh_frame among them): the header the
        // loader maps points at the table.
        if let Some((off, va, len)) = eh_frame_hdr {
            let h = read_vec(read, off, len.min(64))?;
            // version 1, eh_frame_ptr encoded pcrel|sdata4.
            if h.first() == Some(&1) && h.get(1) == Some(&0x1b) {
                let target = (va + 4).wrapping_add(u32_at(&h, 4)? as i32 as i64 as u64);
                // Its file offset and the rest of its segment.
                if let Some(s) = idx.segments.iter().find(|s| target >= s.vaddr && target - s.vaddr < s.filesz) {
                    let at = s.offset + (target - s.vaddr);
                    eh_frame = Some((at, target, s.filesz - (target - s.vaddr)));
                }
            }
        }
    }
    if let Some((off, addr, size)) = eh_frame {
        if let Some(bytes) = read_vec(read, off, size.min(MAX_EH_FRAME)) {
            parse_eh_frame(&bytes, addr, &mut idx.ranges);
        }
    }
    if idx.ranges.is_empty() {
        return None;
    }
    idx.ranges.sort_unstable();
    idx.ranges.dedup();
    let mut covered_to = 0;
    for &(start, end) in &idx.ranges {
        if covered_to != 0 && start > covered_to && start - covered_to <= MAX_GAP && idx.gaps.try_reserve(1).is_ok() {
            idx.gaps.push((covered_to, start));
        }
        covered_to = covered_to.max(end);
    }
    Some(idx)
}

/// FUNC symbols with a size, from a symbol table of `count` entries.
fn add_symbols(read: &mut dyn FnMut(u64, &mut [u8]) -> usize, out: &mut Vec<(u64, u64)>, off: u64, count: u64) {
    const CHUNK: u64 = 2048;
    let count = count.min(MAX_SYMS);
    let mut i = 0;
    while i < count {
        let n = CHUNK.min(count - i);
        let Some(buf) = read_vec(read, off + i * 24, n * 24) else { return };
        for s in buf.chunks_exact(24) {
            let (info, shndx) = (s[4], u16::from_le_bytes([s[6], s[7]]));
            let value = u64::from_le_bytes(s[8..16].try_into().unwrap_or_default());
            let size = u64::from_le_bytes(s[16..24].try_into().unwrap_or_default());
            if info & 0xf == 2 && shndx != 0 && size > 0 && out.len() < MAX_RANGES && out.try_reserve(1).is_ok() {
                out.push((value, value.saturating_add(size)));
            }
        }
        i += n;
    }
}

/// A ULEB128 at `*p`.
fn uleb(b: &[u8], p: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*p)?;
        *p += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// An encoded pointer (DW_EH_PE_*) at `*p`; `field_va` is its address
/// (for pc-relative ones). Only the absolute and pc-relative forms.
fn pointer(b: &[u8], p: &mut usize, enc: u8, field_va: u64) -> Option<u64> {
    let start = *p;
    let v = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => {
            *p += 8;
            u64_at(b, start)?
        }
        0x02 => {
            *p += 2;
            u16_at(b, start)? as u64
        }
        0x03 => {
            *p += 4;
            u32_at(b, start)? as u64
        }
        0x0a => {
            *p += 2;
            u16_at(b, start)? as i16 as i64 as u64
        }
        0x0b => {
            *p += 4;
            u32_at(b, start)? as i32 as i64 as u64
        }
        0x01 => uleb(b, p)?,
        _ => return None,
    };
    match enc & 0x70 {
        0x00 => Some(v),
        0x10 => Some(field_va.wrapping_add(v)),
        _ => None,
    }
}

/// The FDE pointer encoding a CIE at `cie` (its length field) gives.
fn cie_encoding(b: &[u8], cie: usize) -> Option<u8> {
    let len = u32_at(b, cie)? as usize;
    if len == 0xffff_ffff || u32_at(b, cie + 4)? != 0 {
        return None;
    }
    let end = cie.checked_add(4)?.checked_add(len)?;
    let b = b.get(..end)?;
    let version = *b.get(cie + 8)?;
    let mut p = cie + 9;
    let aug_start = p;
    while *b.get(p)? != 0 {
        p += 1;
    }
    let aug = &b[aug_start..p];
    p += 1;
    uleb(b, &mut p)?; // code alignment
    uleb(b, &mut p)?; // data alignment (as unsigned: only skipped)
    if version == 1 {
        p += 1;
    } else {
        uleb(b, &mut p)?;
    }
    if aug.first() != Some(&b'z') {
        return Some(0); // absolute pointers
    }
    uleb(b, &mut p)?; // augmentation data length
    for &c in &aug[1..] {
        match c {
            b'R' => return b.get(p).copied(),
            b'L' => p += 1,
            b'P' => {
                let enc = *b.get(p)?;
                p += 1;
                pointer(b, &mut p, enc & 0x0f, 0)?;
            }
            b'S' | b'B' | b'G' => {}
            _ => return None,
        }
    }
    Some(0)
}

/// Adds the range of every FDE of `.eh_frame` (`b`, loaded at `va`).
fn parse_eh_frame(b: &[u8], va: u64, out: &mut Vec<(u64, u64)>) {
    let mut at = 0usize;
    let mut last_cie: Option<(usize, u8)> = None;
    while let Some(len) = u32_at(b, at) {
        if len == 0 || len == 0xffff_ffff {
            return; // the terminator; 64-bit lengths are not emitted for x86-64
        }
        let Some(next) = at.checked_add(4 + len as usize).filter(|&n| n <= b.len()) else { return };
        let Some(id) = u32_at(b, at + 4) else { return };
        if id != 0 {
            // An FDE: its CIE lies `id` bytes before this field.
            let cie = (at + 4).checked_sub(id as usize);
            let enc = match (cie, last_cie) {
                (Some(c), Some((lc, e))) if c == lc => Some(e),
                (Some(c), _) => cie_encoding(b, c).inspect(|&e| last_cie = Some((c, e))),
                _ => None,
            };
            if let Some(enc) = enc {
                let mut p = at + 8;
                let field_va = va.wrapping_add(p as u64);
                let start = pointer(b, &mut p, enc, field_va);
                let range = pointer(b, &mut p, enc & 0x0f, 0);
                if let (Some(s), Some(r)) = (start, range) {
                    if p <= next && r > 0 && out.len() < MAX_RANGES && out.try_reserve(1).is_ok() {
                        out.push((s, s.saturating_add(r)));
                    }
                }
            }
        }
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn index_of(path: &str) -> Option<FnIndex> {
        let data = std::fs::read(path).ok()?;
        build(&mut |off, buf| {
            let Some(src) = usize::try_from(off).ok().and_then(|o| data.get(o..)) else { return 0 };
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        })
    }

    #[test]
    fn an_eh_frame_gives_function_ranges() {
        // A CIE (zR, pcrel|sdata4) and two FDEs, then the terminator.
        let mut b = vec![];
        let cie: &[u8] = &[1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b, 0, 0, 0];
        b.extend_from_slice(&(4 + cie.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(cie);
        let va = 0x1000u64;
        for (start, len) in [(0x2000u64, 0x40u32), (0x2100, 0x10)] {
            let at = b.len();
            b.extend_from_slice(&16u32.to_le_bytes());
            b.extend_from_slice(&((at + 4) as u32).to_le_bytes());
            let field = va + b.len() as u64;
            b.extend_from_slice(&((start.wrapping_sub(field)) as u32).to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        b.extend_from_slice(&[0; 4]);
        let mut out = vec![];
        parse_eh_frame(&b, va, &mut out);
        assert_eq!(out, [(0x2000, 0x2040), (0x2100, 0x2110)]);
        let idx = FnIndex { segments: vec![], ranges: out, gaps: vec![] };
        assert_eq!(idx.function_start(0x2000), Some(0x2000));
        assert_eq!(idx.function_start(0x203f), Some(0x2000));
        assert_eq!(idx.function_start(0x2040), None, "a gap");
        assert_eq!(idx.function_start(0x2105), Some(0x2100));
        assert_eq!(idx.function_start(0x1fff), None);
    }

    #[test]
    fn truncated_or_hostile_tables_are_refused_quietly() {
        let mut out = vec![];
        parse_eh_frame(&[0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0], 0, &mut out);
        parse_eh_frame(&[8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], 0, &mut out);
        assert!(out.is_empty());
        assert!(build(&mut |_, _| 0).is_none());
        assert!(build(&mut |_, b: &mut [u8]| {
            b.fill(0x7f);
            b.len()
        })
        .is_none());
    }

    /// Static coverage of the files in `HVS_COVERAGE` (colon-separated):
    /// `b8 imm32 0f 05` byte sequences in executable segments, and how
    /// many of them the rewriter would take (a function start, then a
    /// sweep landing on the `b8`). `cargo test --lib coverage -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn coverage() {
        let paths = std::env::var("HVS_COVERAGE").unwrap_or_default();
        for path in paths.split(':').filter(|p| !p.is_empty()) {
            let data = std::fs::read(path).unwrap();
            let idx = index_of(path).unwrap();
            let (mut seen, mut taken) = (0, 0);
            for seg in &idx.segments {
                let code = &data[seg.offset as usize..(seg.offset + seg.filesz) as usize];
                for i in 0..code.len().saturating_sub(7) {
                    if code[i] != 0xb8 || code[i + 5..i + 7] != [0x0f, 0x05] {
                        continue;
                    }
                    seen += 1;
                    let va = seg.vaddr + i as u64;
                    let Some(start) = idx.function_start(va).filter(|&s| s >= seg.vaddr && va - s <= 64 << 10) else {
                        if std::env::var_os("HVS_COVERAGE_MISSES").is_some() {
                            std::println!("  no function: {va:#x}");
                        }
                        continue;
                    };
                    let from = (start - seg.vaddr) as usize;
                    let back = i - from;
                    if crate::x86len::reaches(&code[from..i + 7], back) && crate::x86len::length(&code[i..]) == Some(5)
                    {
                        taken += 1;
                    } else if std::env::var_os("HVS_COVERAGE_MISSES").is_some() {
                        std::println!("  not taken: {va:#x} (function at {start:#x})");
                    }
                }
            }
            std::println!("{path}: {seen} byte matches, {taken} taken");
            // Every `syscall` at a proven boundary, and how many have 5
            // bytes of padding (between ranges, only nops/int3) within a
            // rel8 jump of their end.
            let (mut sites, mut mov, mut either) = (0, 0, 0);
            for seg in &idx.segments {
                let code = &data[seg.offset as usize..(seg.offset + seg.filesz) as usize];
                for r in idx.ranges.iter().filter(|r| r.0 >= seg.vaddr && r.1 <= seg.vaddr + seg.filesz) {
                    let (a, b) = ((r.0 - seg.vaddr) as usize, (r.1 - seg.vaddr) as usize);
                    let (mut i, mut prev) = (a, None);
                    while i < b {
                        let Some(n) = crate::x86len::length(&code[i..]) else { break };
                        if code[i..i + n] == [0x0f, 0x05] {
                            sites += 1;
                            let end = seg.vaddr + i as u64 + 2;
                            let (lo, hi) = (end - 128, end + 127);
                            let fits = idx.gaps_between(lo, hi + 5).any(|(gs, ge)| {
                                let slot = gs.max(lo);
                                let bytes = &code[(gs - seg.vaddr) as usize..(ge - seg.vaddr) as usize];
                                slot <= hi && slot + 5 <= ge && crate::sitefind::all_filler(bytes)
                            });
                            let m = prev.is_some_and(|p: usize| i - p == 5 && code[p] == 0xb8);
                            mov += m as u32;
                            either += (m || fits) as u32;
                        }
                        prev = Some(i);
                        i += n;
                    }
                }
            }
            std::println!("  {sites} syscall sites in known functions: {mov} `mov eax` form, {either} either form");
        }
    }

    #[test]
    fn real_binaries_have_their_syscall_wrappers_covered() {
        // Whatever of these the host has: a static glibc busybox (FDEs, no
        // .eh_frame_hdr, no symbols) and glibc's libc.so.6 (both).
        for path in ["/usr/bin/busybox", "/lib/x86_64-linux-gnu/libc.so.6", "/proc/self/exe"] {
            let Some(idx) = index_of(path) else { continue };
            assert!(idx.len() > 100, "{path}: {} ranges", idx.len());
            assert!(!idx.segments.is_empty(), "{path}");
        }
    }
}
#[cfg(test)]
mod timing {
    #[test]
    #[ignore]
    fn build_time() {
        for path in std::env::var("HVS_COVERAGE").unwrap_or_default().split(':').filter(|p| !p.is_empty()) {
            let data = std::fs::read(path).unwrap();
            let t = std::time::Instant::now();
            let idx = super::build(&mut |off, buf| {
                let Some(src) = usize::try_from(off).ok().and_then(|o| data.get(o..)) else { return 0 };
                let n = src.len().min(buf.len());
                buf[..n].copy_from_slice(&src[..n]);
                n
            });
            std::println!("{path}: {:?} ranges in {:?}", idx.map(|i| i.len()), t.elapsed());
        }
    }
}
