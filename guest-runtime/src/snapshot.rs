//! Snapshot points: the guest rings the snapshot doorbell; a restored
//! guest comes back here with the new run's inputs (arguments, files,
//! stdin, clocks, randomness), which are applied before it goes on.

use hvsandbox_abi as abi;

use crate::hc;
use crate::rt::{after_strings, phys_slice, RUN_ENV};

/// This run's inputs, for a guest restored from a snapshot.
pub struct Resume {
    pub argc: usize,
    pub envc: usize,
    /// argv then envp strings, NUL-terminated.
    pub args: alloc::vec::Vec<u8>,
}

/// Rings the snapshot doorbell. Returns None when this is not a snapshot
/// (go on), or the new run's inputs when the guest was restored: clocks,
/// randomness and files are already applied.
pub fn snapshot_point() -> Option<Resume> {
    // Heap room for what a restored run allocates, mapped now; the
    // program's too, above its break.
    crate::heap::reserve(1 << 20);
    crate::vfs::own_run_files();
    crate::mm::ready_brk_arena();
    crate::io::flush_all();
    crate::mm::record_memory_peak();
    // Where a restored run's monotonic clock goes on from.
    let monotonic = crate::time::monotonic_ns();
    let ring = || loop {
        match hc::call(abi::hc::SNAPSHOT, 0, 0, 0) {
            // A clone made ahead: build the hypervisor's translations, then
            // wait here again (the host puts the vCPU back in this state).
            abi::hc::PREFAULT => {
                let pages = crate::prefault::touch_named_frames();
                hc::call(abi::hc::PREFAULT_DONE, pages, 0, 0);
            }
            r => break r,
        }
    };
    let buf = match ring() {
        abi::hc::RESUMED_WITH_INFO => {
            // The host left this run's inputs in the resume area (no
            // hypercall needed); its length is bounded by the area.
            let area = phys_slice(abi::RESUME_GPA, abi::RESUME_MAX);
            let len = u64::from_le_bytes(area[..8].try_into().unwrap_or_default());
            if len > abi::RESUME_MAX - 8 {
                hc::panic(b"bad resume area");
            }
            area[8..8 + len as usize].to_vec()
        }
        abi::hc::RESUMED => fetch_resume_info(),
        _ => return None,
    };
    // The host resets this VM to the snapshot after the run.
    crate::mm::start_journal();
    let len = buf.len();
    let head = core::mem::size_of::<abi::ResumeInfo>();
    if len < head {
        hc::panic(b"short resume info");
    }
    // SAFETY: the buffer holds at least a ResumeInfo (plain integers).
    let info: abi::ResumeInfo = unsafe { core::ptr::read_unaligned(buf.as_ptr() as *const abi::ResumeInfo) };
    crate::time::rebase(info.tsc_khz, info.tsc, info.realtime_ns, monotonic);
    crate::random::init(&info.random_seed);
    let args_end = head.saturating_add(info.args_len as usize);
    let man_end = args_end.saturating_add(info.manifest_len as usize);
    let stdin_end = man_end.saturating_add(info.stdin_len as usize);
    if stdin_end > len {
        hc::panic(b"bad resume info");
    }
    crate::vfs::apply_manifest_bytes(&buf[args_end..man_end]);
    *RUN_ENV.get() = after_strings(&buf[head..args_end], info.argc as usize).to_vec();
    // This run's stdin starts afresh (the snapshot's run may have read its
    // own to the end); small inputs came with the resume info.
    let whole = info.flags & abi::RESUME_STDIN_WHOLE != 0;
    crate::io::restart_stdin(&buf[man_end..stdin_end], whole);
    if info.flags & abi::RESUME_MEASURE_TOUCHED != 0 {
        // Measure the pages this run touches (`touched.rs`): their
        // accessed bits cleared now, read at the run's end.
        crate::touched::begin();
        crate::mm::accessed_bits(true);
        crate::cpu::flush_tlb();
    }
    // The statistics count this run's work, not the snapshot's.
    crate::stats::stat(|s| {
        s.syscalls = 0;
        s.unknown_syscalls = 0;
        s.page_faults = 0;
        s.cr3_loads = 0;
        s.page_flushes = 0;
        s.processes = 0;
        s.rewritten_sites = 0;
        s.slow_syscalls = 0;
        s.unknown_by_nr = [0; abi::UNKNOWN_SLOTS];
    });
    Some(Resume { argc: info.argc as usize, envc: info.envc as usize, args: buf[head..args_end].to_vec() })
}

/// Asks the host for this run's inputs (retrying with the size asked for).
fn fetch_resume_info() -> alloc::vec::Vec<u8> {
    let mut buf = alloc::vec![0u8; 4096];
    loop {
        let n = hc::call(abi::hc::RESUME_INFO, buf.as_mut_ptr() as u64, buf.len() as u64, 0);
        if (n as i64) < 0 {
            hc::panic(b"resume info refused");
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return buf;
        }
        if n > 64 << 20 {
            hc::panic(b"resume info too large");
        }
        buf.resize(n, 0);
    }
}
