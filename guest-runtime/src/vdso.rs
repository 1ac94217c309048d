//! The vDSO (built from `vdso/` by `build.rs`) and the legacy vsyscall
//! page. The vDSO's frames are the runtime image's own (the embedded,
//! page-aligned object) and the clock page is `time.rs`'s: every process
//! maps the same frames read-only (as the file cache's shared frames are
//! mapped: never freed, copied if a program asks to write them).
//!
//! * In every process, the clock page at [`VVAR_VA`] (`[vvar]`) and the
//!   vDSO right above it at [`VDSO_VA`] (`[vdso]`, `AT_SYSINFO_EHDR`),
//!   between the mmap area and the stack, where nothing else is placed.
//! * Once, in the top-level slot all address spaces share, the vDSO again
//!   so that its vsyscall page (the image's page at [`VSYSCALL_OFFSET`],
//!   three jumps at +0, +0x400, +0x800) lies at [`VSYSCALL_VA`], with its
//!   clock page below it: old static binaries and Go's fallback call
//!   there and run at native speed (the programs cannot unmap it).

use hvsandbox_abi as abi;

use crate::mm::{self, PAGE, PROT_EXEC, PROT_READ};

#[repr(C, align(4096))]
struct Aligned<T: ?Sized>(T);

/// The vDSO image, page-aligned in the runtime image.
static IMAGE: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/vdso.so")));

/// Where each process has its clock page and its vDSO.
pub const VVAR_VA: u64 = 0x7eff_f000_0000;
pub const VDSO_VA: u64 = VVAR_VA + PAGE;

/// The legacy vsyscall page (Linux's fixed address).
pub const VSYSCALL_VA: u64 = 0xffff_ffff_ff60_0000;
/// Offset of the vsyscall page in the vDSO image (`vdso.lds`).
pub const VSYSCALL_OFFSET: u64 = 0x1000;

/// The vDSO's pages.
fn pages() -> u64 {
    (IMAGE.0.len() as u64).div_ceil(PAGE)
}

/// Guest-physical address of the vDSO's first page (the runtime runs from
/// the physmap, so its own bytes are at `va - PHYS_BASE`).
fn image_gpa() -> u64 {
    IMAGE.0.as_ptr() as u64 - abi::PHYS_BASE
}

fn clock_gpa() -> u64 {
    crate::time::clock_page_va() - abi::PHYS_BASE
}

/// Maps the vsyscall page (and what it jumps to) for every address space
/// to come; at start, before any space copies the shared slots.
pub fn init() {
    let lo = VSYSCALL_VA - VSYSCALL_OFFSET;
    let mut ok = mm::map_in_shared_slots(lo - PAGE, clock_gpa(), PROT_READ);
    for i in 0..=VSYSCALL_OFFSET / PAGE {
        ok &= mm::map_in_shared_slots(lo + i * PAGE, image_gpa() + i * PAGE, PROT_READ | PROT_EXEC);
    }
    if !ok {
        crate::hc::panic(b"cannot map the vsyscall page");
    }
}

/// Maps the clock page and the vDSO into the current (fresh) address
/// space; returns the vDSO's address for `AT_SYSINFO_EHDR`.
pub fn map() -> Result<u64, i64> {
    mm::map_shared_frame(VVAR_VA, clock_gpa(), PROT_READ)?;
    mm::add_vma(VVAR_VA, VVAR_VA + PAGE, PROT_READ)?;
    for i in 0..pages() {
        mm::map_shared_frame(VDSO_VA + i * PAGE, image_gpa() + i * PAGE, PROT_READ | PROT_EXEC)?;
    }
    mm::add_vma(VDSO_VA, VDSO_VA + pages() * PAGE, PROT_READ | PROT_EXEC)?;
    Ok(VDSO_VA)
}

/// The name `/proc/<pid>/maps` gives a mapping starting at `start`.
pub fn name(start: u64) -> Option<&'static [u8]> {
    match start {
        VVAR_VA => Some(b"[vvar]"),
        VDSO_VA => Some(b"[vdso]"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(at: usize) -> u64 {
        u16::from_le_bytes(IMAGE.0[at..at + 2].try_into().unwrap()) as u64
    }
    fn u32_at(at: usize) -> u64 {
        u32::from_le_bytes(IMAGE.0[at..at + 4].try_into().unwrap()) as u64
    }
    fn u64_at(at: usize) -> u64 {
        u64::from_le_bytes(IMAGE.0[at..at + 8].try_into().unwrap())
    }

    /// The dynamic entry `tag`'s value.
    fn dynamic(tag: u64) -> Option<u64> {
        let (phoff, phnum) = (u64_at(0x20) as usize, u16_at(0x38) as usize);
        let ph = (0..phnum).map(|i| phoff + i * 56).find(|&p| u32_at(p) == 2)?;
        let (off, len) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
        (off..off + len).step_by(16).map(|a| (u64_at(a), u64_at(a + 8))).find(|e| e.0 == tag).map(|e| e.1)
    }

    fn cstr(at: usize) -> &'static [u8] {
        let n = IMAGE.0[at..].iter().position(|&c| c == 0).unwrap();
        &IMAGE.0[at..at + n]
    }

    /// Looks a symbol up the way musl does: the SysV hash table for the
    /// count, the version of each candidate from DT_VERSYM/DT_VERDEF.
    fn lookup(name: &[u8], version: &[u8]) -> Option<u64> {
        let strtab = dynamic(5)? as usize;
        let symtab = dynamic(6)? as usize;
        let hash = dynamic(4)? as usize;
        let versym = dynamic(0x6fff_fff0)? as usize;
        let verdef = dynamic(0x6fff_fffc)? as usize;
        let nsym = u32_at(hash + 4) as usize;
        for i in 0..nsym {
            let s = symtab + 24 * i;
            let (st_name, info, shndx, value) = (u32_at(s) as usize, IMAGE.0[s + 4], u16_at(s + 6), u64_at(s + 8));
            if cstr(strtab + st_name) != name || info & 0xf != 2 || info >> 4 != 1 || shndx == 0 {
                continue;
            }
            let ver = u16_at(versym + 2 * i) & 0x7fff;
            let mut d = verdef;
            loop {
                let (flags, ndx, aux, next) = (u16_at(d + 2), u16_at(d + 4), u32_at(d + 12), u32_at(d + 16));
                if flags & 1 == 0 && ndx == ver {
                    let vname = u32_at(d + aux as usize) as usize;
                    if cstr(strtab + vname) == version {
                        return Some(value);
                    }
                }
                if next == 0 {
                    break;
                }
                d += next as usize;
            }
        }
        None
    }

    #[test]
    fn the_vdso_exports_what_libcs_and_go_look_up() {
        assert_eq!(&IMAGE.0[..4], b"\x7fELF");
        for name in ["clock_gettime", "gettimeofday", "time", "getcpu", "clock_getres"] {
            let prefixed = alloc::format!("__vdso_{name}");
            let a = lookup(prefixed.as_bytes(), b"LINUX_2.6").unwrap_or_else(|| panic!("{prefixed}"));
            assert_eq!(lookup(name.as_bytes(), b"LINUX_2.6"), Some(a), "{name} is an alias");
            assert!(a > 0 && a < VSYSCALL_OFFSET, "{name} at {a:#x}");
        }
        assert_eq!(lookup(b"__vdso_clock_gettime", b"LINUX_2.5"), None);
        // glibc needs DT_SONAME and a GNU hash table too.
        assert!(dynamic(14).is_some() && dynamic(0x6fff_fef5).is_some());
    }

    #[test]
    fn the_vsyscall_entries_jump_into_the_vdso() {
        let targets = ["__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu"];
        for (i, name) in targets.iter().enumerate() {
            let at = VSYSCALL_OFFSET as usize + 0x400 * i;
            assert_eq!(IMAGE.0[at], 0xe9, "jmp rel32 at {at:#x}");
            let rel = i32::from_le_bytes(IMAGE.0[at + 1..at + 5].try_into().unwrap()) as i64;
            let to = (at as i64 + 5 + rel) as u64;
            assert_eq!(Some(to), lookup(name.as_bytes(), b"LINUX_2.6"), "{name}");
        }
        assert!(pages() > VSYSCALL_OFFSET / PAGE && pages() <= 4);
    }
}
