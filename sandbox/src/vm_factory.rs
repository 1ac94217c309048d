//! Where VMs come from and go: the process-wide background thread (the
//! "reaper") that destroys VMs off the vCPU threads' paths and, when it has
//! nothing to destroy, makes VMs ahead for new sandboxes (the blank-VM
//! pool); VM creation and destruction one at a time; and putting a VM in a
//! snapshot's state.
//!
//! The pool: a sandbox that runs again makes its next VM itself while idle
//! (or, from a snapshot, resets its own); a new sandbox has had no idle
//! time yet. When a sandbox is built it asks the pool to keep VMs of its
//! kind ready — blank ones of its memory size, or clones of its snapshot —
//! and its first run takes one instead of creating it on the caller's
//! path. The reaper makes them when it has nothing to destroy: blank ones
//! with the runtime booted as far as it goes without a program (see
//! `Vm::preboot`), clones in the snapshot's state. Bounded: a few VMs for
//! each of the few kinds most recently asked for.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use hvsandbox_core::{DeadlineTimer, FreshRam, HugePages, RamLoader, RamWarmer, Vm};

use crate::error::{Error, ErrorKind, Result};
use crate::jail::{self, SeccompMode};
use crate::snapshot::{Inner, Snapshot};

// ---- The blank-VM pool ----

/// VMs kept ready for each kind (see [`set_blank_vms`]).
static PER_KIND: AtomicUsize = AtomicUsize::new(usize::MAX);
const DEFAULT_PER_KIND: usize = 2;
/// Kinds kept (the most recently asked for).
const KINDS: usize = 4;
/// Failures in a row after which the pool stops trying.
const MAX_FAILURES: u32 = 3;

/// What a pooled VM is for.
#[derive(Clone)]
enum Kind {
    /// A blank VM of this many bytes and this RAM, booted ahead of its
    /// program.
    Blank(u64, HugePages),
    /// A clone of a snapshot, in the snapshot's state (the pool does not
    /// keep the snapshot alive).
    Clone(Weak<Inner>),
}

impl Kind {
    fn is(&self, other: &Kind) -> bool {
        match (self, other) {
            (Kind::Blank(a, x), Kind::Blank(b, y)) => (a, x) == (b, y),
            (Kind::Clone(a), Kind::Clone(b)) => a.ptr_eq(b),
            _ => false,
        }
    }
}

/// What the background thread is to do next.
pub(crate) enum Want {
    Blank(u64, HugePages),
    Clone(Snapshot),
    /// The prefault pass of a ready clone that had none (the pool was
    /// short when it was made): done while nothing else is wanted.
    Prefault(Snapshot, Box<Vm>),
}

#[derive(Default)]
struct State {
    /// Kinds asked for, most recent first.
    kinds: Vec<Kind>,
    /// With whether a clone had its prefault pass (blank VMs: true).
    ready: Vec<(Kind, Vm, bool)>,
    /// The kind of VM being made now.
    making: Option<Kind>,
    /// The VM being made is a clone in its prefault pass, which a waiting
    /// run cuts short ([`HURRY`]).
    prefaulting: bool,
    /// Runs waiting for the VM being made.
    waiting: usize,
    failures: u32,
    /// The pool cannot make VMs here: do not ask again.
    broken: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    kinds: Vec::new(),
    ready: Vec::new(),
    making: None,
    prefaulting: false,
    waiting: 0,
    failures: 0,
    broken: false,
});
/// A run waits for the clone in its prefault pass: stop the pass (looked
/// at every millisecond of it).
static HURRY: AtomicBool = AtomicBool::new(false);
/// Signalled when a VM is put in the pool (or making one failed).
static MADE: Condvar = Condvar::new();
/// How long a run waits for a VM being made rather than make its own at
/// the same time (two VMs made at once in one process stall each other).
const WAIT_FOR_MAKING: Duration = Duration::from_millis(3);

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many VMs the process keeps ready for each memory size (blank) and
/// each snapshot (clones) its new sandboxes use (default 2;
/// `HVSANDBOX_BLANK_VMS` overrides the default). 0 turns the pool off: a
/// program that runs one sandbox once, like the CLI, gains nothing from
/// it. Call before building sandboxes.
pub fn set_blank_vms(per_kind: usize) {
    PER_KIND.store(per_kind.min(16), Ordering::SeqCst);
}

fn per_kind() -> usize {
    // The pool's VMs are made on the background thread: none, no pool.
    if !BACKGROUND.load(Ordering::SeqCst) {
        return 0;
    }
    let n = PER_KIND.load(Ordering::SeqCst);
    if n != usize::MAX {
        return n;
    }
    let n = std::env::var("HVSANDBOX_BLANK_VMS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PER_KIND);
    let _ = PER_KIND.compare_exchange(usize::MAX, n.min(16), Ordering::SeqCst, Ordering::SeqCst);
    PER_KIND.load(Ordering::SeqCst)
}

/// A cold sandbox of `mem` bytes (`huge` RAM) is being built: keep blank
/// VMs ready.
pub(crate) fn prime_blank(mem: u64, huge: HugePages) {
    prime(Kind::Blank(mem, huge));
}

/// A sandbox from `snap` is being built: keep clones of it ready.
pub(crate) fn prime_clone(snap: &Snapshot) {
    prime(Kind::Clone(std::sync::Arc::downgrade(&snap.0)));
}

fn prime(kind: Kind) {
    if per_kind() == 0 {
        return;
    }
    let dropped = {
        let mut st = lock();
        if st.broken || st.kinds.first().is_some_and(|k| k.is(&kind)) {
            return;
        }
        st.kinds.retain(|k| !k.is(&kind));
        st.kinds.insert(0, kind);
        let mut dropped = Vec::new();
        if st.kinds.len() > KINDS {
            if let Some(gone) = st.kinds.pop() {
                let (keep, out): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.ready).into_iter().partition(|(k, _, _)| !k.is(&gone));
                st.ready = keep;
                dropped = out;
            }
        }
        dropped
    };
    for (_, vm, _) in dropped {
        reap(vm);
    }
    wake_reaper();
}

/// A ready blank VM of `mem` bytes (`huge` RAM), if there is one or one is
/// being made.
pub(crate) fn take_blank(mem: u64, huge: HugePages) -> Option<Vm> {
    take(Kind::Blank(mem, huge))
}

/// A ready clone of `snap` (in its state: memory mapped, vCPU restored),
/// if there is one or one is being made.
pub(crate) fn take_clone(snap: &Snapshot) -> Option<Vm> {
    take(Kind::Clone(std::sync::Arc::downgrade(&snap.0)))
}

fn take(kind: Kind) -> Option<Vm> {
    if per_kind() == 0 {
        return None;
    }
    let deadline = Instant::now() + WAIT_FOR_MAKING;
    let vm = {
        let mut st = lock();
        loop {
            // One that had its prefault pass first.
            let mine = |p: bool| st.ready.iter().position(|(k, _, done)| k.is(&kind) && *done == p);
            if let Some(i) = mine(true).or_else(|| mine(false)) {
                break st.ready.swap_remove(i).1;
            }
            let now = Instant::now();
            if !st.making.as_ref().is_some_and(|k| k.is(&kind)) || now >= deadline {
                return None;
            }
            if st.prefaulting {
                HURRY.store(true, Ordering::SeqCst);
            }
            st.waiting += 1;
            st = MADE.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            st.waiting -= 1;
        }
    };
    wake_reaper();
    Some(vm)
}

/// The kind that is short of ready VMs, if any: the caller makes one now
/// and hands it to [`put`]. Kinds whose snapshot is gone are forgotten.
pub(crate) fn wanted() -> Option<Want> {
    let mut gone = Vec::new();
    let want = {
        let mut st = lock();
        if st.broken {
            return None;
        }
        let dead = |k: &Kind| matches!(k, Kind::Clone(w) if w.strong_count() == 0);
        st.kinds.retain(|k| !dead(k));
        let (keep, out): (Vec<_>, Vec<_>) = std::mem::take(&mut st.ready).into_iter().partition(|(k, _, _)| !dead(k));
        st.ready = keep;
        gone.extend(out.into_iter().map(|(_, vm, _)| vm));
        let n = per_kind();
        let short = st.kinds.iter().find(|k| st.ready.iter().filter(|(r, _, _)| r.is(k)).count() < n).cloned();
        let want = match &short {
            Some(Kind::Blank(mem, huge)) => Some(Want::Blank(*mem, *huge)),
            Some(Kind::Clone(w)) => w.upgrade().map(|inner| Want::Clone(Snapshot(inner))),
            None => None,
        };
        if want.is_some() {
            st.making = short;
            want
        } else {
            // Nothing short: give a ready clone its pass, if one lacks it
            // and the pages to read are known.
            let lacking = st.ready.iter().enumerate().find_map(|(i, (k, _, done))| match k {
                Kind::Clone(w) if !done => w.upgrade().filter(|inner| inner.touched.get().is_some()).map(|s| (i, s)),
                _ => None,
            });
            lacking.map(|(i, inner)| {
                let (kind, vm, _) = st.ready.swap_remove(i);
                st.making = Some(kind);
                st.prefaulting = true;
                HURRY.store(false, Ordering::SeqCst);
                Want::Prefault(Snapshot(inner), Box::new(vm))
            })
        }
    };
    for vm in gone {
        reap(vm);
    }
    want
}

/// A VM made for the pool (of the kind [`wanted`] asked for); `done`:
/// it had its prefault pass, or needs none.
pub(crate) fn put(vm: Vm, done: bool) {
    let extra = {
        let mut st = lock();
        st.failures = 0;
        match st.making.take() {
            Some(kind) if st.kinds.iter().any(|k| k.is(&kind)) => {
                st.ready.push((kind, vm, done));
                None
            }
            _ => Some(vm),
        }
    };
    MADE.notify_all();
    if let Some(vm) = extra {
        reap(vm);
    }
}

/// Making a VM for the pool failed.
pub(crate) fn failed() {
    let mut st = lock();
    st.making = None;
    MADE.notify_all();
    st.failures += 1;
    if st.failures >= MAX_FAILURES {
        st.broken = true;
        st.kinds.clear();
    }
}

/// The kind being made cannot be made now, for a reason of its own (a
/// hugetlb pool too small for it): it is not kept ready, and the pool
/// goes on for the others.
fn forget_making() {
    let mut st = lock();
    if let Some(kind) = st.making.take() {
        st.kinds.retain(|k| !k.is(&kind));
    }
    MADE.notify_all();
}

/// The pool cannot work in this process.
pub(crate) fn give_up() {
    let mut st = lock();
    st.making = None;
    MADE.notify_all();
    st.broken = true;
    st.kinds.clear();
}

// ---- The reaper, and VMs made and reset ----

/// VM creation and destruction happen one at a time in this process: the
/// two at the same time stalled each other for ~20 ms at times (measured;
/// likely KVM's MMU-notifier registration taking all of the process's
/// memory locks while a teardown holds some).
static LIFECYCLE: Mutex<()> = Mutex::new(());

pub(crate) fn one_at_a_time<T>(f: impl FnOnce() -> T) -> T {
    let _turn = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// A fresh VM being made on a thread of its own for one sandbox (see
/// [`make_vm_ahead`]). Dropped untaken (the sandbox went first), its VM
/// goes too.
pub(crate) struct VmAhead {
    made: mpsc::Receiver<Option<Vm>>,
    /// A loader of its RAM, sent as soon as the RAM is made (before KVM's
    /// VM and vCPU): the program's image can go in meanwhile.
    ram: mpsc::Receiver<RamLoader>,
}

impl VmAhead {
    /// The VM, once made (None if it could not be).
    pub(crate) fn take(self) -> Option<Vm> {
        self.made.recv().ok().flatten()
    }

    /// The VM if it is made by now: Err(self) if it is not yet, Ok(None)
    /// if it could not be.
    pub(crate) fn try_take(self) -> std::result::Result<Option<Vm>, VmAhead> {
        match self.made.try_recv() {
            Ok(vm) => Ok(vm),
            Err(mpsc::TryRecvError::Disconnected) => Ok(None),
            Err(mpsc::TryRecvError::Empty) => Err(self),
        }
    }

    /// A loader of the VM's RAM, once the RAM is made (None if it could
    /// not be): see [`RamLoader`].
    pub(crate) fn loader(&self) -> Option<RamLoader> {
        self.ram.recv().ok()
    }
}

/// Starts making a fresh VM of `mem` bytes on a thread of its own, for a
/// sandbox that runs at once (`boot_ahead`), while the vCPU thread that
/// will run it starts and enters its jail (~1.5 ms here: its RAM with
/// the tables and the runtime image written in, its first host pages
/// faulted in, then KVM's VM and vCPU). It only makes the VM: no guest
/// code runs outside the jail. None if no thread could be started.
///
/// Then, while the VM lives, the thread faults in its RAM's next huge
/// page just ahead of the guest ([`RamWarmer`]): a program that takes
/// memory (an interpreter starting) does not wait for the host to find
/// each huge page, which after an idle spell here took up to ~15 ms.
pub(crate) fn make_vm_ahead(mem: u64, huge: HugePages) -> Option<VmAhead> {
    let (tx, made) = mpsc::sync_channel(1);
    let (ram_tx, ram) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("hvsandbox-vm".into())
        .spawn(move || {
            // Its RAM first: KVM's process-wide state, which the VM needs,
            // is being set up meanwhile (`vcpu_thread::spawn`).
            let vm = one_at_a_time(|| FreshRam::new(mem, huge))
                .and_then(|ram| {
                    // (The vCPU thread may load the program's image while
                    // KVM's side is made.)
                    let _ = ram_tx.send(ram.loader());
                    drop(ram_tx);
                    one_at_a_time(|| Vm::with_ram(ram))
                })
                .ok();
            let warmer = vm.as_ref().and_then(Vm::ram_warmer);
            if tx.send(vm).is_ok() {
                if let Some(warmer) = warmer {
                    keep_warm(warmer);
                }
            }
        })
        .ok()?;
    Some(VmAhead { made, ram })
}

/// Runs `warmer` until its VM is gone: looks often while the guest takes
/// memory, less and less often while it does not.
fn keep_warm(mut warmer: RamWarmer) {
    const QUICK: Duration = Duration::from_micros(500);
    const SLOW: Duration = Duration::from_millis(20);
    let mut pause = QUICK;
    while warmer.vm_alive() {
        if warmer.step() {
            pause = QUICK;
            continue;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(SLOW);
    }
}

/// A fresh VM of `mem` bytes, made here (one VM's making or teardown at a
/// time).
pub(crate) fn fresh_vm(mem: u64, huge: HugePages) -> Result<Vm> {
    one_at_a_time(|| Vm::with_huge_pages(mem, huge)).map_err(Error::from)
}

/// The queue of the background thread ("reaper") that destroys VMs off
/// the vCPU threads' paths and, in between, makes the blank VMs of
/// the blank-VM pool: one after the other (VM creation and destruction running
/// at the same time in one process stalled both for ~20 ms at times,
/// measured). It runs guest code (the runtime's boot), so it lives in the
/// same jail as a vCPU thread.
static REAPER: OnceLock<Option<Mutex<mpsc::Sender<Reap>>>> = OnceLock::new();

/// Whether the reaper may be started (see [`set_background_vm_thread`]).
static BACKGROUND: AtomicBool = AtomicBool::new(true);

/// Whether this process may keep a background thread for VMs (default:
/// yes): it destroys VMs off the vCPU threads' paths and makes the VMs of
/// the blank-VM pool ([`set_blank_vms`]). A program that builds one
/// sandbox, runs it once and exits, like the CLI, gains nothing from it
/// and turns it off before building sandboxes: the process then starts
/// one thread and installs one jail fewer, the pool is off, and a VM is
/// destroyed on the thread that lets it go (a vCPU thread, or the
/// process's exit). A thread already started stays in use.
pub fn set_background_vm_thread(enabled: bool) {
    BACKGROUND.store(enabled, Ordering::SeqCst);
}

/// Starts the reaper if it is not running and may be started (from a
/// caller's thread: see [`reaper`]).
pub(crate) fn start_reaper() {
    let _ = running_reaper();
}

/// The reaper's queue: started if it may be (see [`reaper`]), or the one
/// started before the background thread was turned off, if any.
fn running_reaper() -> Option<&'static Mutex<mpsc::Sender<Reap>>> {
    if BACKGROUND.load(Ordering::SeqCst) {
        reaper().as_ref()
    } else {
        REAPER.get().and_then(Option::as_ref)
    }
}

/// Opens the page map now, on a caller's thread (see [`pagemap`]).
pub(crate) fn open_pagemap() {
    let _ = pagemap();
}

/// The reaper's queue, started on first use from a caller's thread (a vCPU
/// thread's jail does not allow starting threads; `Sandbox::launch` calls
/// this before it starts one).
fn reaper() -> &'static Option<Mutex<mpsc::Sender<Reap>>> {
    REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Reap>();
        std::thread::Builder::new()
            .name("hvsandbox-vms".into())
            .spawn(move || {
                static VIOLATION: AtomicI64 = AtomicI64::new(-1);
                // Bounds the prefault pass of the clones it makes (made
                // before the jail, which refuses timer_create).
                let timer = DeadlineTimer::for_current_thread().ok();
                // Always enforcing (the environment cannot weaken it); it
                // may read no file by path.
                let jailed = jail::enter(SeccompMode::Enforce, &VIOLATION, &[]).is_ok();
                if !jailed {
                    give_up();
                }
                loop {
                    let job = match rx.try_recv() {
                        Ok(job) => job,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                        Err(mpsc::TryRecvError::Empty) => {
                            // Nothing to destroy: make a blank VM if one is
                            // wanted, else wait.
                            if let Some(want) = wanted().filter(|_| jailed) {
                                let made = match want {
                                    Want::Blank(mem, huge) => one_at_a_time(|| {
                                        Vm::with_huge_pages(mem, huge).and_then(|mut vm| vm.preboot().map(|()| vm))
                                    })
                                    .map_err(Error::from)
                                    .map(|vm| (vm, true)),
                                    Want::Clone(snap) => one_at_a_time(|| snap.new_vm(HugePages::Off))
                                        .and_then(|mut vm| make_ready(&mut vm, &snap, None, Ready::Clone).map(|()| vm))
                                        .map(|vm| (vm, false)),
                                    Want::Prefault(snap, mut vm) => match &timer {
                                        Some(timer) => {
                                            let hurry = || HURRY.load(Ordering::SeqCst);
                                            match crate::prefault::pass(&mut vm, &snap, timer, &hurry) {
                                                Ok(cut) => Ok((*vm, !cut)),
                                                Err(e) => {
                                                    one_at_a_time(|| drop(vm));
                                                    Err(e)
                                                }
                                            }
                                        }
                                        None => Ok((*vm, true)),
                                    },
                                };
                                lock().prefaulting = false;
                                match made {
                                    Ok((vm, done)) => put(vm, done),
                                    // This kind cannot be made (a hugetlb
                                    // pool too small for it): its
                                    // sandbox's own run will say so.
                                    Err(e) if e.kind() == ErrorKind::InvalidConfig => forget_making(),
                                    Err(_) => failed(),
                                }
                                if VIOLATION.load(Ordering::SeqCst) >= 0 {
                                    give_up();
                                }
                                continue;
                            }
                            match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        }
                    };
                    match job {
                        Reap::Vm(vm) => one_at_a_time(|| drop(vm)),
                        Reap::Flush(done) => {
                            let _ = done.send(());
                        }
                        Reap::Wake => {}
                    }
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    })
}

/// Tells the background thread to look at the blank VM pool (started
/// already: a sandbox exists; never started from here).
pub(crate) fn wake_reaper() {
    if let Some(Some(tx)) = REAPER.get() {
        let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Reap::Wake);
    }
}

enum Reap {
    Vm(Box<Vm>),
    /// The blank VM pool wants a look.
    Wake,
    /// Answered once everything queued before it is destroyed.
    Flush(mpsc::Sender<()>),
}

/// A read-only view of a snapshot's memory and the process's page map,
/// for resetting a VM to the snapshot in place.
pub(crate) struct ResetAid {
    view: *const u8,
    len: usize,
    pagemap: std::os::fd::BorrowedFd<'static>,
}

/// The process's page map (`/proc/self/pagemap`, for `PAGEMAP_SCAN`),
/// opened once, on a caller's thread: the vCPU threads' jail lets them
/// open no file by path but below their mount roots.
fn pagemap() -> Option<std::os::fd::BorrowedFd<'static>> {
    static PAGEMAP: OnceLock<Option<std::os::fd::OwnedFd>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok().map(std::os::fd::OwnedFd::from))
        .as_ref()
        .map(|fd| fd.as_fd())
}

impl ResetAid {
    pub(crate) fn new(snap: &Snapshot) -> Option<ResetAid> {
        use std::os::fd::AsRawFd;
        let pagemap = pagemap()?;
        let len = snap.memory_bytes() as usize;
        // None without a memory file (a loaded snapshot whose VMs copy it
        // and are not reset).
        let memory = snap.memory_fd().ok()?;
        // SAFETY: a read-only shared mapping of the (sealed) snapshot file.
        let view =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, memory.as_raw_fd(), 0) };
        if view == libc::MAP_FAILED {
            return None;
        }
        Some(ResetAid { view: view as *const u8, len, pagemap })
    }

    fn view(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as self and is never written.
        unsafe { std::slice::from_raw_parts(self.view, self.len) }
    }
}

impl Drop for ResetAid {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping exactly once.
        unsafe { libc::munmap(self.view as *mut libc::c_void, self.len) };
    }
}

/// How [`make_ready`] gets a VM to a snapshot's state.
#[derive(Clone, Copy)]
pub(crate) enum Ready<'t> {
    /// A VM that ran from the snapshot: its memory put back.
    Reset,
    /// A new clone, about to run.
    Clone,
    /// A new clone made ahead of its run (a pool's, or `Sandbox::warm`):
    /// its guest also builds the hypervisor's translations now, bounded by
    /// this thread's timer.
    CloneAhead(&'t DeadlineTimer),
}

/// Puts a VM in the snapshot's state, ready to run: its memory
/// ([`Ready::Reset`]: the snapshot copied back into the pages the last run
/// wrote, which stay this VM's so writing them again costs no
/// copy-on-write fault; the mapping replaced if that fails; a new VM makes
/// its own copies of the pages runs from this snapshot write, learned from
/// the first reset, and one made ahead reads the pages they touched) and
/// its vCPU.
pub(crate) fn make_ready(vm: &mut Vm, snap: &Snapshot, aid: Option<&ResetAid>, how: Ready<'_>) -> Result<()> {
    if matches!(how, Ready::Reset) {
        let mut written = snap.0.hot.get().is_none().then(Vec::new);
        crate::prefault::learn(vm, snap, aid.map(|aid| aid.pagemap));
        let copied = aid.is_some_and(|aid| vm.reset_memory_by_copy(aid.view(), aid.pagemap, written.as_mut()).is_ok());
        if !copied {
            vm.reset_memory(snap.memory_fd()?).map_err(Error::from)?;
        } else if let Some(w) = written {
            let _ = snap.0.hot.set(w);
        }
    } else if let Some(hot) = snap.0.hot.get() {
        vm.touch_pages(hot);
    }
    snap.restore_vcpu_in(vm)?;
    match how {
        Ready::CloneAhead(timer) => crate::prefault::pass(vm, snap, timer, &|| false).map(|_| ()),
        _ => Ok(()),
    }
}

/// A clone of `snap` in its state, ready to run: made ahead by the
/// process-wide pool, or made now (`ahead`: for a later run, with this
/// thread's timer; `huge`: where a copy's RAM comes from).
pub(crate) fn clone_vm(
    snap: &Snapshot,
    aid: Option<&ResetAid>,
    ahead: Option<&DeadlineTimer>,
    huge: HugePages,
) -> Result<Vm> {
    // The pool's clones have ordinary RAM: not for a sandbox that
    // requires the hugetlb pool's.
    let pooled = if huge == HugePages::Require { None } else { take_clone(snap) };
    if let Some(mut vm) = pooled {
        if let Some(timer) = ahead {
            // Its pass may have been cut short for another run (a pass
            // over pages already translated costs one exit).
            crate::prefault::pass(&mut vm, snap, timer, &|| false)?;
        }
        return Ok(vm);
    }
    let mut vm = one_at_a_time(|| snap.new_vm(huge))?;
    make_ready(&mut vm, snap, aid, ahead.map_or(Ready::Clone, Ready::CloneAhead))?;
    Ok(vm)
}

/// Destroys a VM on a background thread, off the vCPU threads' paths.
pub(crate) fn reap(vm: Vm) {
    match running_reaper() {
        Some(tx) => {
            let sent = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Reap::Vm(Box::new(vm)));
            if let Err(mpsc::SendError(job)) = sent {
                drop(job);
            }
        }
        None => one_at_a_time(|| drop(vm)),
    }
}

/// Waits until every VM handed to the background reaper is destroyed
/// (for measuring memory).
#[doc(hidden)]
pub fn wait_for_reaper() {
    if let Some(tx) = running_reaper() {
        let (done, wait) = mpsc::channel();
        if tx.lock().unwrap_or_else(|e| e.into_inner()).send(Reap::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}
