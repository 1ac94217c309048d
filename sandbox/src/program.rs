//! Checking a program image on the host before a VM is spent on it, so
//! that "not an ELF" and "wrong architecture" are typed errors with a
//! clear message rather than a failed guest. A dynamic executable is fine
//! here: the guest loads its interpreter from the sandbox's filesystem
//! (and reports a typed error if it is not there).

use goblin::elf::{header, program_header, Elf};

use crate::error::{Error, Result};

/// Checks that `image` is an x86-64 ELF executable we can run.
pub(crate) fn validate(name: &str, image: &[u8]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidProgram { program: name.to_string(), reason };
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        return Err(invalid("not an ELF executable".into()));
    }
    let elf = Elf::parse(image).map_err(|e| invalid(format!("malformed ELF file: {e}")))?;
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
    fn host_dynamic_binary_passes_the_host_check() {
        // /bin/sh on any Debian host is dynamically linked; the guest
        // decides whether its interpreter is reachable.
        let Ok(image) = std::fs::read("/bin/sh") else { return };
        validate("/bin/sh", &image).unwrap();
    }
}
