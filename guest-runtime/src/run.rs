//! The end of a run: what goes to the host when the program ends (its
//! output, the collected files, the memory peak) and the hypercalls that
//! end it.

use hvsandbox_abi as abi;

use crate::{hc, io};

/// Ends the run for process 1's exit: sends the collected files, records
/// the memory peak, undoes the snapshot journal, and exits.
pub fn finish(code: i32, signal: i32) -> ! {
    crate::vfs::collect();
    crate::mm::record_memory_peak();
    if crate::touched::on() {
        // The pages process 1 used (spaces torn down before were counted
        // as they went).
        crate::mm::accessed_bits(false);
        crate::touched::report();
    }
    crate::mm::undo_journal();
    exit(code, signal)
}

/// Ends the run. The host takes the output still buffered along with the
/// exit (one exit from the VM instead of a flush and then the exit).
pub fn exit(code: i32, signal: i32) -> ! {
    hc::call(abi::hc::EXIT, (code & 0xff) as u64, signal as u64, io::out_buffers_gpa());
    loop {
        core::hint::spin_loop();
    }
}

/// The first program could not be started: the host reports why as a
/// typed error.
pub fn fail_exec(why: &str) -> ! {
    io::flush_all();
    hc::call(abi::hc::EXEC_FAILED, 0, why.as_ptr() as u64, why.len() as u64);
    loop {
        core::hint::spin_loop();
    }
}
