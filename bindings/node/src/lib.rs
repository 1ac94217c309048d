//! The native half of the npm package `hvsandbox`: the Rust API
//! (`hvsandbox`) for index.js, which turns these primitives into the
//! JavaScript API (option checks, `Error` objects, streams, `AbortSignal`).
//!
//! Nothing here blocks Node's main thread. A run is started from the main
//! thread (starting does not wait) and settled there when its end makes
//! the crate's eventfd readable (`fast`); where that cannot be (a worker
//! thread, a pool with none ready), and for spawns, snapshots, stdin
//! writes and closes, the work happens on the binding's own threads
//! (`workers`) and settles a promise; a spawned process's events reach
//! JavaScript through a threadsafe function from a thread that pumps them
//! (`process`). Rust panics are caught (`guarded`, and in `fast`'s
//! callback): one becomes an `INTERNAL` error, never an abort of the Node
//! process.

mod convert;
mod fast;
mod process;
mod workers;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hvsandbox::{
    Command, Error, PooledSandbox, Process, ProcessKillHandle, Sandbox, SandboxPool, Snapshot, SnapshotPoint,
};
use napi::bindgen_prelude::{Buffer, Either, ToNapiValue};
use napi::JsDeferred;
use napi::{sys, Env, JsFunction, JsObject, JsUnknown, NapiValue};
use napi_derive::napi;

use convert::{CommandArg, RawConfig, RawError, RawOutput, RawSnapshotInfo};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Runs `job` on a worker thread; the promise resolves to `to_js` of its
/// value or to a `RawError` (index.js tells them apart by `kind`).
fn promise<T, A>(
    env: &Env,
    job: impl FnOnce() -> Result<T, Error> + Send + 'static,
    to_js: fn(T) -> A,
) -> napi::Result<JsObject>
where
    T: Send + 'static,
    A: ToNapiValue + 'static,
{
    promise_via(env, workers::submit, job, to_js)
}

/// `promise`, with the job handed to `submit` (a sandbox's queue).
fn promise_via<T, A>(
    env: &Env,
    submit: impl FnOnce(Box<dyn FnOnce() + Send>),
    job: impl FnOnce() -> Result<T, Error> + Send + 'static,
    to_js: fn(T) -> A,
) -> napi::Result<JsObject>
where
    T: Send + 'static,
    A: ToNapiValue + 'static,
{
    let (deferred, promise) = env.create_deferred::<Settled<A>, _>()?;
    submit(Box::new(move || settle(deferred, guarded(job), to_js)));
    Ok(promise)
}

/// `f`'s result, or a panic in it as an `INTERNAL` error.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(convert::internal(&format!("hvsandbox (Node binding) panicked: {}", panic_message(&*p))))
    })
}

type Settled<A> = Either<A, RawError>;
type Deferred<A> = JsDeferred<Settled<A>, Box<dyn FnOnce(Env) -> napi::Result<Settled<A>>>>;

/// What a promise resolves to: `to_js` of the value, or a `RawError`
/// (index.js tells them apart by `kind`).
fn settled<T, A>(result: Result<T, Error>, to_js: fn(T) -> A) -> Settled<A> {
    match result {
        Ok(v) => Either::A(to_js(v)),
        Err(e) => Either::B(convert::error(e)),
    }
}

/// Resolves `deferred` to `settled` of the result (on the main thread,
/// whichever thread calls this).
fn settle<T, A>(deferred: Deferred<A>, result: Result<T, Error>, to_js: fn(T) -> A)
where
    T: Send + 'static,
    A: ToNapiValue + 'static,
{
    deferred.resolve(Box::new(move |_| Ok(settled(result, to_js))));
}

/// A run started on the main thread (`started`), whose promise settles
/// there when it ends (`fast.rs`): `after` runs first (giving a pooled
/// sandbox back, letting the sandbox's next call go).
fn settle_here(
    env: &Env,
    started: Result<Process, Error>,
    cancel: NativeCancel,
    after: impl FnOnce() + 'static,
) -> napi::Result<JsObject> {
    let mut deferred: sys::napi_deferred = std::ptr::null_mut();
    let mut promise: sys::napi_value = std::ptr::null_mut();
    // SAFETY: called from JavaScript with its live env; out pointers are locals.
    napi::check_status!(unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) })?;
    let done: fast::Done = Box::new(move |env, result| {
        cancel.finished();
        after();
        let value = settled(result, |o| fast::to_row(convert::output(o)));
        // SAFETY: on the JavaScript thread with its live env and a handle
        // scope open (fast.rs); `deferred` is settled once, here.
        unsafe {
            match Settled::<RawOutput>::to_napi_value(env, value) {
                Ok(v) => sys::napi_resolve_deferred(env, deferred, v),
                Err(e) => {
                    let msg = napi::JsError::from(e).into_value(env);
                    sys::napi_reject_deferred(env, deferred, msg)
                }
            };
        }
    });
    match started {
        Ok(p) => fast::watch(env, p, done),
        Err(e) => done(env.raw(), Err(e)),
    }
    // SAFETY: a promise just made in this env.
    Ok(unsafe { JsObject::from_raw_unchecked(env.raw(), promise) })
}

/// Cancels one run: `cancel()` before it starts keeps it from starting,
/// after that stops it (its promise settles with `CANCELLED` and the
/// partial output). Never reaches another run.
#[napi]
#[derive(Clone, Default)]
pub struct NativeCancel {
    inner: Arc<CancelState>,
}

#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    handle: Mutex<Option<ProcessKillHandle>>,
}

#[napi]
impl NativeCancel {
    #[napi(constructor)]
    pub fn new() -> Self {
        NativeCancel::default()
    }

    #[napi]
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        if let Some(h) = lock(&self.inner.handle).as_ref() {
            h.kill();
        }
    }
}

impl NativeCancel {
    /// Starts `command` in `sb` as `run` does, stoppable by this token
    /// until `finished`.
    fn start(&self, sb: &mut Sandbox, command: &Command) -> Result<Process, Error> {
        if self.inner.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled { partial: Box::default() });
        }
        let p = sb.start(command)?;
        let mut h = lock(&self.inner.handle);
        *h = Some(p.kill_handle());
        // A cancel between the check above and now found no handle.
        if self.inner.cancelled.load(Ordering::SeqCst) {
            p.kill();
        }
        Ok(p)
    }

    fn finished(&self) {
        lock(&self.inner.handle).take();
    }

    /// Runs `command` in `sb` as `run` does, stoppable by this token.
    fn run(&self, sb: &mut Sandbox, command: &Command) -> Result<hvsandbox::Output, Error> {
        let out = self.start(sb, command)?.wait();
        self.finished();
        out
    }
}

/// What a `NativeSandbox` holds: its own sandbox or one on loan from a pool.
enum Slot {
    Own(Sandbox),
    Pooled(PooledSandbox),
}

impl Slot {
    fn sandbox(&mut self) -> &mut Sandbox {
        match self {
            Slot::Own(sb) => sb,
            Slot::Pooled(sb) => sb,
        }
    }
}

struct SandboxState {
    /// None once closed. Held for the length of a run: runs of one
    /// sandbox queue here, one at a time.
    slot: Mutex<Option<Slot>>,
    closing: AtomicBool,
    /// The run in progress (or queued), for `close` to stop.
    current: Mutex<Option<NativeCancel>>,
    /// Its jobs in the order JavaScript made the calls (a run queued
    /// behind a spawn finds the sandbox busy, as in Rust).
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: std::collections::VecDeque<Box<dyn FnOnce() + Send>>,
    draining: bool,
}

impl SandboxState {
    /// Runs `job` after the jobs queued before it, on a worker thread.
    fn serial(self: &Arc<Self>, job: Box<dyn FnOnce() + Send>) {
        let mut q = lock(&self.queue);
        q.jobs.push_back(job);
        if q.draining {
            return;
        }
        q.draining = true;
        drop(q);
        self.drain();
    }

    /// `cancel` is the run in progress: `close` stops it from now on (and
    /// at once if the sandbox is closing already).
    fn track(&self, cancel: &NativeCancel) {
        *lock(&self.current) = Some(cancel.clone());
        if self.closing.load(Ordering::SeqCst) {
            cancel.cancel();
        }
    }

    fn untrack(&self) {
        lock(&self.current).take();
    }

    /// Takes the queue for a run on the main thread if nothing is queued
    /// or running (later calls queue behind it until `release`).
    fn claim_idle(&self) -> bool {
        let mut q = lock(&self.queue);
        if q.draining || !q.jobs.is_empty() {
            return false;
        }
        q.draining = true;
        true
    }

    /// A run on the main thread ended: the calls queued behind it go.
    fn release(self: &Arc<Self>) {
        let mut q = lock(&self.queue);
        if q.jobs.is_empty() {
            q.draining = false;
            return;
        }
        drop(q);
        self.drain();
    }

    /// Runs the queued jobs in order on a worker thread.
    fn drain(self: &Arc<Self>) {
        let state = self.clone();
        workers::submit(move || loop {
            let Some(job) = ({
                let mut q = lock(&state.queue);
                let next = q.jobs.pop_front();
                q.draining = next.is_some();
                next
            }) else {
                return;
            };
            job();
        });
    }
}

/// The table the numbers of runs settled on this thread are read from
/// (see `convert::RawOutput`); null where runs are not settled here.
#[napi]
pub fn result_table(env: Env) -> napi::Result<JsUnknown> {
    match fast::table(&env) {
        // SAFETY: a live value of this env.
        Some(v) => Ok(unsafe { JsUnknown::from_raw_unchecked(env.raw(), v) }),
        None => Ok(env.get_null()?.into_unknown()),
    }
}

#[napi]
pub struct NativeSandbox {
    state: Arc<SandboxState>,
}

fn closed() -> Error {
    Error::InvalidConfig("the sandbox is closed".into())
}

impl NativeSandbox {
    fn new(slot: Slot) -> NativeSandbox {
        NativeSandbox {
            state: Arc::new(SandboxState {
                slot: Mutex::new(Some(slot)),
                closing: AtomicBool::new(false),
                current: Mutex::new(None),
                queue: Mutex::new(Queue::default()),
            }),
        }
    }
}

/// Runs `f` on the sandbox of `state` unless it is closed.
fn with_sandbox<T>(state: &SandboxState, f: impl FnOnce(&mut Sandbox) -> Result<T, Error>) -> Result<T, Error> {
    let mut slot = lock(&state.slot);
    match slot.as_mut() {
        Some(s) if !state.closing.load(Ordering::SeqCst) => f(s.sandbox()),
        _ => Err(closed()),
    }
}

#[napi]
impl NativeSandbox {
    /// Runs a command; resolves to a `RawOutput` or a `RawError`.
    #[napi]
    pub fn run(&self, env: Env, command: CommandArg, cancel: Option<&NativeCancel>) -> napi::Result<JsObject> {
        let state = self.state.clone();
        let cancel = cancel.cloned().unwrap_or_default();
        let command = command.0;
        if fast::available(&env) && state.claim_idle() {
            state.track(&cancel);
            let command = command.notify_on_end(true);
            let started = guarded(|| with_sandbox(&state, |sb| cancel.start(sb, &command)));
            return settle_here(&env, started, cancel, move || {
                state.untrack();
                state.release();
            });
        }
        promise_via(
            &env,
            |j| self.state.serial(j),
            move || {
                state.track(&cancel);
                let out = with_sandbox(&state, |sb| cancel.run(sb, &command));
                state.untrack();
                out
            },
            convert::output,
        )
    }

    /// Starts a command; resolves to a `NativeProcess` whose events go to
    /// `on_event`, or to a `RawError`.
    #[napi]
    pub fn spawn(&self, env: Env, command: CommandArg, on_event: JsFunction) -> napi::Result<JsObject> {
        let state = self.state.clone();
        let command = command.0;
        let events = process::events(&on_event)?;
        promise_via(
            &env,
            |j| self.state.serial(j),
            move || with_sandbox(&state, |sb| sb.spawn(&command)).map(|p| process::start(p, events)),
            |p| p,
        )
    }

    /// Runs a command to its snapshot point ("entry" or "checkpoint").
    #[napi]
    pub fn snapshot(&self, env: Env, command: CommandArg, point: String) -> napi::Result<JsObject> {
        let state = self.state.clone();
        let command = command.0;
        let point = if point == "entry" { SnapshotPoint::Entry } else { SnapshotPoint::Checkpoint };
        promise_via(
            &env,
            |j| self.state.serial(j),
            move || with_sandbox(&state, |sb| sb.snapshot(&command, point)),
            NativeSnapshot::from,
        )
    }

    /// Makes a snapshot sandbox's next VM now.
    #[napi]
    pub fn warm(&self, env: Env) -> napi::Result<JsObject> {
        let state = self.state.clone();
        promise_via(&env, |j| self.state.serial(j), move || with_sandbox(&state, |sb| sb.warm()), |()| ())
    }

    /// Whether an earlier failure made the sandbox unusable; null while a
    /// run holds it.
    #[napi]
    pub fn poisoned(&self) -> Option<bool> {
        let slot = self.state.slot.try_lock().ok()?;
        Some(match slot.as_ref() {
            Some(Slot::Own(sb)) => sb.is_poisoned(),
            Some(Slot::Pooled(sb)) => sb.is_poisoned(),
            None => false,
        })
    }

    /// Stops what runs (a run, a spawned process), then frees the sandbox
    /// (a pooled one goes back to its pool).
    #[napi]
    pub fn close(&self, env: Env) -> napi::Result<JsObject> {
        let state = self.state.clone();
        state.closing.store(true, Ordering::SeqCst);
        if let Some(c) = lock(&state.current).as_ref() {
            c.cancel();
        }
        promise_via(
            &env,
            |j| self.state.serial(j),
            move || {
                // Dropping a sandbox kills its spawned process.
                let slot = lock(&state.slot).take();
                drop(slot);
                Ok(())
            },
            |()| (),
        )
    }
}

fn build_sandbox(config: RawConfig, snapshot: Option<&Snapshot>) -> Result<Sandbox, Error> {
    let b = convert::builder(config)?;
    match snapshot {
        Some(s) => b.build_from(s),
        None => b.build(),
    }
}

/// Builds a sandbox (on the caller's thread: it takes well under a
/// millisecond, the VM is made ahead); a `RawError` if it cannot.
#[napi(catch_unwind)]
pub fn create_sandbox(config: RawConfig, snapshot: Option<&NativeSnapshot>) -> Either<NativeSandbox, RawError> {
    match build_sandbox(config, snapshot.map(|s| &s.snapshot)) {
        Ok(sb) => Either::A(NativeSandbox::new(Slot::Own(sb))),
        Err(e) => Either::B(convert::error(e)),
    }
}

/// One run in a sandbox of its own, built and dropped off the main thread.
#[napi]
pub fn run_once(
    env: Env,
    config: RawConfig,
    command: CommandArg,
    cancel: Option<&NativeCancel>,
) -> napi::Result<JsObject> {
    let cancel = cancel.cloned().unwrap_or_default();
    let command = command.0;
    let builder = convert::builder(config);
    if fast::available(&env) {
        // Building takes well under a millisecond (the VM is made ahead);
        // the sandbox is dropped off the main thread.
        return match guarded(|| builder.and_then(|b| b.build())) {
            Ok(mut sb) => {
                let command = command.notify_on_end(true);
                let started = guarded(|| cancel.start(&mut sb, &command));
                settle_here(&env, started, cancel, move || workers::submit(move || drop(sb)))
            }
            Err(e) => settle_here(&env, Err(e), cancel, || ()),
        };
    }
    promise(
        &env,
        move || {
            let mut sb = builder?.build()?;
            cancel.run(&mut sb, &command)
        },
        convert::output,
    )
}

#[napi]
pub struct NativeSnapshot {
    snapshot: Snapshot,
}

impl From<Snapshot> for NativeSnapshot {
    fn from(snapshot: Snapshot) -> Self {
        NativeSnapshot { snapshot }
    }
}

#[napi]
impl NativeSnapshot {
    #[napi]
    pub fn info(&self) -> RawSnapshotInfo {
        convert::snapshot_info(&self.snapshot)
    }

    /// Whether VMs made from now on copy the snapshot's memory (see
    /// `hvsandbox::Snapshot::copy_memory`).
    #[napi]
    pub fn copy_memory(&self, copy: bool) {
        self.snapshot.copy_memory(copy);
    }

    #[napi]
    pub fn save(&self, env: Env, path: String) -> napi::Result<JsObject> {
        let snapshot = self.snapshot.clone();
        promise(&env, move || snapshot.save(path), |()| ())
    }

    #[napi]
    pub fn load(env: Env, path: String) -> napi::Result<JsObject> {
        promise(&env, move || Snapshot::load(path), NativeSnapshot::from)
    }

    #[napi]
    pub fn from_bytes(env: Env, data: Buffer) -> napi::Result<JsObject> {
        let data = data.to_vec();
        promise(&env, move || Snapshot::from_bytes(&data), NativeSnapshot::from)
    }
}

#[napi]
pub struct NativePool {
    pool: Arc<Mutex<Option<Arc<SandboxPool>>>>,
}

impl NativePool {
    fn get(&self) -> Result<Arc<SandboxPool>, Error> {
        lock(&self.pool).clone().ok_or_else(|| Error::InvalidConfig("the pool is closed".into()))
    }
}

/// A pool of warm sandboxes of `snapshot` (its first one is made before
/// this returns, so a bad configuration fails here).
#[napi(catch_unwind)]
pub fn create_pool(config: RawConfig, snapshot: &NativeSnapshot, size: u32) -> Either<NativePool, RawError> {
    let made = convert::builder(config).and_then(|b| SandboxPool::new(b, &snapshot.snapshot, size as usize));
    match made {
        Ok(p) => Either::A(NativePool { pool: Arc::new(Mutex::new(Some(Arc::new(p)))) }),
        Err(e) => Either::B(convert::error(e)),
    }
}

#[napi]
impl NativePool {
    /// Takes a sandbox, runs the command in it and gives it back.
    #[napi]
    pub fn run(&self, env: Env, command: CommandArg, cancel: Option<&NativeCancel>) -> napi::Result<JsObject> {
        let pool = self.get();
        let cancel = cancel.cloned().unwrap_or_default();
        let command = command.0;
        if fast::available(&env) {
            if let Some(mut sb) = pool.as_ref().ok().and_then(|p| p.try_get()) {
                let command = command.notify_on_end(true);
                let started = guarded(|| cancel.start(&mut sb, &command));
                return settle_here(&env, started, cancel, move || drop(sb));
            }
        }
        promise(
            &env,
            move || {
                let mut sb = pool?.get()?;
                cancel.run(&mut sb, &command)
            },
            convert::output,
        )
    }

    /// A sandbox on loan; `close()` gives it back.
    #[napi]
    pub fn acquire(&self, env: Env) -> napi::Result<JsObject> {
        let pool = self.get();
        promise(&env, move || Ok(NativeSandbox::new(Slot::Pooled(pool?.get()?))), |sb| sb)
    }

    #[napi]
    pub fn ready(&self) -> u32 {
        self.get().map_or(0, |p| p.ready() as u32)
    }

    #[napi]
    pub fn size(&self) -> u32 {
        self.get().map_or(0, |p| p.size() as u32)
    }

    /// Stops the refilling and frees the ready sandboxes (those on loan
    /// are freed when given back).
    #[napi]
    pub fn close(&self, env: Env) -> napi::Result<JsObject> {
        let pool = lock(&self.pool).take();
        promise(
            &env,
            move || {
                drop(pool);
                Ok(())
            },
            |()| (),
        )
    }
}
