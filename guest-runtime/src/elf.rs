//! Loading a static ELF program (non-PIE or static-PIE) into the program's
//! address space. The image comes from the host, but the host is only the
//! messenger: every offset and size in it is checked here.

use hvsandbox_abi::user;

use crate::mm::{self, page_down, page_up, PROT_EXEC, PROT_READ, PROT_WRITE};

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;

/// What the stack builder needs to know about the loaded program.
pub struct Loaded {
    pub entry: u64,
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

struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn phdr(image: &[u8], off: usize) -> Option<Phdr> {
    Some(Phdr {
        p_type: u32_at(image, off)?,
        flags: u32_at(image, off + 4)?,
        offset: u64_at(image, off + 8)?,
        vaddr: u64_at(image, off + 16)?,
        filesz: u64_at(image, off + 32)?,
        memsz: u64_at(image, off + 40)?,
    })
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

pub fn load(image: &[u8], image_gpa: u64) -> Result<Loaded, &'static str> {
    if image.get(0..4) != Some(b"\x7fELF") {
        return Err("not an ELF file");
    }
    if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let e_type = u16_at(image, 16).ok_or("truncated ELF header")?;
    let machine = u16_at(image, 18).ok_or("truncated ELF header")?;
    if machine != EM_X86_64 {
        return Err("not an x86-64 program");
    }
    let base = match e_type {
        ET_EXEC => 0,
        ET_DYN => user::PIE_BASE,
        _ => return Err("not an executable"),
    };
    let entry = u64_at(image, 24).ok_or("truncated ELF header")?;
    let phoff = u64_at(image, 32).ok_or("truncated ELF header")? as usize;
    let phent = u16_at(image, 54).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(image, 56).ok_or("truncated ELF header")? as usize;
    if phent < 56 || phnum == 0 || phnum > 256 {
        return Err("bad program headers");
    }
    let ph_end = phoff.checked_add(phent * phnum).ok_or("bad program headers")?;
    if ph_end > image.len() {
        return Err("program headers outside the file");
    }
    let headers = || (0..phnum).filter_map(move |i| phdr(image, phoff + i * phent));

    let mut phdr_va = None;
    let mut top = 0u64;
    for ph in headers() {
        match ph.p_type {
            PT_INTERP => return Err("dynamically linked programs are not supported yet"),
            PT_PHDR => phdr_va = Some(ph.vaddr.wrapping_add(base)),
            PT_LOAD => {
                let start = ph.vaddr.checked_add(base).ok_or("segment address overflows")?;
                let end = start.checked_add(ph.memsz).ok_or("segment address overflows")?;
                let file_end = ph.offset.checked_add(ph.filesz).ok_or("segment outside the file")?;
                if ph.filesz > ph.memsz || file_end > image.len() as u64 {
                    return Err("segment outside the file");
                }
                // Leave room above the program for its heap, below the mmap area.
                if page_down(start) < user::MIN_ADDR || end > user::MMAP_TOP - 2 * user::BRK_MAX {
                    return Err("segment at an address programs may not use");
                }
                top = top.max(end);
            }
            _ => {}
        }
    }
    if top == 0 {
        return Err("no loadable segments");
    }
    // Whole file pages of a segment are mapped in place (the image in RAM
    // is this run's private copy); partial pages at either end and the
    // bss get fresh frames with the file bytes copied in. Segments go in
    // file order, so a page two segments share gets the later one's
    // protection (typically the writable data).
    for ph in headers().filter(|p| p.p_type == PT_LOAD && p.memsz > 0) {
        let prot = prot_of(ph.flags) | PROT_READ;
        let va = ph.vaddr + base;
        if va % mm::PAGE == ph.offset % mm::PAGE {
            let first = page_up(va);
            let last = page_down(va + ph.filesz);
            if last > first {
                let frame = image_gpa + ph.offset + (first - va);
                mm::map_image_frames(first, frame, (last - first) / mm::PAGE, prot).map_err(|_| "bad segment")?;
            }
        }
        let start = page_down(va);
        let end = page_up(va + ph.memsz);
        mm::map_keep(start, end - start, prot).map_err(|_| "out of memory")?;
    }
    for ph in headers().filter(|p| p.p_type == PT_LOAD) {
        let data = &image[ph.offset as usize..(ph.offset + ph.filesz) as usize];
        mm::copy_to_frames(ph.vaddr + base, data, image_gpa + ph.offset);
        if phdr_va.is_none() && (ph.offset..ph.offset + ph.filesz).contains(&(phoff as u64)) {
            phdr_va = Some(ph.vaddr + base + (phoff as u64 - ph.offset));
        }
    }
    mm::set_brk_start(top);
    Ok(Loaded {
        entry: entry.wrapping_add(base),
        phdr: phdr_va.unwrap_or(0),
        phent: phent as u64,
        phnum: phnum as u64,
    })
}
