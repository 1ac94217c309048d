//! futex(2): waits keyed by (address space, address), or (shared object,
//! offset) in a shared mapping (`task::futex_key`); the wake side
//! (`task::futex_wake`) is the scheduler's.

use crate::errno::*;
use crate::task::*;
use crate::time;
use crate::uaccess::*;

pub fn sys_futex(uaddr: u64, op: u64, val: u64, timeout: u64, uaddr2: u64, _val3: u64) -> SysResult {
    const FUTEX_WAIT: u64 = 0;
    const FUTEX_WAKE: u64 = 1;
    const FUTEX_REQUEUE: u64 = 3;
    const FUTEX_CMP_REQUEUE: u64 = 4;
    const FUTEX_WAIT_BITSET: u64 = 9;
    const FUTEX_WAKE_BITSET: u64 = 10;
    const FUTEX_CLOCK_REALTIME: u64 = 256;
    if !uaddr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    let cmd = op & 0x7f;
    match cmd {
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            user_bytes(uaddr, 4)?;
            Ok(futex_wake(uaddr, val))
        }
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let cur = u32::from_le_bytes(user_bytes(uaddr, 4)?.try_into().map_err(|_| EFAULT)?);
            if cur != val as u32 {
                return Err(EAGAIN);
            }
            let deadline = if timeout != 0 {
                let ns = read_timespec(timeout)?;
                Some(if cmd == FUTEX_WAIT_BITSET {
                    // Absolute, on the given clock.
                    let now = if op & FUTEX_CLOCK_REALTIME != 0 { time::realtime_ns() } else { time::monotonic_ns() };
                    time::monotonic_ns() + ns.saturating_sub(now)
                } else {
                    time::monotonic_ns().saturating_add(ns)
                })
            } else {
                None
            };
            let (key, at) = futex_key(uaddr);
            block(Wait::Futex(key, at), deadline, false)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if cmd == FUTEX_CMP_REQUEUE {
                let cur = u32::from_le_bytes(user_bytes(uaddr, 4)?.try_into().map_err(|_| EFAULT)?);
                if cur != _val3 as u32 {
                    return Err(EAGAIN);
                }
            }
            let woken = futex_wake(uaddr, val);
            let from = futex_key(uaddr);
            let to = futex_key(uaddr2);
            let mut moved = 0;
            for t in &SCHED.get().tasks {
                if moved >= timeout {
                    break;
                }
                let mut w = t.wait.borrow_mut();
                if let Wait::Futex(k, a) = &mut *w {
                    if (*k, *a) == from {
                        (*k, *a) = to;
                        moved += 1;
                    }
                }
            }
            Ok(woken + moved)
        }
        _ => Err(ENOSYS),
    }
}
