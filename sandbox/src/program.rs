//! Checking a program image on the host before a VM is spent on it, so
//! that "not an ELF" and "wrong architecture" are typed errors with a
//! clear message rather than a failed guest. A dynamic executable is fine
//! here: the guest loads its interpreter from the sandbox's filesystem
//! (and reports a typed error if it is not there).

use std::fs::File;
use std::os::unix::fs::FileExt;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{header, program_header, Elf, ProgramHeader};

use crate::error::{Error, Result};

/// How much of a program file [`read_head`] reads at most: a program
/// whose header table lies beyond is refused (Linux refuses tables over
/// 64 KiB).
const HEAD_MAX: u64 = 1 << 20;

/// The start of the program file `file` of `len` bytes: its first page,
/// or more when its program header table ends further (at most
/// [`HEAD_MAX`] bytes) — all that [`validate`] looks at.
pub(crate) fn read_head(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let read = |n: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    };
    let head = read(len.min(4096))?;
    // A 64-bit little-endian ELF header: e_phoff at 32, e_phentsize at
    // 54, e_phnum at 56.
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Ok(head);
    }
    let u64_at = |at: usize| head[at..at + 8].iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    let u16_at = |at: usize| u64::from(head[at]) | (u64::from(head[at + 1]) << 8);
    let need = u16_at(54).checked_mul(u16_at(56)).and_then(|table| table.checked_add(u64_at(32)));
    match need {
        Some(need) if need > head.len() as u64 && need <= len.min(HEAD_MAX) => read(need),
        _ => Ok(head),
    }
}

/// Checks that `image` is an x86-64 ELF executable we can run: its ELF
/// header and program headers, all that `image` must hold (the whole file,
/// or its start from [`read_head`]); the guest checks the rest as it
/// loads it.
pub(crate) fn validate(name: &str, image: &[u8]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidProgram { program: name.to_string(), reason };
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        return Err(invalid("not an ELF executable".into()));
    }
    let malformed = |e: goblin::error::Error| invalid(format!("malformed ELF file: {e}"));
    let header = Elf::parse_header(image).map_err(malformed)?;
    let mut elf = Elf::lazy_parse(header).map_err(malformed)?;
    let container = if elf.is_64 { Container::Big } else { Container::Little };
    let ctx = Ctx::new(container, Endian::from(elf.little_endian));
    elf.program_headers =
        ProgramHeader::parse(image, header.e_phoff as usize, header.e_phnum as usize, ctx).map_err(malformed)?;
    if !elf.is_64 || !elf.little_endian {
        return Err(invalid("not a 64-bit little-endian ELF file".into()));
    }
    if elf.header.e_machine != header::EM_X86_64 {
        return Err(invalid(format!("built for {}, not x86-64", header::machine_to_str(elf.header.e_machine))));
    }
    match elf.header.e_type {
        header::ET_EXEC | header::ET_DYN => {}
        t => return Err(invalid(format!("not an executable (ELF type {})", header::et_to_str(t)))),
    }
    if !elf.program_headers.iter().any(|p| p.p_type == program_header::PT_LOAD) {
        return Err(invalid("no loadable segments".into()));
    }
    if elf.header.e_type == header::ET_DYN && elf.entry == 0 {
        return Err(invalid("a shared library, not an executable".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_not_an_elf() {
        let e = validate("x", b"#!/bin/sh\necho hi\n").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidProgram);
        assert!(e.to_string().contains("not an ELF"), "{e}");
    }

    #[test]
    fn truncated_elf_is_malformed() {
        let e = validate("x", b"\x7fELF\x02\x01\x01").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidProgram);
    }

    #[test]
    fn program_headers_beyond_the_head_are_malformed() {
        let Ok(image) = std::fs::read("/bin/sh") else { return };
        // Only the ELF header: the program header table is missing.
        let e = validate("x", &image[..64]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidProgram);
        assert!(e.to_string().contains("malformed"), "{e}");
    }

    #[test]
    fn the_head_of_a_file_holds_its_program_headers() {
        let Ok(image) = std::fs::read("/bin/sh") else { return };
        let dir = std::env::temp_dir().join(format!("hvsb-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The header table moved past the first page: read_head reads on
        // to its end.
        let mut moved = image.clone();
        let table = 64..64 + 56 * u16::from_le_bytes([image[56], image[57]]) as usize;
        let at = 8192;
        moved.resize(moved.len().max(at + table.len()), 0);
        moved.copy_within(table.clone(), at);
        moved[32..40].copy_from_slice(&(at as u64).to_le_bytes());
        let p = dir.join("moved");
        std::fs::write(&p, &moved).unwrap();
        let f = File::open(&p).unwrap();
        let head = read_head(&f, moved.len() as u64).unwrap();
        assert_eq!(head.len(), at + table.len());
        validate("moved", &head).unwrap();
        // A text file: one page (or less) of it.
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        let f = File::open(&p).unwrap();
        let head = read_head(&f, 10).unwrap();
        assert_eq!(head, b"#!/bin/sh\n");
        assert_eq!(validate("script", &head).unwrap_err().kind(), crate::ErrorKind::InvalidProgram);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_dynamic_binary_passes_the_host_check() {
        // /bin/sh on any Debian host is dynamically linked; the guest
        // decides whether its interpreter is reachable.
        let Ok(image) = std::fs::read("/bin/sh") else { return };
        validate("/bin/sh", &image).unwrap();
    }
}
