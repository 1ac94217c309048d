//! Prefaulting a clone made ahead: on this hypervisor every guest page a
//! run touches for the first time in a VM costs an exit while KVM builds
//! its shadow translation (~13 µs each on current hosts; ~190 of them in a
//! clone's first busybox run). A clone waiting in a pool can pay them
//! ahead: the host names the frames a first run from the snapshot touched
//! ([`Vm::touched_pages`]), and the guest, resumed with
//! [`abi::hc::PREFAULT`], reads each of them through its mappings
//! ([`Vm::prefault`]).

use std::os::fd::BorrowedFd;
use std::time::Duration;

use hvsandbox_abi::{self as abi, prefault};

use super::reset::{pages_scan, Pages};
use super::{Vm, VmExit};
use crate::error::{Result, VmError};
use crate::kick::DeadlineTimer;

/// Frame ranges of guest RAM, `(first frame, count)`, sorted and disjoint.
pub type FrameRanges = Vec<(u32, u32)>;

impl Vm {
    /// After a run that measured the pages it touched
    /// ([`abi::RESUME_MEASURE_TOUCHED`]), before the reset: the frames to
    /// prefault in clones made ahead, which are the guest's report (the
    /// program's and the runtime heap's pages) and, with `pagemap`, the
    /// pages of the runtime's own tables, image and page-table pool that
    /// are present in this process's mapping (the guest reaches those
    /// through 2 MiB mappings, which have no accessed bit per page). `None`
    /// when the guest left no report.
    pub fn touched_pages(&self, pagemap: Option<BorrowedFd<'_>>) -> Result<Option<FrameRanges>> {
        let mut head = [0u8; 16];
        self.read_bytes(abi::RESUME_GPA, &mut head)?;
        let word = |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        if word(0) != prefault::TOUCHED_MAGIC {
            return Ok(None);
        }
        let len = (word(1) as usize).min(abi::RESUME_MAX as usize - 16);
        let mut bytes = vec![0u8; len];
        self.read_bytes(abi::RESUME_GPA + 16, &mut bytes)?;
        let frames = self.mem_size / abi::PAGE_SIZE;
        let mut all: FrameRanges = (0..len / prefault::RANGE_BYTES)
            .map(|i| prefault::range(&bytes, i))
            .filter_map(|(first, n)| {
                let end = (first as u64 + n as u64).min(frames);
                (end > first as u64).then(|| (first, (end - first as u64) as u32))
            })
            .collect();
        if let Some(pagemap) = pagemap {
            // The runtime's image and tables, and the page-table pool: the
            // frames the guest reaches through the physmap's 2 MiB pages,
            // whose accessed bits say nothing of 4 KiB pages.
            let runtime_end = ((abi::RUNTIME_GPA + abi::RUNTIME_MAX) / abi::PAGE_SIZE) as u32;
            let pool = (abi::pt_pool_start(self.mem_size) / abi::PAGE_SIZE) as u32;
            for span in [0..runtime_end, pool..frames as u32] {
                all.extend(self.present_pages(pagemap, span)?.unwrap_or_default());
            }
        }
        Ok(Some(coalesce(all)))
    }

    /// The guest RAM pages of `frames` present in this process's mapping
    /// of it (read, written or executed by the guest, or by the host,
    /// since the mapping was made), as frame ranges; `None` when the
    /// kernel lacks `PAGEMAP_SCAN`. At most [`prefault::MAX_RANGES`]
    /// ranges, the lowest.
    fn present_pages(&self, pagemap: BorrowedFd<'_>, frames: std::ops::Range<u32>) -> Result<Option<FrameRanges>> {
        let page = abi::PAGE_SIZE as usize;
        let end = u64::from(frames.end).min(self.mem_size / abi::PAGE_SIZE);
        let Some(count) = end.checked_sub(u64::from(frames.start)).filter(|&n| n > 0) else {
            return Ok(Some(Vec::new()));
        };
        let base = frames.start;
        let mut ranges: FrameRanges = Vec::new();
        let addr = self.host_addr + u64::from(base) * abi::PAGE_SIZE;
        let scanned = pages_scan(addr, count as usize * page, pagemap, Pages::Present, &mut |from, to| {
            let (first, end) = (base + (from / page) as u32, base + (to / page) as u32);
            let full = ranges.len() >= prefault::MAX_RANGES;
            match ranges.last_mut() {
                Some((f, n)) if *f + *n == first => *n = end - *f,
                _ if !full => ranges.push((first, end - first)),
                _ => {}
            }
        })?;
        Ok(scanned.then_some(ranges))
    }

    /// For a VM in a snapshot's state, stopped at its snapshot hypercall:
    /// resumes the guest with [`abi::hc::PREFAULT`] over `ranges` and
    /// waits (at most `limit`) for it to report the pass done. Returns the
    /// pages it read. The vCPU is then past the snapshot point: put it back
    /// with [`Vm::restore_vcpu`]. On an error the guest did something else
    /// (a snapshot whose runtime predates this, or a hostile one) and its
    /// memory should be reset too.
    /// `timer` is the calling thread's (it kicks this thread, every
    /// millisecond, when `hurry` is looked at). `hurry` true stops the
    /// pass early: `Ok(None)`; the guest only read memory, so restoring the
    /// vCPU is enough then.
    pub fn prefault(
        &mut self,
        ranges: &[(u32, u32)],
        timer: &DeadlineTimer,
        limit: Duration,
        hurry: impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        const SLICE: Duration = Duration::from_millis(1);
        let count = ranges.len().min(prefault::MAX_RANGES);
        let mut area = vec![0u8; 8 + count * prefault::RANGE_BYTES];
        area[..8].copy_from_slice(&((count * prefault::RANGE_BYTES) as u64).to_le_bytes());
        for (i, &(first, n)) in ranges[..count].iter().enumerate() {
            prefault::put(&mut area[8..], i, first, n);
        }
        self.write_bytes(abi::RESUME_GPA, &area)?;
        self.set_hypercall_result(abi::hc::PREFAULT)?;
        let start = std::time::Instant::now();
        loop {
            // Armed in the stop check, where a kick already reaches this run.
            let refused = std::cell::Cell::new(None);
            let exit = self.run(|| {
                if hurry() {
                    return true;
                }
                match timer.arm(SLICE.min(limit.saturating_sub(start.elapsed())).max(Duration::from_micros(1))) {
                    Ok(()) => false,
                    Err(e) => {
                        refused.set(Some(e));
                        true
                    }
                }
            });
            timer.disarm()?;
            if let Some(e) = refused.take() {
                return Err(e);
            }
            match exit? {
                VmExit::Interrupted if hurry() => return Ok(None),
                VmExit::Interrupted if start.elapsed() < limit => continue,
                VmExit::Interrupted => {
                    return Err(VmError::Snapshot("the prefault pass ran past its time".into()));
                }
                VmExit::Hypercall(abi::hc::PREFAULT_DONE) => {
                    let pages = self.hypercall_args()?.args[0];
                    self.complete_pending_exit()?;
                    return Ok(Some(pages));
                }
                other => return Err(VmError::Snapshot(format!("the prefault pass stopped with {other:?}"))),
            }
        }
    }
}

/// `ranges` sorted and merged where they touch or overlap, at most
/// [`prefault::MAX_RANGES`] (the lowest).
fn coalesce(mut ranges: FrameRanges) -> FrameRanges {
    ranges.sort_unstable();
    let mut out: FrameRanges = Vec::with_capacity(ranges.len());
    for (first, n) in ranges {
        let end = first as u64 + n as u64;
        match out.last_mut() {
            Some((f, m)) if (*f as u64 + *m as u64) >= first as u64 => {
                *m = (end.max(*f as u64 + *m as u64) - *f as u64) as u32;
            }
            _ => out.push((first, n)),
        }
    }
    out.truncate(prefault::MAX_RANGES);
    out
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn ranges_are_sorted_and_merged() {
        assert_eq!(coalesce(vec![(10, 5), (0, 2), (12, 10), (2, 1), (30, 1)]), vec![(0, 3), (10, 12), (30, 1)]);
        assert_eq!(coalesce(vec![(5, 10), (6, 2)]), vec![(5, 10)]);
        assert_eq!(coalesce(vec![]), vec![]);
    }
}
