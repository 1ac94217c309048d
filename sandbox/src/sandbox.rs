//! `Sandbox`: builds a sandbox, hands its runs to its vCPU thread, and
//! keeps what a failed run poisoned.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::command::Command;
use crate::config::{Config, SandboxBuilder};
use crate::control::{InterruptHandle, RunControl};
use crate::error::{Error, Result};
use crate::jail;
use crate::live::{Live, RunEnd};
use crate::output::Output;
use crate::prepare::prepare;
use crate::process::Process;
use crate::runner::{Ended, Stream};
use crate::snapshot::{GuestLimits, Invocation, Snapshot, SnapshotPoint};
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
    /// The last spawned process's run (the sandbox is busy until it ends).
    current: Option<Arc<Live>>,
    /// The snapshot every run starts from, for a sandbox built from one.
    snapshot: Option<Snapshot>,
    /// Who the mount roots were when the sandbox was built (its vCPU
    /// thread may read below those directories only).
    roots: jail::RootIds,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("config", &self.config).field("poisoned", &self.control.poisoned()).finish()
    }
}

impl Sandbox {
    /// A builder with the default settings.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    fn launch(config: Config, snapshot: Option<Snapshot>) -> Result<Sandbox> {
        let control = Arc::new(RunControl::default());
        let mode = jail::effective_mode(config.seccomp);
        let roots = jail::MountRoots::open(config.mounts.iter().map(|m| m.host.as_path()))?;
        let root_ids = roots.ids().clone();
        // Its first VM, made on a thread of its own while the vCPU thread
        // starts and enters its jail.
        let ahead = (config.boot_ahead && snapshot.is_none())
            .then(|| vm_factory::make_vm_ahead(config.memory, config.huge_pages))
            .flatten();
        if snapshot.is_some() {
            // Opened here: the vCPU thread may not open it.
            vm_factory::open_pagemap();
        }
        // Sets KVM's process-wide state up while a new vCPU thread enters
        // its jail (see `vcpu_thread::spawn`), and fails with
        // `KvmUnavailable` where there is no KVM.
        let worker = WorkerLink::start(config.clone(), control.clone(), snapshot.clone(), mode, roots, ahead)?;
        // After KVM's state exists: the background thread is jailed too.
        vm_factory::start_reaper();
        Ok(Sandbox { config, control, worker: Mutex::new(worker), current: None, snapshot, roots: root_ids })
    }

    /// Refuses work once an earlier failure poisoned the sandbox, or while
    /// a spawned process runs.
    fn check_usable(&self) -> Result<()> {
        if let Some(why) = self.control.poisoned() {
            return Err(Error::SandboxPoisoned(why));
        }
        match &self.current {
            // A killed process's run ends soon: wait for it.
            Some(l) if l.is_killed() => l.wait_ended(),
            Some(l) if !l.ended() => return Err(Error::SandboxBusy),
            _ => {}
        }
        Ok(())
    }

    fn worker(&mut self) -> &mut WorkerLink {
        self.worker.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a job to the vCPU thread and waits for its result: refused
    /// once the sandbox is poisoned (the worker records failures that
    /// poison it).
    fn submit(&mut self, job: Job) -> Result<Reply> {
        self.check_usable()?;
        self.worker().submit(job)
    }

    /// Starts `command` as a process whose output is collected or streamed.
    fn start_process(&mut self, command: &Command, stream: Stream) -> Result<Process> {
        self.check_usable()?;
        let prepared = prepare(&self.config, &self.roots, self.snapshot.as_ref(), command)?;
        // Input written ahead of the program is bounded by half of
        // max_input (the other half: a writer's chunk in hand).
        let live =
            Arc::new(Live::new(usize::try_from(self.config.max_input / 2).unwrap_or(usize::MAX), command.notify_end));
        if !matches!(stream, Stream::Live { interactive: true, .. }) {
            live.close_input();
        }
        let job = Job::Run { prepared: Box::new(prepared), take: None, live: Some(RunEnd(live.clone())), stream };
        *self.control.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        self.worker().send(job)?;
        self.current = Some(live.clone());
        Ok(Process::new(live, self.control.clone(), self.config.max_output))
    }

    /// Starts `command` and returns at once: a [`Process`] streams its
    /// output as it is produced and takes its stdin while it runs (unless
    /// the command gives its stdin). The sandbox's limits apply as for
    /// [`run`](Self::run); the sandbox runs nothing else until it ends.
    pub fn spawn(&mut self, command: &Command) -> Result<Process> {
        let stream = Stream::Live { unlimited: command.unlimited_stream, interactive: !command.stdin_given };
        self.start_process(command, stream)
    }

    /// Starts `command` as [`run`](Self::run) does — output collected,
    /// stdin the command's (none if it gives none) — and returns at once:
    /// the [`Process`]'s `wait` returns what `run` would, and its `kill`
    /// or [`Process::kill_handle`] stops this run only (unlike the
    /// sandbox's [`InterruptHandle`], it cannot reach a later run). For
    /// callers that wait on one thread and cancel from another.
    pub fn start(&mut self, command: &Command) -> Result<Process> {
        self.start_process(command, Stream::Collect)
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
        // A spawn whose output is collected instead of streamed.
        self.start(command)?.wait()
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
        let started = Invocation { argv: prepared.argv.clone(), env: prepared.envp.clone() };
        let job = Job::Run { prepared: Box::new(prepared), take: Some(point), live: None, stream: Stream::Collect };
        match self.submit(job)? {
            Reply::Ran(Ended::Snapshot(b)) => {
                let (vm, state, fs) = *b;
                let mounts = self.config.mounts.clone();
                let limits = GuestLimits {
                    max_processes: self.config.max_processes,
                    max_open_files: self.config.max_open_files,
                };
                let snap = Snapshot::capture(&vm, state, point, started, mounts, limits, fs);
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
        if self.is_busy() {
            return Err(Error::SandboxBusy);
        }
        self.worker().submit(Job::Warm).map(|_| ())
    }

    /// Whether an earlier failure made this sandbox unusable.
    pub fn is_poisoned(&self) -> bool {
        self.control.poisoned().is_some()
    }

    /// Whether a spawned process is still running.
    pub fn is_busy(&self) -> bool {
        self.current.as_ref().is_some_and(|l| !l.ended())
    }

    /// Kills a spawned process that is still running and waits for its
    /// run to end (a sandbox going back to a pool).
    pub(crate) fn settle(&mut self) {
        if let Some(live) = self.current.take() {
            self.control.kill_process(&live);
            live.wait_ended();
        }
    }

    /// The snapshot this sandbox starts from, if any.
    pub fn source_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
}

impl Drop for Sandbox {
    /// A process still running dies with its sandbox.
    fn drop(&mut self) {
        if let Some(live) = &self.current {
            self.control.kill_process(live);
        }
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
        vm_factory::prime_blank(self.config.memory, self.config.huge_pages);
        Sandbox::launch(self.config, None)
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
        // Made here, on the caller's thread: the vCPU thread's jail could
        // not (a loaded snapshot copied into VMs that are not reset never
        // needs it).
        if snapshot.needs_memory_file(self.config.reset_ahead) {
            snapshot.memory_file()?;
        }
        // Its first run takes a clone made ahead.
        vm_factory::prime_clone(snapshot);
        Sandbox::launch(self.config, Some(snapshot.clone()))
    }
}
