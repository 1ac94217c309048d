//! `Sandbox`: builds a sandbox, hands its runs to its vCPU thread, and
//! keeps what a failed run poisoned.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::command::Command;
use crate::config::{Config, SandboxBuilder};
use crate::control::{InterruptHandle, RunControl};
use crate::error::{Error, Result};
use crate::jail;
use crate::output::Output;
use crate::prepare::prepare;
use crate::runner::Ended;
use crate::snapshot::{GuestLimits, Snapshot, SnapshotPoint};
use crate::vm_factory::{self, reap};
use crate::worker::{Job, Reply, WorkerLink};

/// A sandbox: runs programs, one at a time, each in a fresh micro-VM.
///
/// ```no_run
/// use hvsandbox::{Command, Sandbox};
/// use std::time::Duration;
/// let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(2)).build()?;
/// let out = sb.run(&Command::new("/bin/busybox").args(["echo", "hi"]))?;
/// assert_eq!(out.status.code(), Some(0));
/// # Ok::<(), hvsandbox::Error>(())
/// ```
pub struct Sandbox {
    config: Config,
    control: Arc<RunControl>,
    worker: Mutex<WorkerLink>,
    poisoned: Option<String>,
    /// The snapshot every run starts from, for a sandbox built from one.
    snapshot: Option<Snapshot>,
    /// Who the mount roots were when the sandbox was built (its vCPU
    /// thread may read below those directories only).
    roots: jail::RootIds,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("config", &self.config).field("poisoned", &self.poisoned).finish()
    }
}

impl Sandbox {
    /// A builder with the default settings.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    fn start(config: Config, snapshot: Option<Snapshot>) -> Result<Sandbox> {
        hvsandbox_core::probe_kvm()?;
        vm_factory::start_reaper();
        let control = Arc::new(RunControl::default());
        let mode = jail::effective_mode(config.seccomp);
        let roots = jail::MountRoots::open(config.mounts.iter().map(|m| m.host.as_path()))?;
        let root_ids = roots.ids().clone();
        if snapshot.is_some() {
            // Opened here: the vCPU thread may not open it.
            vm_factory::open_pagemap();
        }
        let worker = WorkerLink::start(config.clone(), control.clone(), snapshot.clone(), mode, roots)?;
        Ok(Sandbox { config, control, worker: Mutex::new(worker), poisoned: None, snapshot, roots: root_ids })
    }

    /// Refuses work once an earlier failure poisoned the sandbox.
    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::SandboxPoisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Hands a job to the vCPU thread and waits for its result: refused
    /// once the sandbox is poisoned; a failure that poisons poisons it.
    fn submit(&mut self, job: Job) -> Result<Reply> {
        self.check_usable()?;
        let reply = self.worker.get_mut().unwrap_or_else(|e| e.into_inner()).submit(job);
        if let Err(e) = &reply {
            if e.poisons() {
                self.poisoned = Some(e.to_string());
            }
        }
        reply
    }

    /// The vCPU thread's kernel thread id (for inspecting its jail).
    #[doc(hidden)]
    pub fn vcpu_thread_id(&self) -> i64 {
        self.control.vcpu_tid.load(Ordering::SeqCst)
    }

    /// Test hook: makes system call `nr` (without arguments) on the vCPU
    /// thread (all arguments zero), as a VMM bug would; returns its result
    /// (-1 for a failure).
    #[doc(hidden)]
    pub fn debug_syscall_on_vcpu_thread(&mut self, nr: i64) -> Result<i64> {
        self.debug_syscall_with_args_on_vcpu_thread(nr, [0; 6]).map(|r| r.max(-1))
    }

    /// Test hook: makes system call `nr` with `args` on the vCPU thread,
    /// as a VMM bug would; returns its result, `-errno` for a failure.
    #[doc(hidden)]
    pub fn debug_syscall_with_args_on_vcpu_thread(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        match self.submit(Job::Syscall(nr, args))? {
            Reply::Syscall(v) => Ok(v),
            _ => Err(unexpected_reply()),
        }
    }

    /// A handle that can stop this sandbox's current run from another thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle { control: self.control.clone() }
    }

    /// Runs `command` to completion in a fresh micro-VM. A program that
    /// exits non-zero or dies of a signal is an `Ok` output; errors are
    /// for runs that did not complete (timeout, cancel, invalid program,
    /// crashed runtime).
    pub fn run(&mut self, command: &Command) -> Result<Output> {
        self.check_usable()?;
        let prepared = prepare(&self.config, &self.roots, self.snapshot.as_ref(), command)?;
        match self.submit(Job::Run { prepared: Box::new(prepared), take: None })? {
            Reply::Ran(Ended::Output(out)) => Ok(*out),
            _ => Err(unexpected_reply()),
        }
    }

    /// Runs `command` up to a snapshot point and freezes it there: at
    /// [`SnapshotPoint::Entry`] right after the program is loaded, at
    /// [`SnapshotPoint::Checkpoint`] where it first reads
    /// `/dev/hvsandbox/checkpoint` (for an interpreter: after importing its
    /// libraries). Sandboxes built from the snapshot
    /// ([`Sandbox::from_snapshot`]) start every run there.
    pub fn snapshot(&mut self, command: &Command, point: SnapshotPoint) -> Result<Snapshot> {
        self.check_usable()?;
        if self.snapshot.is_some() {
            return Err(Error::InvalidConfig("a sandbox built from a snapshot cannot take another one yet".into()));
        }
        let prepared = prepare(&self.config, &self.roots, None, command)?;
        match self.submit(Job::Run { prepared: Box::new(prepared), take: Some(point) })? {
            Reply::Ran(Ended::Snapshot(b)) => {
                let (vm, state, fs) = *b;
                let mounts = self.config.mounts.clone();
                let limits = GuestLimits {
                    max_processes: self.config.max_processes,
                    max_open_files: self.config.max_open_files,
                };
                let snap = Snapshot::capture(&vm, state, point, command.argv0.clone(), mounts, limits, fs);
                reap(vm);
                snap
            }
            Reply::Ran(Ended::Output(out)) => Err(Error::SnapshotFailed(format!(
                "the program ended ({}) before reaching its {}",
                out.status,
                if point == SnapshotPoint::Entry {
                    "entry"
                } else {
                    "checkpoint (a read of /dev/hvsandbox/checkpoint)"
                }
            ))),
            _ => Err(unexpected_reply()),
        }
    }

    /// A sandbox whose runs all start from `snapshot` (default limits; see
    /// [`SandboxBuilder::build_from`] to set them).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Sandbox> {
        SandboxBuilder::default().build_from(snapshot)
    }

    /// For a sandbox built from a snapshot: makes its VM now, so that the
    /// next run does not pay for it (what a pool does in the background).
    pub fn warm(&mut self) -> Result<()> {
        if self.snapshot.is_none() {
            return Ok(());
        }
        // Not `submit`: warming is not a run, and a failure to warm does not
        // poison (the next run tries again).
        self.worker.get_mut().unwrap_or_else(|e| e.into_inner()).submit(Job::Warm).map(|_| ())
    }

    /// Whether an earlier failure made this sandbox unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The snapshot this sandbox starts from, if any.
    pub fn source_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
}

fn unexpected_reply() -> Error {
    Error::Internal { context: "unexpected reply".into(), source: None }
}

impl SandboxBuilder {
    /// Checks the settings, makes sure KVM is usable and starts the
    /// sandbox's vCPU thread.
    pub fn build(self) -> Result<Sandbox> {
        self.validate()?;
        // Its first run takes a VM made ahead for sandboxes of its size.
        vm_factory::prime_blank(self.config.memory);
        Sandbox::start(self.config, None)
    }

    /// A sandbox whose runs start from `snapshot` instead of booting a
    /// program. Run it with [`Command::resume`].
    ///
    /// Which settings are whose:
    /// - Limits the host enforces (timeout, CPU time, output, input and
    ///   collection caps, seccomp), environment, files and working
    ///   directory are this builder's: a snapshot holds none of them.
    /// - Memory size, [`max_processes`](Self::max_processes) and
    ///   [`max_open_files`](Self::max_open_files) live in the snapshot's
    ///   guest, fixed when it booted: they are the snapshot's. Setting one
    ///   of them on this builder to another value fails with
    ///   `InvalidConfig` (it is never silently replaced).
    /// - Mounts: the guest paths are the snapshot's (the guest's file tree
    ///   is in its memory), the host directories behind them this
    ///   builder's. [`mount`](Self::mount) a host directory at each of the
    ///   snapshot's guest paths ([`Snapshot::mounts`]) and at no other
    ///   path, or fail with `InvalidConfig`; the host directory may differ
    ///   from the one the snapshot was taken with (say, on another host).
    ///   With no mounts given, a snapshot taken in this process mounts the
    ///   host directories it was taken with; one loaded from a file never
    ///   makes the host open a path the caller did not give (the file is
    ///   untrusted input), so its mounts must be given.
    pub fn build_from(mut self, snapshot: &Snapshot) -> Result<Sandbox> {
        self.adopt(snapshot)?;
        self.validate()?;
        // Its first run takes a clone made ahead.
        vm_factory::prime_clone(snapshot);
        Sandbox::start(self.config, Some(snapshot.clone()))
    }
}
