//! Measuring which pages a run from a snapshot touches
//! ([`abi::RESUME_MEASURE_TOUCHED`]), for the host's prefault pass of the
//! clones it makes ahead (`prefault.rs`): at the run's start the accessed
//! bit of every 4 KiB mapping of the program and of the runtime heap is
//! cleared; the CPU sets it again on each page used; the frames found with
//! it (in process 1 at its end, and in every address space torn down
//! before) are reported in the resume area.

use alloc::vec::Vec;

use hvsandbox_abi::{self as abi, prefault};

use crate::rt::{boot, phys_ptr, Global};

/// One bit per frame of guest RAM, while measuring.
static MAP: Global<Option<Vec<u64>>> = Global::new(None);

/// Starts measuring (the caller clears the accessed bits).
pub fn begin() {
    let frames = boot().mem_size / abi::PAGE_SIZE;
    *MAP.get() = Some(alloc::vec![0u64; frames.div_ceil(64) as usize]);
}

/// Whether this run measures.
pub fn on() -> bool {
    MAP.get().is_some()
}

/// Notes that `frame` was used (a no-op when not measuring).
pub fn mark(frame: u64) {
    if let Some(map) = MAP.get() {
        if let Some(w) = map.get_mut((frame / 64) as usize) {
            *w |= 1 << (frame % 64);
        }
    }
}

/// Ends measuring and leaves the report at [`abi::RESUME_GPA`] (nothing
/// when not measuring).
pub fn report() {
    let Some(map) = MAP.get().take() else { return };
    // SAFETY: the resume area is RESUME_MAX bytes of guest RAM reserved for
    // the host's and the guest's messages, mapped in the physmap; nothing
    // else refers to it during a run.
    let area = unsafe { core::slice::from_raw_parts_mut(phys_ptr(abi::RESUME_GPA), abi::RESUME_MAX as usize) };
    let (head, ranges) = area.split_at_mut(16);
    let mut n = 0;
    runs(&map, &mut |first, count| {
        let fits = prefault::put(ranges, n, first as u32, count as u32);
        n += fits as usize;
        fits
    });
    head[..8].copy_from_slice(&prefault::TOUCHED_MAGIC.to_le_bytes());
    head[8..].copy_from_slice(&((n * prefault::RANGE_BYTES) as u64).to_le_bytes());
}

/// Calls `f(first, count)` for each run of set bits of `map` (bit `i` of
/// word `w` is frame `64 w + i`), lowest first, until it returns false.
fn runs(map: &[u64], f: &mut dyn FnMut(u64, u64) -> bool) {
    let mut run: Option<(u64, u64)> = None;
    for (w, &word) in map.iter().enumerate() {
        if word == 0 && run.is_none() {
            continue;
        }
        for b in 0..64 {
            let frame = w as u64 * 64 + b;
            if word & (1 << b) != 0 {
                match &mut run {
                    Some((_, end)) => *end = frame + 1,
                    None => run = Some((frame, frame + 1)),
                }
            } else if let Some((first, end)) = run.take() {
                if !f(first, end - first) {
                    return;
                }
            }
        }
    }
    if let Some((first, end)) = run {
        f(first, end - first);
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    #[test]
    fn runs_of_set_bits_become_ranges() {
        let collect = |map: &[u64], max: usize| {
            let mut out = Vec::new();
            super::runs(map, &mut |a, n| {
                out.push((a, n));
                out.len() < max
            });
            out
        };
        assert_eq!(collect(&[0b1110_0001, 0, 1 << 63, 0b11], 9), [(0, 1), (5, 3), (191, 3)]);
        assert_eq!(collect(&[u64::MAX, u64::MAX], 9), [(0, 128)]);
        assert_eq!(collect(&[0, 0], 9), []);
        assert_eq!(collect(&[0b101], 1), [(0, 1)], "stops when told");
    }
}
