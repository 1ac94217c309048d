//! prctl: the per-thread and per-process attributes a program sets on
//! itself (kept in `ctl.rs`) — its threads' names (also
//! `/proc/<pid>/task/<tid>/comm`), the signal it gets when its parent
//! dies, whether it is a child subreaper, no_new_privs, dumpable,
//! keepcaps, the timer slack, THP and the capability bounding set — set
//! and read back as on Linux. The runtime enforces nothing with most of
//! them (it has no set-id programs or core dumps).

use crate::ctl::{CAP_LAST_CAP, COMM_LEN, DEFAULT_SLACK_NS};
use crate::errno::*;
use crate::task::{current, current_process};
use crate::uaccess::put_user;

const PR_SET_PDEATHSIG: u64 = 1;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_DUMPABLE: u64 = 4;
const PR_GET_KEEPCAPS: u64 = 7;
const PR_SET_KEEPCAPS: u64 = 8;
const PR_GET_TIMING: u64 = 13;
const PR_SET_TIMING: u64 = 14;
const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;
const PR_GET_SECCOMP: u64 = 21;
const PR_CAPBSET_READ: u64 = 23;
const PR_CAPBSET_DROP: u64 = 24;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_TASK_PERF_EVENTS_DISABLE: u64 = 31;
const PR_TASK_PERF_EVENTS_ENABLE: u64 = 32;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_GET_NO_NEW_PRIVS: u64 = 39;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;

/// prctl(option, a2, a3, a4, a5).
pub fn sys_prctl(option: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> Result<u64, i64> {
    let t = current();
    let p = current_process();
    let put_int = |addr: u64, v: u32| put_user(addr, v.to_le_bytes()).map(|_| 0);
    let flag = |v: u64| if v <= 1 { Ok(v == 1) } else { Err(EINVAL) };
    match option {
        PR_SET_PDEATHSIG => {
            if a2 > 64 {
                return Err(EINVAL);
            }
            t.ctl.pdeathsig.set(a2 as u8);
            Ok(0)
        }
        PR_GET_PDEATHSIG => put_int(a2, t.ctl.pdeathsig.get() as u32),
        PR_GET_DUMPABLE => Ok(p.ctl.dumpable.get() as u64),
        PR_SET_DUMPABLE => {
            p.ctl.dumpable.set(flag(a2)? as u8);
            Ok(0)
        }
        PR_GET_KEEPCAPS => Ok(t.ctl.keepcaps.get() as u64),
        PR_SET_KEEPCAPS => {
            t.ctl.keepcaps.set(flag(a2)?);
            Ok(0)
        }
        // Only statistical timing exists (PR_TIMING_STATISTICAL).
        PR_GET_TIMING => Ok(0),
        PR_SET_TIMING if a2 == 0 => Ok(0),
        PR_SET_NAME => {
            t.ctl.set_name(&user_name(a2)?);
            Ok(0)
        }
        PR_GET_NAME => {
            let mut name = [0u8; COMM_LEN];
            let n = t.ctl.name();
            name[..n.len()].copy_from_slice(&n);
            put_user(a2, name).map(|_| 0)
        }
        // Not in seccomp mode (the runtime's own table is not the
        // program's filter).
        PR_GET_SECCOMP => Ok(0),
        PR_CAPBSET_READ => {
            if a2 > CAP_LAST_CAP {
                return Err(EINVAL);
            }
            Ok(p.ctl.capbset.get() >> a2 & 1)
        }
        PR_CAPBSET_DROP => {
            if a2 > CAP_LAST_CAP {
                return Err(EINVAL);
            }
            // Needs CAP_SETPCAP, which a program running as a user
            // other than root does not have.
            if crate::rt::UID != 0 {
                return Err(EPERM);
            }
            p.ctl.capbset.set(p.ctl.capbset.get() & !(1 << a2));
            Ok(0)
        }
        PR_SET_TIMERSLACK => {
            t.ctl.timer_slack.set(if a2 == 0 { DEFAULT_SLACK_NS } else { a2 });
            Ok(0)
        }
        PR_GET_TIMERSLACK => Ok(t.ctl.timer_slack.get()),
        PR_TASK_PERF_EVENTS_DISABLE | PR_TASK_PERF_EVENTS_ENABLE => Ok(0),
        PR_SET_CHILD_SUBREAPER => {
            p.ctl.subreaper.set(a2 != 0);
            Ok(0)
        }
        PR_GET_CHILD_SUBREAPER => put_int(a2, p.ctl.subreaper.get() as u32),
        PR_SET_NO_NEW_PRIVS => {
            // Once set it stays set.
            if a2 != 1 || a3 != 0 || a4 != 0 || a5 != 0 {
                return Err(EINVAL);
            }
            t.ctl.no_new_privs.set(true);
            Ok(0)
        }
        PR_GET_NO_NEW_PRIVS => {
            if a2 != 0 || a3 != 0 || a4 != 0 || a5 != 0 {
                return Err(EINVAL);
            }
            Ok(t.ctl.no_new_privs.get() as u64)
        }
        PR_GET_TID_ADDRESS => put_user(a2, t.clear_child_tid.get().to_le_bytes()).map(|_| 0),
        PR_SET_THP_DISABLE => {
            if a3 != 0 || a4 != 0 || a5 != 0 {
                return Err(EINVAL);
            }
            p.ctl.thp_disable.set(a2 != 0);
            Ok(0)
        }
        PR_GET_THP_DISABLE => {
            if a2 != 0 || a3 != 0 || a4 != 0 || a5 != 0 {
                return Err(EINVAL);
            }
            Ok(p.ctl.thp_disable.get() as u64)
        }
        _ => Err(EINVAL),
    }
}

/// The first 15 bytes at `addr`, or fewer up to a NUL (as Linux's
/// `strncpy_from_user`, which reads no further: a short name may end
/// its mapping).
fn user_name(addr: u64) -> Result<alloc::vec::Vec<u8>, i64> {
    let max = COMM_LEN as u64 - 1;
    let first = max.min(crate::mm::PAGE - (addr & (crate::mm::PAGE - 1)));
    let mut name = crate::uaccess::user_bytes(addr, first)?.to_vec();
    if first < max && !name.contains(&0) {
        name.extend_from_slice(crate::uaccess::user_bytes(addr + first, max - first)?);
    }
    Ok(name)
}
