//! Link the runtime as a freestanding static image at its fixed address,
//! and build the vDSO it embeds (`vdso/`): the vDSO's Rust source compiled
//! to one object by rustc, linked by the system `cc` into a shared object
//! with no library, then checked (one read-only segment, no relocations).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie", "-Wl,-e,_start", "-Wl,--build-id=none"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.ld");
    build_vdso(Path::new(&dir));
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

fn build_vdso(dir: &Path) {
    let src = dir.join("vdso");
    for f in ["vdso.rs", "clock.rs", "vdso.lds"] {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("vdso.o");
    let so = out.join("vdso.so");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut c = Command::new(rustc);
    c.args(["--crate-type=lib", "--crate-name=hv_vdso", "--edition=2021"])
        .args(["-C", "opt-level=2", "-C", "panic=abort", "-C", "relocation-model=pic", "-C", "codegen-units=1"])
        .args(["-C", "overflow-checks=off", "-C", "debug-assertions=off", "-C", "debuginfo=0"])
        .args(["-C", "force-unwind-tables=no"])
        .arg(format!("--emit=obj={}", obj.display()))
        .arg(src.join("vdso.rs"))
        // The host build's flags (coverage, sanitizers) must not reach it.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run(&mut c, "rustc for the vDSO");
    let mut l = Command::new("cc");
    l.args(["-shared", "-nostdlib", "-nostartfiles", "-Wl,-soname=linux-vdso.so.1", "-Wl,--hash-style=both"])
        .args(["-Wl,--no-undefined", "-Wl,-Bsymbolic", "-Wl,--build-id=none", "-Wl,-z,max-page-size=4096"])
        .args(["-Wl,-z,noexecstack", "-Wl,-z,norelro"])
        .arg(format!("-Wl,-T,{}", src.join("vdso.lds").display()))
        .arg("-o")
        .arg(&so)
        .arg(&obj);
    run(&mut l, "cc (linking the vDSO)");
    let mut bytes = std::fs::read(&so).expect("read vdso.so");
    if let Err(e) = check(&bytes) {
        panic!("the vDSO image is not usable: {e}");
    }
    // Whole pages: the runtime maps every page of the file.
    bytes.resize(bytes.len().next_multiple_of(4096), 0);
    std::fs::write(&so, bytes).expect("write vdso.so");
}

fn u16_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as u64).ok_or_else(|| format!("short at {at}"))
}
fn u32_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()) as u64).ok_or_else(|| format!("short at {at}"))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("short at {at}"))
}

/// What the runtime relies on: one PT_LOAD, read + execute, at address 0,
/// its file image as large as its memory image (no bss) and at most
/// `MAX_PAGES` pages; a dynamic section with no relocations of any kind.
fn check(b: &[u8]) -> Result<(), String> {
    const MAX_PAGES: u64 = 4;
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("not ELF".into());
    }
    if b.len() as u64 > MAX_PAGES * 4096 {
        return Err(format!("{} bytes", b.len()));
    }
    let phoff = u64_at(b, 0x20)? as usize;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    let mut loads = 0;
    let mut dynamic = None;
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        let (ty, flags) = (u32_at(b, p)?, u32_at(b, p + 4)?);
        let (off, vaddr, filesz, memsz) =
            (u64_at(b, p + 8)?, u64_at(b, p + 16)?, u64_at(b, p + 32)?, u64_at(b, p + 40)?);
        match ty {
            1 => {
                loads += 1;
                if off != 0 || vaddr != 0 || flags != 5 || filesz != memsz || memsz > MAX_PAGES * 4096 {
                    return Err(format!(
                        "unexpected PT_LOAD off {off:#x} vaddr {vaddr:#x} flags {flags} size {filesz:#x}/{memsz:#x}"
                    ));
                }
            }
            2 => dynamic = Some((off as usize, filesz as usize)),
            _ => {}
        }
    }
    if loads != 1 {
        return Err(format!("{loads} PT_LOAD segments"));
    }
    let (off, len) = dynamic.ok_or("no PT_DYNAMIC")?;
    for at in (off..off + len).step_by(16) {
        let tag = u64_at(b, at)?;
        // DT_RELA, DT_REL, DT_TEXTREL, DT_JMPREL, DT_RELR, DT_RELACOUNT, DT_RELCOUNT
        if matches!(tag, 7 | 17 | 22 | 23 | 36 | 0x6fff_fff9 | 0x6fff_fffa) {
            return Err(format!("dynamic tag {tag:#x}: the image needs relocating"));
        }
    }
    Ok(())
}
