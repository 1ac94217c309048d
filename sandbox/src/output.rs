//! What a run returns.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How the program ended: an exit code, or death by a signal (a fault in
/// the program is reported as the signal Linux would deliver, e.g.
/// SIGSEGV for a bad memory access).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`, code in 0..=255.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// The exit code, if the program exited normally.
    pub fn code(&self) -> Option<i32> {
        match *self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }
    /// The signal that ended the program, if any.
    pub fn signal(&self) -> Option<i32> {
        match *self {
            ExitStatus::Signal(s) => Some(s),
            ExitStatus::Code(_) => None,
        }
    }
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
    /// The shell's convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Statistics of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Wall time from the start of the run to its end (boot included).
    pub wall: Duration,
    /// CPU time the vCPU thread used for this run.
    pub cpu: Duration,
    /// Exits from the guest to the host (hypercalls and faults).
    pub exits: u64,
    /// System calls served inside the guest.
    pub syscalls: u64,
    /// Peak guest memory handed out by the runtime to the program, bytes.
    pub memory_used: u64,
    /// Page faults served in the guest (first touches of lazily backed
    /// memory; each one is a trip through the guest's ring 0).
    pub page_faults: u64,
    /// Processes the program created (fork, vfork, clone of a process).
    pub processes: u64,
    /// System-call and `cpuid` sites the guest rewrote to enter its
    /// runtime by a jump rather than the instruction (see
    /// `HVSANDBOX_REWRITE`; `cpuid` sites are rewritten ahead, at an entry
    /// snapshot, and count in that run).
    pub rewritten_sites: u64,
    /// System calls that took the hypervisor's slow path (a `syscall`
    /// instruction, not a rewritten site): all of them with rewriting off.
    pub slow_syscalls: u64,
    /// Bytes of stdout that reached the host, collected or streamed (up to
    /// the output cap).
    pub stdout_bytes: u64,
    /// Bytes of stderr that reached the host, collected or streamed.
    pub stderr_bytes: u64,
    /// System calls the runtime does not implement (answered -ENOSYS):
    /// syscall number -> count.
    pub unknown_syscalls: BTreeMap<u32, u64>,
}

/// Where a program faulted, when a CPU exception ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// x86 exception vector (14 = page fault, 13 = general protection, 6 = invalid opcode...).
    pub vector: u8,
    /// The CPU's error code for the exception (0 where it gives none).
    pub error_code: u64,
    /// Address of the faulting instruction.
    pub rip: u64,
    /// The address that could not be accessed (page faults only).
    pub address: Option<u64>,
}

/// The result of a run that completed (whatever the program's status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True if stdout was cut at the sandbox's `max_output`.
    pub stdout_truncated: bool,
    /// True if stderr was cut at the sandbox's `max_output`.
    pub stderr_truncated: bool,
    /// Set when a CPU exception killed the program (status is then the
    /// matching signal, e.g. SIGSEGV).
    pub fault: Option<FaultInfo>,
    /// Files the program left at or under the command's `collect` paths,
    /// by absolute guest path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// True if some collected files were dropped or cut short at the
    /// sandbox's collection caps.
    pub files_truncated: bool,
    pub stats: Stats,
}

impl Output {
    /// True if either stream was truncated (see also `files_truncated`).
    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }
    /// stdout as text (lossy UTF-8).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text (lossy UTF-8).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}
