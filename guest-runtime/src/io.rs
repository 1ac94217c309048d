//! stdin, stdout and stderr: output is buffered in the guest and flushed
//! to the host in large chunks (and when the host asks, for a reader
//! watching it live); input is fetched from the host in chunks, without
//! waiting there: a reader with nothing to read waits in the scheduler.

use core::sync::atomic::{compiler_fence, Ordering};

use hvsandbox_abi as abi;

use crate::hc;
use crate::rt::Global;

const OUT_BUF: usize = abi::OUT_BUF_SIZE;
const IN_BUF: usize = 64 * 1024;

struct InStream {
    buf: [u8; IN_BUF],
    pos: usize,
    len: usize,
    eof: bool,
    /// The host said there was nothing yet, and has not said otherwise.
    told_empty: bool,
}

/// stdout and stderr; `discard` is set once the host will drop anything
/// more (then nothing is sent). Published to the host at start so it can
/// take what is still buffered when it stops a run.
static OUT: Global<[abi::OutBuffer; 2]> = Global::new([
    abi::OutBuffer { len: 0, discard: 0, writing: 0, data: [0; OUT_BUF] },
    abi::OutBuffer { len: 0, discard: 0, writing: 0, data: [0; OUT_BUF] },
]);

/// Where the output buffers are (guest-physical).
pub fn out_buffers_gpa() -> u64 {
    OUT.get().as_ptr() as u64 - abi::PHYS_BASE
}

/// Tells the host where the output buffers are (for a run it stops).
pub fn publish() {
    let gpa = out_buffers_gpa();
    crate::stats::stat(|s| s.out_buffers_gpa = gpa);
}
static IN: Global<InStream> = Global::new(InStream { buf: [0; IN_BUF], pos: 0, len: 0, eof: false, told_empty: false });

/// Runs `f` with stream `fd`'s buffer marked as being changed, so the
/// host, which may stop the vCPU at any instruction, leaves it alone.
fn changing<R>(fd: usize, f: impl FnOnce() -> R) -> R {
    let flag = core::ptr::addr_of_mut!(OUT.get()[fd - 1].writing);
    // SAFETY: `flag` points into the runtime's own static buffers; the
    // volatile accesses keep the marking where it is written.
    let before = unsafe { flag.read_volatile() };
    // SAFETY: as above.
    unsafe { flag.write_volatile(1) };
    compiler_fence(Ordering::SeqCst);
    let r = f();
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { flag.write_volatile(before) };
    r
}

fn flush(fd: usize) {
    changing(fd, || {
        let s = &mut OUT.get()[fd - 1];
        if s.len > 0 && s.discard == 0 {
            let r = hc::call(abi::hc::WRITE, fd as u64, s.data.as_ptr() as u64, s.len);
            if r & abi::WRITE_STREAM_FULL != 0 {
                s.discard = 1;
            }
        }
        s.len = 0;
    })
}

/// Sends all buffered output to the host.
pub fn flush_all() {
    flush(1);
    flush(2);
}

/// Appends to stdout (1) or stderr (2). Always accepts everything, as a
/// pipe to a reader that keeps up would.
pub fn write_stream(fd: usize, mut data: &[u8]) {
    changing(fd, || {
        while !data.is_empty() {
            let s = &mut OUT.get()[fd - 1];
            if s.discard != 0 {
                return;
            }
            let len = s.len as usize;
            let n = data.len().min(OUT_BUF - len);
            s.data[len..len + n].copy_from_slice(&data[..n]);
            s.len += n as u64;
            data = &data[n..];
            if s.len as usize == OUT_BUF {
                flush(fd);
            }
        }
    })
}

/// The host's request bits (see [`abi::HOST_FLAG_FLUSH`]).
fn host_flags() -> *mut u64 {
    let b = abi::phys_to_virt(abi::HCALL_GPA) as *mut abi::Hypercall;
    // SAFETY: the hypercall block is a fixed, mapped page of guest RAM;
    // only the address is computed here.
    unsafe { core::ptr::addr_of_mut!((*b).host_flags) }
}

fn take_host_flag(bit: u64) -> bool {
    let p = host_flags();
    // SAFETY: `p` points into the mapped hypercall block; the host writes it
    // only while this vCPU is stopped, so a plain read-modify-write is whole.
    unsafe {
        let v = p.read_volatile();
        if v & bit != 0 {
            p.write_volatile(v & !bit);
        }
        v & bit != 0
    }
}

fn host_flag(bit: u64) -> bool {
    // SAFETY: as in `take_host_flag`.
    unsafe { host_flags().read_volatile() & bit != 0 }
}

/// On the way out of a system call: sends buffered output if the host
/// asked, and returns the other requests for the scheduler:
/// [`abi::HOST_FLAG_STDIN`] (input came: wake readers; left set until a
/// read) and [`abi::HOST_FLAG_YIELD`] (taken: let another task run).
pub fn host_requests() -> u64 {
    if take_host_flag(abi::HOST_FLAG_FLUSH) {
        flush_all();
    }
    let stdin = if host_flag(abi::HOST_FLAG_STDIN) { abi::HOST_FLAG_STDIN } else { 0 };
    let yield_now = if take_host_flag(abi::HOST_FLAG_YIELD) { abi::HOST_FLAG_YIELD } else { 0 };
    stdin | yield_now
}

/// Starts stdin over for a restored run: `data` is buffered, and when
/// `whole` it is all there is (end of input after it, no hypercall).
pub fn restart_stdin(data: &[u8], whole: bool) {
    let s = IN.get();
    let n = data.len().min(IN_BUF);
    s.buf[..n].copy_from_slice(&data[..n]);
    s.pos = 0;
    s.len = n;
    s.eof = whole && n == data.len();
    s.told_empty = false;
}

/// Asks the host for more input (never waits there). Returns whether
/// there is something to read now (bytes or the end of input).
fn fetch() -> bool {
    let s = IN.get();
    take_host_flag(abi::HOST_FLAG_STDIN);
    // Whatever the program wrote so far goes out before it looks for
    // input, as with an interactive pipe.
    flush_all();
    let n = hc::call(abi::hc::READ, 0, s.buf.as_ptr() as u64, IN_BUF as u64);
    if n == abi::READ_NOTHING_YET {
        s.told_empty = true;
        return false;
    }
    s.told_empty = false;
    let n = (n as usize).min(IN_BUF);
    s.pos = 0;
    s.len = n;
    if n == 0 {
        s.eof = true;
    }
    true
}

/// Whether a read of stdin would not wait: bytes are buffered, the input
/// ended, or the host has some (asked only when it may have news).
pub fn stdin_ready() -> bool {
    let s = IN.get();
    if s.pos < s.len || s.eof {
        return true;
    }
    if s.told_empty && !host_flag(abi::HOST_FLAG_STDIN) {
        return false;
    }
    fetch()
}

/// Reads stdin into `out`: the count, 0 at end of input, or None when
/// there is nothing yet (the caller waits, see [`stdin_ready`]).
pub fn read_stdin(out: &mut [u8]) -> Option<usize> {
    let s = IN.get();
    if out.is_empty() {
        return Some(0);
    }
    if s.pos == s.len {
        if s.eof {
            return Some(0);
        }
        if !fetch() {
            return None;
        }
        if s.eof {
            return Some(0);
        }
    }
    let n = out.len().min(s.len - s.pos);
    out[..n].copy_from_slice(&s.buf[s.pos..s.pos + n]);
    s.pos += n;
    Some(n)
}
