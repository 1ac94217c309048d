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

/// Slots of the table of sites seen but not rewritten yet.
pub const HOT_SLOTS: usize = 64;

/// One address space's rewritten sites.
#[derive(Clone)]
pub struct Sites {
    pub areas: Vec<Area>,
    pub sites: Vec<Site>,
    /// Sites seen by the slow path, by address hash: (address, times).
    pub seen: [(u64, u32); HOT_SLOTS],
}

impl Sites {
    pub const fn new() -> Sites {
        Sites { areas: Vec::new(), sites: Vec::new(), seen: [(0, 0); HOT_SLOTS] }
    }

    /// Counts one more slow call from `at`; returns how many it has made
    /// (as far as the table remembers: another site in the slot resets it).
    pub fn seen(&mut self, at: u64) -> u32 {
        let slot = &mut self.seen[(at ^ at >> 6 ^ at >> 12) as usize % HOT_SLOTS];
        if slot.0 == at {
            slot.1 = slot.1.saturating_add(1);
        } else {
            *slot = (at, 1);
        }
        slot.1
    }
}
