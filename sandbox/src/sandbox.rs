//! `Sandbox`: builds a sandbox, hands its runs to its vCPU thread, and
//! keeps what a failed run poisoned.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use hvsandbox_core::{ThreadKicker, VcpuState, Vm};

use crate::command::Command;
use crate::config::{Config, SandboxBuilder};
use crate::control::{jail_violation, InterruptHandle, RunControl};
use crate::error::{Error, ErrorKind, Result};
use crate::jail;
use crate::output::Output;
use crate::prepare::{prepare, Boot, Prepared};
use crate::runner::{Ended, Runner};
use crate::snapshot::{GuestLimits, Snapshot, SnapshotPoint};
use crate::vcpu_thread;
use crate::vm_factory::{self, clone_vm, make_ready, one_at_a_time, reap, ResetAid};

/// How long a cold sandbox's vCPU thread waits for the next run before it
/// makes that run's VM ahead of time (a sandbox dropped or reused at once
/// does not pay for a VM it will not use).
const SPARE_AFTER_IDLE: Duration = Duration::from_micros(200);

enum Reply {
    Run(Box<Output>),
    Syscall(i64),
    /// A run stopped at its snapshot point: the VM (for the caller to copy
    /// its memory) and the vCPU's registers.
    Snapshot(Box<(Vm, VcpuState, Vec<crate::fs::FsEntry>)>),
}

enum Job {
    Run {
        command: Command,
        prepared: Box<Prepared>,
        /// Stop at this snapshot point and hand the VM back.
        take: Option<SnapshotPoint>,
    },
    /// Test hook: make this system call on the vCPU thread.
    Syscall(i64, [u64; 6]),
    /// Make the VM of a snapshot sandbox now, so its next run does not.
    Warm,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Result<Reply>>,
    /// The vCPU thread serving this sandbox.
    thread: Option<vcpu_thread::VcpuThread>,
}

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
    worker: Mutex<Worker>,
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
        hvsandbox_core::probe_kvm().map_err(Error::from)?;
        vm_factory::start_reaper();
        let control = Arc::new(RunControl::default());
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_config = config.clone();
        let worker_control = control.clone();
        let worker_snapshot = snapshot.clone();
        let mode = jail::effective_mode(config.seccomp);
        let roots = jail::MountRoots::open(config.mounts.iter().map(|m| m.host.as_path()))?;
        let root_ids = roots.ids().clone();
        if snapshot.is_some() {
            // Opened here: the vCPU thread may not open it.
            vm_factory::open_pagemap();
        }
        let body: vcpu_thread::Body = Box::new(move |kit: &vcpu_thread::Kit| {
            let (timer, cpu_timer) = (&kit.timer, &kit.cpu_timer);
            let _ = worker_control.kicker.set(ThreadKicker::current());
            // SAFETY: gettid has no arguments and cannot fail.
            worker_control.vcpu_tid.store(unsafe { libc::gettid() } as i64, Ordering::SeqCst);
            // Refused calls from now on are this sandbox's.
            jail::rebind(&worker_control.violation);
            // What resetting to the snapshot in place needs (a read-only
            // mapping of the snapshot; the page map opened above).
            let reset_aid = worker_snapshot.as_ref().and_then(ResetAid::new);
            let _ = ready_tx.send(Ok(()));
            // A sandbox built from a snapshot keeps its VM between runs
            // (reset to the snapshot at the start of each).
            let mut kept: Option<Vm> = None;
            // The kept VM is in the snapshot's state already: made from
            // it, or reset right after its last run (off the next
            // caller's path).
            let mut ready = false;
            // A cold sandbox that runs again makes the next run's blank
            // VM while it waits for that run, off the caller's path, and
            // boots the runtime in it as far as it goes without a program.
            let make_spare = || {
                if worker_snapshot.is_some() {
                    return None;
                }
                one_at_a_time(|| {
                    let mut vm = Vm::new(worker_config.memory).ok()?;
                    match vm.preboot() {
                        Ok(()) => Some(vm),
                        Err(_) => {
                            drop(vm);
                            None
                        }
                    }
                })
            };
            let mut spare: Option<Vm> = None;
            // Whether a run happened: a cold sandbox that runs again gets
            // its next VM made once it has been idle a moment.
            let mut ran = false;
            // A cold run's VM, torn down on this thread once the sandbox
            // is idle (on the reaper, concurrently with this thread
            // making the next VM or running, both stalled for ~20 ms at
            // times: measured, likely KVM's MMU-notifier registration
            // taking all of the process's memory locks while a teardown
            // holds some); on the reaper if the sandbox is dropped or
            // the next run comes first.
            let mut retired: Option<Vm> = None;
            loop {
                let idle_work = worker_snapshot.is_none() && (retired.is_some() || (ran && spare.is_none()));
                let job = if idle_work {
                    match job_rx.recv_timeout(SPARE_AFTER_IDLE) {
                        Ok(job) => {
                            if let Some(vm) = retired.take() {
                                reap(vm);
                            }
                            job
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // Idle: the last VM's teardown, then (unless a
                            // run came meanwhile) the next one's making.
                            if let Some(vm) = retired.take() {
                                one_at_a_time(|| drop(vm));
                                match job_rx.try_recv() {
                                    Ok(job) => job,
                                    Err(mpsc::TryRecvError::Empty) => {
                                        spare = make_spare();
                                        continue;
                                    }
                                    Err(mpsc::TryRecvError::Disconnected) => break,
                                }
                            } else {
                                spare = make_spare();
                                continue;
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                } else {
                    match job_rx.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                let (command, prepared, take) = match job {
                    Job::Run { command, prepared, take } => (command, *prepared, take),
                    Job::Warm => {
                        let reply = match (&worker_snapshot, &kept) {
                            (Some(snap), None) => match clone_vm(snap, reset_aid.as_ref()) {
                                Ok(vm) => {
                                    kept = Some(vm);
                                    ready = true;
                                    Ok(Reply::Syscall(0))
                                }
                                Err(e) => Err(e),
                            },
                            _ => Ok(Reply::Syscall(0)),
                        };
                        if result_tx.send(reply).is_err() {
                            break;
                        }
                        continue;
                    }
                    Job::Syscall(nr, a) => {
                        // SAFETY: a test hook making one system call as a VMM bug would.
                        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) } as i64;
                        let r = if r == -1 {
                            -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
                        } else {
                            r
                        };
                        let reply = match jail_violation(&worker_control) {
                            Some(e) => Err(e),
                            None => Ok(Reply::Syscall(r)),
                        };
                        let stop = reply.is_err();
                        if result_tx.send(reply).is_err() || stop {
                            break;
                        }
                        continue;
                    }
                };
                let mut runner = Runner::new(&worker_config, &worker_control, timer, cpu_timer);
                runner.fs = prepared.fs;
                runner.collector = prepared.collector;
                runner.take = take;
                runner.restore = worker_snapshot.clone();
                runner.kept = kept.take();
                runner.kept_ready = std::mem::take(&mut ready);
                runner.spare = spare.take();
                runner.reset_aid = reset_aid.as_ref();
                let boot = Boot {
                    image: prepared.image,
                    argv: prepared.argv,
                    envp: prepared.envp,
                    seed: prepared.seed,
                    manifest: prepared.manifest,
                };
                let (result, mut vm) = runner.run(&command, &boot);
                // A refused system call anywhere in the run wins.
                let violation = jail_violation(&worker_control);
                let stop = violation.is_some();
                let reply = match violation {
                    Some(e) => Err(e),
                    None => match result {
                        Ok(Ended::Output(o)) => Ok(Reply::Run(o)),
                        Ok(Ended::Snapshot(state, fs)) => match vm.take() {
                            Some(v) => Ok(Reply::Snapshot(Box::new((v, *state, fs)))),
                            None => Err(Error::Internal { context: "snapshot without a VM".into(), source: None }),
                        },
                        Err(e) => Err(e),
                    },
                };
                // A VM whose run ended in a way no sound guest ends
                // (a crash, an exit KVM could not handle, a hostile
                // hypercall) is not reset for the next run but replaced.
                let sound = match &reply {
                    Ok(_) => true,
                    Err(e) => matches!(
                        e.kind(),
                        ErrorKind::Timeout
                            | ErrorKind::Cancelled
                            | ErrorKind::OutputLimitExceeded
                            | ErrorKind::MemoryLimitExceeded
                    ),
                };
                if result_tx.send(reply).is_err() || stop {
                    break;
                }
                if let (Some(snap), true) = (&worker_snapshot, sound) {
                    // Reset now, while the caller reads its output,
                    // rather than when the next run comes.
                    kept = vm.and_then(|mut vm| match make_ready(&mut vm, snap, reset_aid.as_ref(), true) {
                        Ok(()) => Some(vm),
                        Err(_) => {
                            reap(vm);
                            None
                        }
                    });
                    ready = kept.is_some();
                } else {
                    if let Some(old) = retired.take() {
                        reap(old);
                    }
                    retired = vm;
                    ran = true;
                }
            }
            for vm in [spare, kept, retired].into_iter().flatten() {
                reap(vm);
            }
            drop(reset_aid);
            jail_violation(&worker_control).is_none()
        });
        let thread = vcpu_thread::VcpuThread::start(mode, roots, body)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Internal { context: "vCPU thread died at start".into(), source: None }),
        }
        Ok(Sandbox {
            config,
            control,
            worker: Mutex::new(Worker { jobs, results, thread: Some(thread) }),
            poisoned: None,
            snapshot,
            roots: root_ids,
        })
    }

    /// Hands a job to the vCPU thread and waits for its result.
    fn submit(&mut self, job: Job) -> Result<Reply> {
        let worker = self.worker.get_mut().unwrap_or_else(|e| e.into_inner());
        let control = &self.control;
        let gone = || {
            jail_violation(control)
                .unwrap_or_else(|| Error::Internal { context: "the vCPU thread is gone".into(), source: None })
        };
        worker.jobs.send(job).map_err(|_| gone())?;
        worker.results.recv().map_err(|_| gone())?
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
        if let Some(why) = &self.poisoned {
            return Err(Error::SandboxPoisoned(why.clone()));
        }
        let r = self.submit(Job::Syscall(nr, args));
        match r {
            Ok(Reply::Syscall(v)) => Ok(v),
            Ok(_) => Err(Error::Internal { context: "unexpected reply".into(), source: None }),
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
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
        if let Some(why) = &self.poisoned {
            return Err(Error::SandboxPoisoned(why.clone()));
        }
        let prepared = prepare(&self.config, &self.roots, self.snapshot.as_ref(), command)?;
        let result = self.submit(Job::Run { command: command.clone(), prepared: Box::new(prepared), take: None });
        let result = result.and_then(|r| match r {
            Reply::Run(out) => Ok(*out),
            _ => Err(Error::Internal { context: "unexpected reply".into(), source: None }),
        });
        if let Err(e) = &result {
            if e.poisons() {
                self.poisoned = Some(e.to_string());
            }
        }
        result
    }

    /// Runs `command` up to a snapshot point and freezes it there: at
    /// [`SnapshotPoint::Entry`] right after the program is loaded, at
    /// [`SnapshotPoint::Checkpoint`] where it first reads
    /// `/dev/hvsandbox/checkpoint` (for an interpreter: after importing its
    /// libraries). Sandboxes built from the snapshot
    /// ([`Sandbox::from_snapshot`]) start every run there.
    pub fn snapshot(&mut self, command: &Command, point: SnapshotPoint) -> Result<Snapshot> {
        if let Some(why) = &self.poisoned {
            return Err(Error::SandboxPoisoned(why.clone()));
        }
        if self.snapshot.is_some() {
            return Err(Error::InvalidConfig("a sandbox built from a snapshot cannot take another one yet".into()));
        }
        let prepared = prepare(&self.config, &self.roots, None, command)?;
        let reply = self.submit(Job::Run { command: command.clone(), prepared: Box::new(prepared), take: Some(point) });
        let reply = match reply {
            Err(e) => {
                if e.poisons() {
                    self.poisoned = Some(e.to_string());
                }
                return Err(e);
            }
            Ok(r) => r,
        };
        match reply {
            Reply::Snapshot(b) => {
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
            Reply::Run(out) => Err(Error::SnapshotFailed(format!(
                "the program ended ({}) before reaching its {}",
                out.status,
                if point == SnapshotPoint::Entry {
                    "entry"
                } else {
                    "checkpoint (a read of /dev/hvsandbox/checkpoint)"
                }
            ))),
            Reply::Syscall(_) => Err(Error::Internal { context: "unexpected reply".into(), source: None }),
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
        self.submit(Job::Warm).map(|_| ())
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

impl Drop for Sandbox {
    fn drop(&mut self) {
        let worker = self.worker.get_mut().unwrap_or_else(|e| e.into_inner());
        // Closing the job channel ends the worker's loop.
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(&mut worker.jobs, dead));
        if let Some(t) = worker.thread.take() {
            // Kept for the next sandbox, or ended here.
            t.finish();
        }
    }
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
