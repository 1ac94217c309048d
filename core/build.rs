//! Builds the guest runtime (a separate, freestanding cargo workspace) and
//! embeds it as a flat image, so a plain `cargo build` of the host needs no
//! separate install step and no prebuilt binary is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use hvsandbox_abi as abi;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let runtime_dir = manifest.join("../guest-runtime");
    for p in ["src", "vdso", "Cargo.toml", "build.rs", "link.ld"] {
        println!("cargo:rerun-if-changed={}", runtime_dir.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", manifest.join("abi/src").display());

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out.join("guest-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(runtime_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The host build's flags (e.g. coverage, sanitizers) must not leak
        // into the freestanding guest.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("failed to run cargo for the guest runtime");
    assert!(status.success(), "building the guest runtime failed");

    let elf_path = target_dir.join("release/hvsandbox-guest-runtime");
    let image = flatten(&elf_path);
    std::fs::write(out.join("runtime.bin"), image).expect("write runtime.bin");
}

/// Lays the runtime's loadable segments out as they sit in guest memory
/// from `RUNTIME_VA`; bss is left out (guest RAM starts zeroed).
fn flatten(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read guest runtime ELF");
    let elf = goblin::elf::Elf::parse(&bytes).expect("parse guest runtime ELF");
    let mut image = Vec::new();
    for ph in elf.program_headers.iter().filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD) {
        assert!(
            ph.p_vaddr >= abi::RUNTIME_VA && ph.p_vaddr + ph.p_memsz <= abi::RUNTIME_VA + abi::RUNTIME_MAX,
            "runtime segment {:#x}+{:#x} outside its region",
            ph.p_vaddr,
            ph.p_memsz
        );
        let off = (ph.p_vaddr - abi::RUNTIME_VA) as usize;
        let end = off + ph.p_filesz as usize;
        if image.len() < end {
            image.resize(end, 0);
        }
        let src = &bytes[ph.p_offset as usize..ph.p_offset as usize + ph.p_filesz as usize];
        image[off..end].copy_from_slice(src);
    }
    image
}
