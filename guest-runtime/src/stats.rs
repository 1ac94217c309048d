//! The counters the host reads after the run ([`abi::RuntimeStats`], at
//! a fixed page of guest RAM): the lowest layer, so every other one may
//! count.

use hvsandbox_abi as abi;

#[cfg(not(test))]
fn stats() -> *mut abi::RuntimeStats {
    abi::phys_to_virt(abi::STATS_GPA) as *mut abi::RuntimeStats
}

/// A host test build counts into memory of its own.
#[cfg(test)]
fn stats() -> *mut abi::RuntimeStats {
    static AREA: crate::rt::Global<[u64; abi::STATS_SIZE as usize / 8]> =
        crate::rt::Global::new([0; abi::STATS_SIZE as usize / 8]);
    AREA.get().as_mut_ptr().cast()
}

pub fn count_syscall() {
    // SAFETY: the stats area is a fixed, mapped region of guest RAM that
    // only the runtime writes (the host reads it after the run).
    unsafe { (*stats()).syscalls += 1 };
}

pub fn count_unknown(nr: u64) {
    let s = stats();
    let slot = (nr as usize).min(abi::UNKNOWN_SLOTS - 1);
    // SAFETY: as in count_syscall; slot < UNKNOWN_SLOTS.
    unsafe {
        (*s).unknown_syscalls += 1;
        (*s).unknown_by_nr[slot] = (*s).unknown_by_nr[slot].saturating_add(1);
    }
}

/// Updates the counters the host reads after the run.
pub fn stat(f: impl FnOnce(&mut abi::RuntimeStats)) {
    // SAFETY: the stats area is a fixed, mapped region of guest RAM that
    // only the runtime writes; no other reference to it is live.
    f(unsafe { &mut *stats() })
}
