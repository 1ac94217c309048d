//! A process's read-like and write-like system calls and the bytes they
//! moved, as `/proc/<pid>/io` shows them (rchar, wchar, syscr, syscw),
//! counted by the dispatcher when a call finishes.

use core::cell::Cell;

/// A process's read-like and write-like calls and the bytes they moved
/// (`/proc/<pid>/io`: rchar, wchar, syscr, syscw).
#[derive(Default)]
pub struct IoCount {
    pub rchar: Cell<u64>,
    pub wchar: Cell<u64>,
    pub syscr: Cell<u64>,
    pub syscw: Cell<u64>,
}

impl IoCount {
    /// Counts a finished system call `nr` that returned `r`, as Linux
    /// counts them: each read-like or write-like call, and the bytes of
    /// those that moved some (sendfile both reads and writes).
    pub fn count(&self, nr: u64, r: &Result<u64, i64>) {
        // read, pread64, readv, recvfrom, recvmsg, preadv, preadv2
        const READS: [u64; 7] = [0, 17, 19, 45, 47, 295, 327];
        // write, pwrite64, writev, sendto, sendmsg, pwritev, pwritev2
        const WRITES: [u64; 7] = [1, 18, 20, 44, 46, 296, 328];
        const SENDFILE: u64 = 40;
        let (read, write) = (READS.contains(&nr) || nr == SENDFILE, WRITES.contains(&nr) || nr == SENDFILE);
        let moved = match r {
            Ok(n) => *n,
            Err(_) => 0,
        };
        let add = |c: &Cell<u64>, n: u64| c.set(c.get().saturating_add(n));
        if read {
            add(&self.syscr, 1);
            add(&self.rchar, moved);
        }
        if write {
            add(&self.syscw, 1);
            add(&self.wchar, moved);
        }
    }
}
