//! The record of one address space's rewritten system-call sites and the
//! stub areas they jump to: data only, kept in the address space (so a
//! fork copies it and an execve starts empty); `rewrite.rs` acts on it.

use alloc::vec::Vec;

use hvsandbox_abi::PAGE_SIZE as PAGE;

/// Bytes of one stub area.
pub const AREA_LEN: u64 = 16 * PAGE;

/// A stub area: `used` bytes of it are taken.
#[derive(Clone, Copy)]
pub struct Area {
    pub start: u64,
    pub used: u64,
}

/// A rewritten `mov eax, imm32` at `at`, now a jump to `stub`.
#[derive(Clone, Copy)]
pub struct Site {
    pub at: u64,
    pub imm: [u8; 4],
    pub stub: u64,
}

/// One address space's rewritten sites.
#[derive(Clone)]
pub struct Sites {
    pub areas: Vec<Area>,
    pub sites: Vec<Site>,
}

impl Sites {
    pub const fn new() -> Sites {
        Sites { areas: Vec::new(), sites: Vec::new() }
    }
}
