//! The public error type: every failure has a stable [`ErrorKind`].

use std::time::Duration;

use hvsandbox_core::VmError;

/// Stable classification of an [`Error`], shared with the Python and Node
/// bindings (`code()` gives the string form used there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The run exceeded its wall-clock deadline.
    Timeout,
    /// The run was stopped through an [`crate::InterruptHandle`].
    Cancelled,
    /// The program needed more memory than the sandbox has.
    MemoryLimitExceeded,
    /// The program wrote more than `max_output` to a stream and the
    /// sandbox was told to fail rather than truncate.
    OutputLimitExceeded,
    /// The guest runtime itself failed (not the program: a program's fault
    /// is an exit status, see [`crate::ExitStatus::signal`]).
    GuestCrashed,
    /// The program cannot run here: not an ELF, wrong architecture, a
    /// dynamic executable, unreadable file.
    InvalidProgram,
    /// A configuration value is out of range.
    InvalidConfig,
    /// /dev/kvm is missing or not accessible.
    KvmUnavailable,
    /// The sandbox is unusable after an earlier failure.
    SandboxPoisoned,
    /// The sandbox is still running a spawned process: wait for it or kill
    /// it first (a sandbox runs one program at a time).
    SandboxBusy,
    /// A snapshot cannot be used: its file is not one, is corrupted, or
    /// was made for another runtime build, CPU or configuration; or a run
    /// meant to take one ended first.
    SnapshotInvalid,
    /// The sandbox's vCPU thread made a system call its seccomp filter
    /// does not allow: a VMM bug or an attack reaching the host through
    /// one; the thread was stopped and the sandbox is poisoned.
    JailViolation,
    /// An unexpected host-side failure (a KVM ioctl failed, out of host
    /// memory). Says which operation failed.
    Internal,
}

impl ErrorKind {
    /// Stable string code, e.g. `"TIMEOUT"`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Cancelled => "CANCELLED",
            ErrorKind::MemoryLimitExceeded => "MEMORY_LIMIT_EXCEEDED",
            ErrorKind::OutputLimitExceeded => "OUTPUT_LIMIT_EXCEEDED",
            ErrorKind::GuestCrashed => "GUEST_CRASHED",
            ErrorKind::InvalidProgram => "INVALID_PROGRAM",
            ErrorKind::InvalidConfig => "INVALID_CONFIG",
            ErrorKind::KvmUnavailable => "KVM_UNAVAILABLE",
            ErrorKind::SandboxPoisoned => "SANDBOX_POISONED",
            ErrorKind::SandboxBusy => "SANDBOX_BUSY",
            ErrorKind::JailViolation => "JAIL_VIOLATION",
            ErrorKind::SnapshotInvalid => "SNAPSHOT_INVALID",
            ErrorKind::Internal => "INTERNAL",
        }
    }
}

/// Output of a run that was stopped before it finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl PartialOutput {
    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Errors of the hvsandbox API. `Clone` (sources are shared), so a
/// process's result can be handed out more than once.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the run exceeded its {} of {limit:?}", if *.cpu { "CPU-time limit" } else { "timeout" })]
    Timeout {
        limit: Duration,
        /// The limit was on guest CPU time (`SandboxBuilder::cpu_time`),
        /// not wall-clock time.
        cpu: bool,
        /// What the program wrote before it was stopped.
        partial: Box<PartialOutput>,
    },
    #[error("the program ran out of memory: the sandbox has {limit} bytes")]
    MemoryLimitExceeded {
        limit: u64,
        /// What the program wrote before it was stopped.
        partial: Box<PartialOutput>,
    },
    #[error("the program wrote more than {limit} bytes to {stream}")]
    OutputLimitExceeded {
        stream: &'static str,
        limit: usize,
        /// What the program wrote up to the limit.
        partial: Box<PartialOutput>,
    },
    #[error("the run was cancelled")]
    Cancelled {
        /// What the program wrote before it was stopped.
        partial: Box<PartialOutput>,
    },
    #[error("the guest runtime crashed: {detail}")]
    GuestCrashed { detail: String },
    #[error("invalid program {program}: {reason}")]
    InvalidProgram { program: String, reason: String },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("KVM is unavailable: {reason}")]
    KvmUnavailable {
        reason: String,
        #[source]
        source: Option<std::sync::Arc<std::io::Error>>,
    },
    #[error("the sandbox is poisoned by an earlier failure ({0}); create a new one")]
    SandboxPoisoned(String),
    #[error("the sandbox is still running a spawned process; wait for it or kill it first")]
    SandboxBusy,
    #[error("snapshot {path}: {reason}")]
    SnapshotFile { path: String, reason: String },
    #[error("cannot take the snapshot: {0}")]
    SnapshotFailed(String),
    #[error("the vCPU thread made a system call its jail forbids: {syscall}; the thread was stopped")]
    JailViolation { syscall: String },
    #[error("internal error: {context}")]
    Internal {
        context: String,
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::MemoryLimitExceeded { .. } => ErrorKind::MemoryLimitExceeded,
            Error::OutputLimitExceeded { .. } => ErrorKind::OutputLimitExceeded,
            Error::GuestCrashed { .. } => ErrorKind::GuestCrashed,
            Error::InvalidProgram { .. } => ErrorKind::InvalidProgram,
            Error::InvalidConfig(_) => ErrorKind::InvalidConfig,
            Error::KvmUnavailable { .. } => ErrorKind::KvmUnavailable,
            Error::SandboxPoisoned(_) => ErrorKind::SandboxPoisoned,
            Error::SandboxBusy => ErrorKind::SandboxBusy,
            Error::JailViolation { .. } => ErrorKind::JailViolation,
            Error::SnapshotFile { .. } | Error::SnapshotFailed(_) => ErrorKind::SnapshotInvalid,
            Error::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// For a run stopped by a limit or a cancel: the output it had produced
    /// until then (like `subprocess.TimeoutExpired.output`).
    pub fn partial_output(&self) -> Option<&PartialOutput> {
        match self {
            Error::Timeout { partial, .. }
            | Error::Cancelled { partial }
            | Error::MemoryLimitExceeded { partial, .. }
            | Error::OutputLimitExceeded { partial, .. } => Some(partial),
            _ => None,
        }
    }

    /// Where a stopped run's output goes (the errors of
    /// [`Aftermath::Stopped`]).
    pub(crate) fn partial_output_mut(&mut self) -> Option<&mut PartialOutput> {
        match self {
            Error::Timeout { partial, .. }
            | Error::Cancelled { partial }
            | Error::MemoryLimitExceeded { partial, .. }
            | Error::OutputLimitExceeded { partial, .. } => Some(partial),
            _ => None,
        }
    }

    /// What this error says about the guest and the sandbox: the one place
    /// that decides which failures are benign and which poison.
    pub(crate) fn aftermath(&self) -> Aftermath {
        if self.partial_output().is_some() {
            return Aftermath::Stopped;
        }
        match self.kind() {
            ErrorKind::GuestCrashed | ErrorKind::Internal | ErrorKind::SandboxPoisoned | ErrorKind::JailViolation => {
                Aftermath::Poisoned
            }
            _ => Aftermath::Failed,
        }
    }

    pub(crate) fn timeout(limit: Duration) -> Error {
        Error::Timeout { limit, cpu: false, partial: Box::default() }
    }

    pub(crate) fn cpu_timeout(limit: Duration) -> Error {
        Error::Timeout { limit, cpu: true, partial: Box::default() }
    }

    pub(crate) fn cancelled() -> Error {
        Error::Cancelled { partial: Box::default() }
    }

    /// Whether this error leaves the sandbox unusable for later runs.
    pub fn poisons(&self) -> bool {
        self.aftermath() == Aftermath::Poisoned
    }
}

/// What a failed run leaves behind (see [`Error::aftermath`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aftermath {
    /// A limit or a cancel stopped a sound guest: the error carries the
    /// output so far, and a snapshot sandbox resets the VM for its next run.
    Stopped,
    /// The run failed (a bad program or input, a snapshot that cannot be
    /// taken, or the guest ending in a way no sound guest ends): its VM is
    /// replaced, the sandbox stays usable.
    Failed,
    /// The sandbox is unusable for later runs.
    Poisoned,
}

/// What a failure of the KVM layer means to the caller.
impl From<VmError> for Error {
    fn from(e: VmError) -> Error {
        match e {
            VmError::KvmOpen(source) => {
                let errno = source.errno();
                let reason = match errno {
                    libc::ENOENT => "/dev/kvm does not exist: run on a host with KVM enabled \
                                     (load kvm_intel or kvm_amd, or enable nested virtualisation)"
                        .to_string(),
                    libc::EACCES | libc::EPERM => "no permission to open /dev/kvm: add this user to the \
                                                   'kvm' group (usermod -aG kvm $USER) and log in again"
                        .to_string(),
                    _ => format!("cannot open /dev/kvm (errno {errno})"),
                };
                Error::KvmUnavailable {
                    reason,
                    source: Some(std::sync::Arc::new(std::io::Error::from_raw_os_error(errno))),
                }
            }
            VmError::KvmVersion(v) => {
                Error::KvmUnavailable { reason: format!("unsupported KVM API version {v}"), source: None }
            }
            VmError::MemorySize { .. } | VmError::HugePages(_) => Error::InvalidConfig(e.to_string()),
            VmError::ImageTooLarge { .. } | VmError::ArgsTooLarge { .. } | VmError::ManifestTooLarge { .. } => {
                Error::InvalidConfig(e.to_string())
            }
            other => Error::Internal { context: other.to_string(), source: Some(std::sync::Arc::new(other)) },
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
