//! The threads that run guests ("vCPU threads"). Each sets itself up once
//! (its deadline timers, its jail) and then serves one sandbox at a time.
//! When a sandbox is dropped, a thread in good standing waits for the next
//! sandbox instead of exiting, so building a sandbox costs neither a thread
//! start nor the jail's set-up (~250 µs, most of it dropping capabilities
//! and installing the seccomp filter). A thread whose sandbox met a refused
//! system call is never reused. A thread's Landlock restriction (the mount
//! roots it may read below) is permanent, so a thread serves only
//! sandboxes with exactly its mount roots; others get a new thread.

use std::os::fd::AsFd;
use std::sync::atomic::AtomicI64;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use hvsandbox_core::DeadlineTimer;

use crate::error::{Error, Result};
use crate::jail::{self, MountRoots, SeccompMode};

/// What a vCPU thread keeps from one sandbox to the next.
pub(crate) struct Kit {
    /// Wall-clock deadline of a run.
    pub(crate) timer: DeadlineTimer,
    /// CPU-time limit of a run.
    pub(crate) cpu_timer: DeadlineTimer,
}

/// One sandbox's work on the thread; returns whether the thread is still
/// in good standing (no refused call).
pub(crate) type Body = Box<dyn FnOnce(&Kit) -> bool + Send>;

/// Idle threads kept for later sandboxes, the most recently used last
/// (only threads in the default, enforcing jail are kept).
const KEEP_IDLE: usize = 4;
static IDLE: Mutex<Vec<VcpuThread>> = Mutex::new(Vec::new());

/// Where a thread's refused calls are recorded while it serves no sandbox.
static NOBODY: AtomicI64 = AtomicI64::new(-1);

pub(crate) struct VcpuThread {
    assign: mpsc::Sender<(Body, mpsc::Sender<bool>)>,
    handle: JoinHandle<Option<Kit>>,
    mode: SeccompMode,
    /// The mount roots (device, inode) it may read below, sorted: see
    /// [`jail::RootIds::reach`].
    reach: Vec<(u64, u64)>,
    /// Answers whether the thread is in good standing once the body ends.
    done: Option<mpsc::Receiver<bool>>,
}

impl VcpuThread {
    /// A thread in a `mode` jail that may read below `roots`, running
    /// `body`: an idle one with the same roots, or a new one.
    pub(crate) fn start(mode: SeccompMode, roots: MountRoots, body: Body) -> Result<VcpuThread> {
        let reach = roots.ids().reach();
        let idle = if mode == SeccompMode::Enforce {
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter().rposition(|t| t.reach == reach).map(|i| idle.remove(i))
        } else {
            None
        };
        let mut thread = match idle {
            // (An idle thread served a sandbox before: KVM's state exists.)
            Some(t) => t,
            None => spawn(mode, &roots, reach)?,
        };
        let (done_tx, done_rx) = mpsc::channel();
        if let Err(mpsc::SendError((body, done_tx))) = thread.assign.send((body, done_tx)) {
            // The idle thread is gone (it cannot be: it only waits); start
            // a new one.
            let reach = std::mem::take(&mut thread.reach);
            thread.end();
            thread = spawn(mode, &roots, reach)?;
            thread.assign.send((body, done_tx)).map_err(|_| gone())?;
        }
        thread.done = Some(done_rx);
        Ok(thread)
    }

    /// Called once the sandbox has closed its job channel: waits for the
    /// body to end, then keeps the thread for the next sandbox (making
    /// room by ending the least recently used idle one) or ends it.
    pub(crate) fn finish(mut self) {
        // The sandbox has closed its job channel: the body ends.
        let healthy = self.done.take().and_then(|d| d.recv().ok()).unwrap_or(false);
        if !(healthy && self.mode == SeccompMode::Enforce) {
            return self.end();
        }
        let evicted = {
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(self);
            (idle.len() > KEEP_IDLE).then(|| idle.remove(0))
        };
        if let Some(old) = evicted {
            old.end();
        }
    }

    /// Ends the thread: closing its assignment channel ends it; its timers
    /// are deleted here, outside its jail (which does not allow that).
    fn end(self) {
        drop(self.assign);
        drop(self.handle.join());
    }
}

fn gone() -> Error {
    Error::Internal { context: "the vCPU thread is gone".into(), source: None }
}

fn spawn(mode: SeccompMode, roots: &MountRoots, reach: Vec<(u64, u64)>) -> Result<VcpuThread> {
    // The thread gets its own handles of the roots, for its Landlock rules.
    let root_fds =
        roots.fds().iter().map(|fd| fd.try_clone_to_owned()).collect::<std::io::Result<Vec<_>>>().map_err(|e| {
            Error::Internal { context: "cannot hand the mount roots over".into(), source: Some(std::sync::Arc::new(e)) }
        })?;
    let (assign, assign_rx) = mpsc::channel::<(Body, mpsc::Sender<bool>)>();
    let (started_tx, started_rx) = mpsc::channel::<Result<()>>();
    let handle = std::thread::Builder::new()
        .name("hvsandbox-vcpu".into())
        .spawn(move || {
            let timers = DeadlineTimer::for_current_thread()
                .and_then(|timer| Ok(Kit { timer, cpu_timer: DeadlineTimer::for_current_thread_cpu()? }));
            let kit = match timers {
                Ok(kit) => kit,
                Err(e) => {
                    let _ = started_tx.send(Err(Error::from(e)));
                    return None;
                }
            };
            let borrowed: Vec<_> = root_fds.iter().map(|fd| fd.as_fd()).collect();
            let jailed = jail::enter(mode, &NOBODY, &borrowed);
            drop(borrowed);
            drop(root_fds);
            if let Err(e) = jailed {
                let _ = started_tx.send(Err(e));
                return Some(kit);
            }
            let _ = started_tx.send(Ok(()));
            while let Ok((body, done)) = assign_rx.recv() {
                let healthy = body(&kit);
                jail::rebind(&NOBODY);
                let _ = done.send(healthy);
                if !healthy {
                    break;
                }
            }
            Some(kit)
        })
        .map_err(|e| Error::Internal {
            context: "cannot start the vCPU thread".into(),
            source: Some(std::sync::Arc::new(e)),
        })?;
    // KVM's process-wide state (its supported CPUID, ~0.4 ms) is set up
    // here while the new thread enters its jail (~0.3 ms), and before any
    // body runs: a jailed thread may not open /dev/kvm itself.
    if let Err(e) = hvsandbox_core::probe_kvm() {
        drop(assign);
        drop(handle.join());
        return Err(e.into());
    }
    match started_rx.recv() {
        Ok(Ok(())) => Ok(VcpuThread { assign, handle, mode, reach, done: None }),
        Ok(Err(e)) => {
            drop(handle.join());
            Err(e)
        }
        Err(_) => {
            drop(handle.join());
            Err(Error::Internal { context: "vCPU thread died at start".into(), source: None })
        }
    }
}
