//! What prctl keeps for a thread (`TaskCtl`: its name, parent-death
//! signal, no_new_privs, keepcaps, timer slack) and for a process
//! (`ProcCtl`: child subreaper, dumpable, THP, the capability bounding
//! set), with what fork and execve do to each, as on Linux. The calls
//! themselves are `prctl.rs`'s.

use core::cell::Cell;

/// The longest thread name, with its NUL (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Linux's default timer slack (ns).
pub const DEFAULT_SLACK_NS: u64 = 50_000;
/// The highest capability number (CAP_CHECKPOINT_RESTORE).
pub const CAP_LAST_CAP: u64 = 40;

/// A thread's attributes: copied to a thread or process it creates
/// (except the parent-death signal), kept by execve except its name,
/// which becomes the program's, and keepcaps, which is cleared.
#[derive(Clone)]
pub struct TaskCtl {
    comm: Cell<[u8; COMM_LEN]>,
    /// PR_SET_PDEATHSIG: sent to its process when the thread that
    /// created the process exits (0: none).
    pub pdeathsig: Cell<u8>,
    pub no_new_privs: Cell<bool>,
    pub keepcaps: Cell<bool>,
    pub timer_slack: Cell<u64>,
}

impl Default for TaskCtl {
    fn default() -> TaskCtl {
        TaskCtl {
            comm: Cell::new([0; COMM_LEN]),
            pdeathsig: Cell::new(0),
            no_new_privs: Cell::new(false),
            keepcaps: Cell::new(false),
            timer_slack: Cell::new(DEFAULT_SLACK_NS),
        }
    }
}

impl TaskCtl {
    /// A new thread's or process's, created by a thread with `self`.
    pub fn inherit(&self) -> TaskCtl {
        TaskCtl { pdeathsig: Cell::new(0), ..self.clone() }
    }

    /// The name (no NUL), as `/proc/.../comm` shows it.
    pub fn name(&self) -> alloc::vec::Vec<u8> {
        let c = self.comm.get();
        let n = c.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        c[..n].to_vec()
    }

    /// Names the thread `name`, cut at its first NUL and to 15 bytes, as
    /// Linux does.
    pub fn set_name(&self, name: &[u8]) {
        let n = name.iter().position(|&b| b == 0).unwrap_or(name.len()).min(COMM_LEN - 1);
        let mut c = [0u8; COMM_LEN];
        c[..n].copy_from_slice(&name[..n]);
        self.comm.set(c);
    }

    /// At execve: the new program's name (the last part of the path it
    /// was started by); keepcaps is cleared.
    pub fn exec(&self, path: &[u8]) {
        self.set_name(path.rsplit(|&c| c == b'/').next().unwrap_or(path));
        self.keepcaps.set(false);
    }
}

/// A process's attributes: a fork's child copies them except the
/// subreaper mark; execve keeps them but resets dumpable.
#[derive(Clone)]
pub struct ProcCtl {
    /// PR_SET_CHILD_SUBREAPER: it adopts its descendants' orphans.
    pub subreaper: Cell<bool>,
    pub dumpable: Cell<u8>,
    pub thp_disable: Cell<bool>,
    /// The capability bounding set (bit N: capability N).
    pub capbset: Cell<u64>,
}

impl Default for ProcCtl {
    fn default() -> ProcCtl {
        ProcCtl {
            subreaper: Cell::new(false),
            dumpable: Cell::new(1),
            thp_disable: Cell::new(false),
            capbset: Cell::new((1 << (CAP_LAST_CAP + 1)) - 1),
        }
    }
}

impl ProcCtl {
    pub fn inherit(&self) -> ProcCtl {
        ProcCtl { subreaper: Cell::new(false), ..self.clone() }
    }

    pub fn exec(&self) {
        self.dumpable.set(1);
    }
}
