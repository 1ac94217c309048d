//! A sandbox's worker: what serves its jobs on its vCPU thread, one at a
//! time, and keeps a VM between runs ([`Held`]): a snapshot sandbox keeps
//! its VM and resets it to the snapshot right after each run, while the
//! caller reads the output; a cold sandbox that runs again tears the last
//! run's VM down and makes the next run's once it is idle. [`WorkerLink`]
//! is the sandbox's end of it.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hvsandbox_core::{ThreadKicker, Vm};

use crate::config::Config;
use crate::control::{jail_violation, RunControl};
use crate::error::{Aftermath, Error, Result};
use crate::jail::{self, MountRoots, SeccompMode};
use crate::live::RunEnd;
use crate::prepare::Prepared;
use crate::runner::{Ended, RunSpec, Runner, Stream, VmSource};
use crate::snapshot::{Snapshot, SnapshotPoint};
use crate::vcpu_thread::{Kit, VcpuThread};
use crate::vm_factory::{clone_vm, fresh_vm, make_ready, one_at_a_time, reap, Ready, ResetAid, VmAhead};

/// How long a cold sandbox's vCPU thread waits for the next run before it
/// makes that run's VM ahead of time (a sandbox dropped or reused at once
/// does not pay for a VM it will not use).
const SPARE_AFTER_IDLE: Duration = Duration::from_micros(200);

/// How often a new sandbox's vCPU thread looks whether the VM made ahead
/// for its first run is ready, while it waits for that run.
const AHEAD_LOOK: Duration = Duration::from_micros(200);

pub(crate) enum Job {
    Run {
        prepared: Box<Prepared>,
        /// Stop at this snapshot point and hand the VM back.
        take: Option<SnapshotPoint>,
        /// A process's run: its result goes there (else to the results
        /// channel), and its output too when `stream` says so.
        live: Option<RunEnd>,
        stream: Stream,
    },
    /// Test hook: make this system call on the vCPU thread.
    Syscall(i64, [u64; 6]),
    /// Make the VM of a snapshot sandbox now, so its next run does not.
    Warm,
}

pub(crate) enum Reply {
    Ran(Ended),
    Syscall(i64),
    /// The job is done (nothing to return).
    Done,
}

/// The VM a worker holds between jobs.
enum Held {
    /// None, and no run yet: a new sandbox's first run takes a VM made
    /// ahead by the process-wide pool.
    New,
    /// (Snapshot sandbox) a VM in the snapshot's state, ready to run: made
    /// from it, or reset right after its last run (off the next caller's
    /// path).
    Ready(Vm),
    /// (Cold sandbox) the last run's VM, torn down on this thread once the
    /// sandbox is idle (on the reaper, concurrently with this thread
    /// making the next VM or running, both stalled for ~20 ms at times:
    /// measured, likely KVM's MMU-notifier registration taking all of the
    /// process's memory locks while a teardown holds some); on the reaper
    /// if the sandbox is dropped or the next job comes first.
    Retired(Vm),
    /// None after a run: a cold sandbox makes the next run's VM once it
    /// has been idle a moment.
    Drained,
    /// (Cold sandbox) the next run's blank VM, made while the sandbox
    /// waited for that run, with the runtime booted as far as it goes
    /// without a program.
    Spare(Vm),
}

/// Serves one sandbox's jobs on its vCPU thread.
struct Worker<'k> {
    config: Config,
    control: Arc<RunControl>,
    /// The snapshot every run starts from, for a sandbox built from one.
    snapshot: Option<Snapshot>,
    /// What resetting to the snapshot in place needs (a read-only mapping
    /// of the snapshot; the page map opened by `Sandbox::launch`).
    reset_aid: Option<ResetAid>,
    kit: &'k Kit,
    jobs: mpsc::Receiver<Job>,
    results: mpsc::Sender<Result<Reply>>,
    held: Held,
    /// A job that came before the first run's VM was made ahead.
    early: Option<Job>,
    /// The first run's VM, being made on a thread of its own
    /// (`boot_ahead`); dropped with the worker if no run took it.
    ahead: Option<VmAhead>,
}

impl Worker<'_> {
    /// Serves jobs until the sandbox closes its job channel or the jail
    /// refuses a call; returns whether the thread is in good standing.
    fn serve(mut self) -> bool {
        if self.config.boot_ahead && self.snapshot.is_none() {
            self.first_job_or_spare();
        }
        while let Some(job) = self.early.take().or_else(|| self.next_job()) {
            let go_on = match job {
                Job::Run { prepared, take, live, stream } => self.run(*prepared, take, live, stream),
                Job::Warm => self.warm(),
                Job::Syscall(nr, args) => self.syscall(nr, args),
            };
            if !go_on {
                break;
            }
        }
        if let Held::Ready(vm) | Held::Retired(vm) | Held::Spare(vm) = std::mem::replace(&mut self.held, Held::New) {
            reap(vm);
        }
        drop(self.reset_aid.take());
        jail_violation(&self.control).is_none()
    }

    /// The next job (None: the sandbox is gone). A cold sandbox that ran
    /// does its idle work while it waits: the last VM's teardown, then
    /// (unless a job came meanwhile) the next one's making.
    fn next_job(&mut self) -> Option<Job> {
        loop {
            let idle_work = self.snapshot.is_none() && matches!(self.held, Held::Retired(_) | Held::Drained);
            if !idle_work {
                let job = self.jobs.recv().ok()?;
                return Some(self.job_came(job));
            }
            match self.jobs.recv_timeout(SPARE_AFTER_IDLE) {
                Ok(job) => return Some(self.job_came(job)),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Held::Retired(vm) = std::mem::replace(&mut self.held, Held::Drained) {
                one_at_a_time(|| drop(vm));
                match self.jobs.try_recv() {
                    Ok(job) => return Some(job),
                    Err(mpsc::TryRecvError::Disconnected) => return None,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
            }
            if let Some(vm) = self.make_spare() {
                self.held = Held::Spare(vm);
            }
        }
    }

    /// A job came before the last run's VM was torn down: the reaper
    /// tears it down.
    fn job_came(&mut self, job: Job) -> Job {
        if matches!(self.held, Held::Retired(_)) {
            if let Held::Retired(vm) = std::mem::replace(&mut self.held, Held::Drained) {
                reap(vm);
            }
        }
        job
    }

    /// A sandbox that boots ahead, before its first job: the VM made
    /// ahead is booted once made, while the caller prepares that run,
    /// unless the run comes first. The run then boots with its program,
    /// whose image goes into the VM's RAM while KVM's side is made (its
    /// boot ahead and then the program's handover took longer, ~0.2 ms
    /// here, and the copy waited for the VM).
    fn first_job_or_spare(&mut self) {
        loop {
            match self.jobs.recv_timeout(AHEAD_LOOK) {
                Ok(job) => {
                    self.early = Some(job);
                    return;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let vm = match self.ahead.take().map(VmAhead::try_take) {
                // Not made yet: look again.
                Some(Err(ahead)) => {
                    self.ahead = Some(ahead);
                    continue;
                }
                Some(Ok(vm)) => vm,
                None => None,
            };
            if let Some(vm) = self.spare_from(vm) {
                self.held = Held::Spare(vm);
            }
            return;
        }
    }

    /// A blank VM for the next run, booted as far as it goes without a
    /// program.
    fn make_spare(&mut self) -> Option<Vm> {
        let vm = self.ahead.take().and_then(VmAhead::take);
        self.spare_from(vm)
    }

    /// `vm` (or a new VM), booted as far as it goes without a program.
    fn spare_from(&mut self, vm: Option<Vm>) -> Option<Vm> {
        let mut vm = match vm {
            Some(vm) => vm,
            None => fresh_vm(self.config.memory, self.config.huge_pages).ok()?,
        };
        one_at_a_time(|| match vm.preboot() {
            Ok(()) => Some(vm),
            Err(_) => {
                drop(vm);
                None
            }
        })
    }

    /// Makes a snapshot sandbox's VM now; returns whether to go on.
    fn warm(&mut self) -> bool {
        let reply = match (&self.snapshot, &self.held) {
            (Some(snap), held) if !matches!(held, Held::Ready(_)) => {
                match clone_vm(snap, self.reset_aid.as_ref(), Some(&self.kit.timer), self.config.huge_pages) {
                    Ok(vm) => {
                        self.held = Held::Ready(vm);
                        Ok(Reply::Done)
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Ok(Reply::Done),
        };
        self.results.send(reply).is_ok()
    }

    /// The test hook's system call; returns whether to go on.
    fn syscall(&mut self, nr: i64, a: [u64; 6]) -> bool {
        // SAFETY: a test hook making one system call as a VMM bug would.
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) } as i64;
        let r = if r == -1 { -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64) } else { r };
        let reply = match jail_violation(&self.control) {
            Some(e) => {
                self.control.note_failure(&e);
                Err(e)
            }
            None => Ok(Reply::Syscall(r)),
        };
        let stop = reply.is_err();
        self.results.send(reply).is_ok() && !stop
    }

    /// One run; returns whether to go on.
    fn run(&mut self, prepared: Prepared, take: Option<SnapshotPoint>, live: Option<RunEnd>, stream: Stream) -> bool {
        let held = std::mem::replace(&mut self.held, Held::Drained);
        let source = match &self.snapshot {
            Some(snap) => VmSource::Snapshot {
                snap: snap.clone(),
                kept: if let Held::Ready(vm) = held { Some(vm) } else { None },
                aid: self.reset_aid.as_ref(),
            },
            // (The VM made ahead, if the run came before it was booted:
            // the program's image goes into its RAM while it is made.)
            None => match held {
                Held::Spare(vm) => VmSource::Blank { spare: Some(vm), loaded: false },
                _ => match self.ahead.take() {
                    Some(ahead) => {
                        let loaded = match (ahead.loader(), &prepared.image) {
                            (Some(loader), Some(image)) => loader.load(&image.boot_image()).is_ok(),
                            _ => false,
                        };
                        VmSource::Blank { spare: ahead.take(), loaded }
                    }
                    None => VmSource::Blank { spare: None, loaded: false },
                },
            },
        };
        let spec = RunSpec { input: prepared, take, live: live.as_ref().map(|l| l.0.clone()), stream };
        let runner = Runner::new(&self.config, &self.control, self.kit, spec, source);
        let (result, vm) = runner.run();
        // A refused system call anywhere in the run wins.
        let violation = jail_violation(&self.control);
        let stop = violation.is_some();
        let reply = match violation {
            Some(e) => Err(e),
            None => result.map(Reply::Ran),
        };
        // A VM whose run ended in a way no sound guest ends (a crash, an
        // exit KVM could not handle, a hostile hypercall) is not reset for
        // the next run but replaced.
        let sound = reply.as_ref().err().is_none_or(|e| e.aftermath() == Aftermath::Stopped);
        if let Err(e) = &reply {
            self.control.note_failure(e);
        }
        let delivered = match live {
            Some(live) => {
                live.0.finish(reply.and_then(|r| match r {
                    Reply::Ran(Ended::Output(out)) => Ok(*out),
                    _ => Err(Error::Internal { context: "a process's run ended in a snapshot".into(), source: None }),
                }));
                true
            }
            None => self.results.send(reply).is_ok(),
        };
        if !delivered || stop {
            return false;
        }
        self.held = match (&self.snapshot, sound) {
            // Reset now, while the caller reads its output, rather than
            // when the next run comes.
            (Some(snap), true) if self.config.reset_ahead => match vm {
                Some(mut vm) => match make_ready(&mut vm, snap, self.reset_aid.as_ref(), Ready::Reset) {
                    Ok(()) => Held::Ready(vm),
                    Err(_) => {
                        reap(vm);
                        Held::Drained
                    }
                },
                None => Held::Drained,
            },
            _ => vm.map_or(Held::Drained, Held::Retired),
        };
        true
    }
}

/// The sandbox's end of its worker: the job and result channels and the
/// vCPU thread.
pub(crate) struct WorkerLink {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Result<Reply>>,
    control: Arc<RunControl>,
    /// The vCPU thread serving this sandbox.
    thread: Option<VcpuThread>,
}

impl WorkerLink {
    /// Starts a worker on a vCPU thread in a `mode` jail that may read
    /// below `roots`.
    pub(crate) fn start(
        config: Config,
        control: Arc<RunControl>,
        snapshot: Option<Snapshot>,
        mode: SeccompMode,
        roots: MountRoots,
        ahead: Option<VmAhead>,
    ) -> Result<WorkerLink> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let worker_control = control.clone();
        let body = Box::new(move |kit: &Kit| {
            let control = worker_control;
            let _ = control.kicker.set(ThreadKicker::current());
            // SAFETY: gettid has no arguments and cannot fail.
            control.vcpu_tid.store(unsafe { libc::gettid() } as i64, Ordering::SeqCst);
            // Refused calls from now on are this sandbox's.
            jail::rebind(&control.violation);
            let reset_aid = snapshot.as_ref().and_then(ResetAid::new);
            let _ = ready_tx.send(Ok(()));
            let worker = Worker {
                config,
                control,
                snapshot,
                reset_aid,
                kit,
                jobs: job_rx,
                results: result_tx,
                held: Held::New,
                early: None,
                ahead,
            };
            worker.serve()
        });
        let thread = VcpuThread::start(mode, roots, body)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Internal { context: "vCPU thread died at start".into(), source: None }),
        }
        Ok(WorkerLink { jobs, results, control, thread: Some(thread) })
    }

    /// Hands a job to the vCPU thread and waits for its result.
    pub(crate) fn submit(&mut self, job: Job) -> Result<Reply> {
        self.send(job)?;
        self.results.recv().map_err(|_| self.gone())?
    }

    /// Hands a job to the vCPU thread without waiting (a process's run,
    /// whose result goes to the process).
    pub(crate) fn send(&mut self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| self.gone())
    }

    fn gone(&self) -> Error {
        let e = jail_violation(&self.control)
            .unwrap_or_else(|| Error::Internal { context: "the vCPU thread is gone".into(), source: None });
        self.control.note_failure(&e);
        e
    }
}

impl Drop for WorkerLink {
    fn drop(&mut self) {
        // Closing the job channel ends the worker's loop.
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, dead));
        if let Some(t) = self.thread.take() {
            // Kept for the next sandbox, or ended here.
            t.finish();
        }
    }
}
