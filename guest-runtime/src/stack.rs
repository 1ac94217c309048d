//! The program's initial stack, laid out as Linux does: argc, argv[],
//! NULL, envp[], NULL, auxv pairs, then the strings and AT_RANDOM bytes.

use alloc::vec::Vec;
use hvsandbox_abi::user;

use crate::elf::Loaded;
use crate::mm::{self, PROT_EXEC, PROT_READ, PROT_WRITE};
use crate::rt::boot;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;
const AT_SYSINFO_EHDR: u64 = 33;
const AT_MINSIGSTKSZ: u64 = 51;

/// The user and group id programs see.
pub use crate::rt::UID;

/// Size of the program's stack for this VM's memory.
pub fn stack_size() -> u64 {
    (boot().mem_size / 8).min(user::STACK_SIZE_MAX) & !(mm::PAGE - 1)
}

struct Writer {
    sp: u64,
    floor: u64,
}

impl Writer {
    fn push_bytes(&mut self, b: &[u8]) -> Result<u64, &'static str> {
        let sp = self.sp.checked_sub(b.len() as u64).filter(|&s| s >= self.floor).ok_or("arguments too large")?;
        // SAFETY: [sp, sp + len) lies in the stack mapping just created
        // (present, writable) and above its floor.
        unsafe { core::ptr::copy_nonoverlapping(b.as_ptr(), sp as *mut u8, b.len()) };
        self.sp = sp;
        Ok(sp)
    }
}

fn hwcap() -> u64 {
    u64::from(crate::cpuid::query(1, 0)[3])
}

/// A built initial stack: the RSP the program starts with (pointing at
/// argc), and its auxiliary vector as bytes (`/proc/<pid>/auxv`: key and
/// value words, AT_NULL last).
pub struct Built {
    pub sp: u64,
    pub auxv: Vec<u8>,
}

/// Builds the stack.
pub fn build(prog: &Loaded, args: &[u8], argc: usize, envc: usize) -> Result<Built, &'static str> {
    build_in(prog, args, argc, envc, true)
}

/// Builds the stack again in the mapping the program already has (a
/// restored entry snapshot: the program has not run yet, so nothing else
/// lives there, and keeping the mapping saves a TLB flush).
pub fn rebuild(prog: &Loaded, args: &[u8], argc: usize, envc: usize) -> Result<Built, &'static str> {
    build_in(prog, args, argc, envc, false)
}

fn build_in(prog: &Loaded, args: &[u8], argc: usize, envc: usize, map: bool) -> Result<Built, &'static str> {
    let size = stack_size();
    let bottom = user::STACK_TOP - size;
    if map {
        let exec = if prog.exec_stack { PROT_EXEC } else { 0 };
        mm::map_fixed(bottom, size, PROT_READ | PROT_WRITE | exec).map_err(|_| "out of memory for the stack")?;
    }
    // The top is backed now (the strings and vectors go there); the rest
    // on first touch.
    // Room for the strings, the vectors and the auxiliary data, plus 64 KiB.
    let need = args.len() as u64 + 8 * (argc + envc) as u64 + 4096 + (64 << 10);
    let eager = size.min(mm::page_up(need.max(128 << 10)));
    if !mm::populate(user::STACK_TOP - eager, eager) {
        return Err("out of memory for the stack");
    }
    let mut w = Writer { sp: user::STACK_TOP, floor: bottom + 4096 };

    let mut random = [0u8; 16];
    crate::random::fill(&mut random);
    let random_va = w.push_bytes(&random)?;
    let platform_va = w.push_bytes(b"x86_64\0")?;

    // Copy the strings and remember where each one starts.
    let strings_va = w.push_bytes(args)?;
    let total = argc + envc;
    const MAX_STRINGS: usize = 1 << 20;
    if total > MAX_STRINGS || args.iter().filter(|&&b| b == 0).count() != total {
        return Err("malformed argument block");
    }
    w.sp &= !15;

    let auxv: [(u64, u64); 20] = [
        (AT_PHDR, prog.phdr),
        (AT_PHENT, prog.phent),
        (AT_PHNUM, prog.phnum),
        (AT_PAGESZ, mm::PAGE),
        (AT_BASE, prog.interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, prog.prog_entry),
        (AT_UID, UID),
        (AT_EUID, UID),
        (AT_GID, UID),
        (AT_EGID, UID),
        (AT_PLATFORM, platform_va),
        (AT_HWCAP, hwcap()),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_va),
        (AT_HWCAP2, 0),
        (AT_EXECFN, if argc > 0 { strings_va } else { 0 }),
        (AT_SYSINFO_EHDR, prog.vdso),
        // The stack a signal frame needs (with the XSAVE image, ~3 KiB
        // where the CPU has AVX-512), as Linux reports it.
        (AT_MINSIGSTKSZ, crate::task::signal_frame_bytes() as u64),
    ];
    // Reserve the words below the strings and fill them upwards:
    // argc, argv..., NULL, envp..., NULL, auxv pairs, AT_NULL.
    let words = 1 + (argc + 1) + (envc + 1) + 2 * (auxv.len() + 1);
    let sp = w.sp.checked_sub(8 * words as u64).ok_or("arguments too large")? & !15;
    if sp < w.floor {
        return Err("arguments too large");
    }
    let mut at = sp;
    let mut put = |v: u64| {
        // SAFETY: [sp, sp + 8 * words) lies in the stack mapping, above
        // its floor and below the strings.
        unsafe { (at as *mut u64).write(v) };
        at += 8;
    };
    put(argc as u64);
    let mut off = 0usize;
    for i in 0..total {
        if i == argc {
            put(0);
        }
        put(strings_va + off as u64);
        off += args[off..].iter().position(|&b| b == 0).map_or(args.len() - off, |n| n + 1);
    }
    if total == argc {
        put(0);
    }
    put(0);
    for &(k, v) in auxv.iter() {
        put(k);
        put(v);
    }
    put(AT_NULL);
    put(0);
    let mut bytes = Vec::new();
    if bytes.try_reserve_exact(16 * (auxv.len() + 1)).is_ok() {
        for (k, v) in auxv.iter().chain(&[(AT_NULL, 0)]) {
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(Built { sp, auxv: bytes })
}
