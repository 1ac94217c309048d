//! Runs started and finished on Node's main thread, with no binding thread
//! in between: the main thread starts the run (`Sandbox::start` does not
//! block), and the vCPU thread that serves it makes the crate's
//! end-of-run eventfd (`hvsandbox::end_event_fd`) readable when it ends;
//! libuv watches that eventfd (a `uv_poll` handle on the main loop) and
//! this module then settles the runs that ended. A call thus crosses two
//! threads, as one from Rust does, instead of four (main → worker → vCPU
//! → worker → main): each crossing is a wake-up that costs 100–250 µs on
//! nested hosts.
//!
//! Only the process's main thread uses it (the loop lives as long as the
//! process); other threads (`worker_threads`) and any failure to set it up
//! fall back to the worker threads (`available` says which).
//!
//! Promises made here are plain N-API promises settled in the poll's
//! callback, inside a callback scope (so that their reactions run as they
//! do after any native callback): a threadsafe function per promise, as
//! napi-rs's deferreds use, would cost a handle, a second loop turn and
//! its release per call.
//!
//! libuv's symbols come from the Node executable, which exports them for
//! addons; the handle is allocated with the size libuv reports.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::os::fd::AsRawFd;

use hvsandbox::{Error, Output, Process};

use crate::convert::{RawOutput, NUMBERS};
use napi::{sys, Env};

/// `UV_POLL` in libuv's `uv_handle_type` (stable across libuv 1.x).
const UV_POLL: c_int = 8;
/// `UV_READABLE` in `uv_poll_event`.
const UV_READABLE: c_int = 1;

type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(event_loop: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_ref(handle: *mut c_void);
    fn uv_unref(handle: *mut c_void);
    fn uv_close(handle: *mut c_void, cb: Option<CloseCb>);
}

/// What to do with a run's result, on the main thread, given its env
/// (with a handle scope and a callback scope open).
pub type Done = Box<dyn FnOnce(sys::napi_env, Result<Output, Error>)>;

struct Waiter {
    process: Process,
    done: Done,
}

enum Watch {
    /// Not the main thread, or the poll could not be set up.
    Unavailable,
    Ready {
        env: sys::napi_env,
        /// For the callback scope promises are settled in.
        async_context: sys::napi_async_context,
        eventfd: c_int,
        /// The `uv_poll_t` (allocated with `malloc`, freed by its close).
        handle: *mut c_void,
        pending: Vec<Waiter>,
        table: Table,
    },
}

/// Rows of outputs' numbers runs settled here write to (see
/// `convert::RawOutput`): a `Float64Array` JavaScript reads each row of
/// when its promise's reaction runs, which is before the next batch of
/// runs is settled (reactions run when `on_readable` closes its callback
/// scope); rows are handed out from the first again at each batch. A
/// batch (or a run settled at once) past the last row gets an array of
/// its own instead.
struct Table {
    /// The `ROWS` rows, in the array's memory (V8 never moves an
    /// ArrayBuffer's memory; the reference keeps it alive, and nothing
    /// outside this module and lib/options.js sees the array to detach it).
    rows: *mut [f64; NUMBERS],
    next: u32,
    array: sys::napi_ref,
}

const ROWS: u32 = 64;

thread_local! {
    static WATCH: RefCell<Option<Watch>> = const { RefCell::new(None) };
}

/// Whether runs started on this thread can be settled here (sets the
/// watch up on the first call).
pub fn available(env: &Env) -> bool {
    WATCH.with(|w| {
        let mut w = w.borrow_mut();
        let watch = w.get_or_insert_with(|| set_up(env).unwrap_or(Watch::Unavailable));
        matches!(watch, Watch::Ready { .. })
    })
}

fn set_up(env: &Env) -> Option<Watch> {
    // SAFETY: gettid and getpid take no arguments and cannot fail.
    if unsafe { libc::gettid() != libc::getpid() } {
        return None;
    }
    if std::env::var_os("HVSANDBOX_NODE_NO_FAST_PATH").is_some() {
        return None;
    }
    let eventfd = hvsandbox::end_event_fd().ok()?.as_raw_fd();
    let mut event_loop: *mut sys::uv_loop_s = std::ptr::null_mut();
    // SAFETY: `env` is the live environment of this (its JavaScript)
    // thread; the out pointer is a local.
    let status = unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut event_loop) };
    if status != sys::Status::napi_ok || event_loop.is_null() {
        return None;
    }
    // SAFETY: uv_handle_size only reads its argument (a valid handle type).
    let size = unsafe { uv_handle_size(UV_POLL) };
    // SAFETY: a plain allocation of `size` bytes (malloc's alignment suits
    // any libuv handle); checked for null below.
    let handle = unsafe { libc::calloc(1, size.max(1)) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `event_loop` is this thread's running loop, `handle` a zeroed
    // block of the size libuv asked for, `eventfd` an open descriptor that
    // lives as long as the process.
    if unsafe { uv_poll_init(event_loop.cast(), handle, eventfd) } != 0 {
        // SAFETY: the handle was not initialised: freeing it is all.
        unsafe { libc::free(handle) };
        return None;
    }
    // SAFETY: `handle` was initialised above on this loop; `on_readable`
    // matches libuv's poll callback type.
    if unsafe { uv_poll_start(handle, UV_READABLE, on_readable) } != 0 {
        // SAFETY: an initialised handle is closed (and freed in its
        // close callback) rather than freed at once.
        unsafe { uv_close(handle, Some(free_handle)) };
        return None;
    }
    let mut async_context: sys::napi_async_context = std::ptr::null_mut();
    let mut name: sys::napi_value = std::ptr::null_mut();
    // SAFETY: `env` is live and a handle scope is open (we are inside a
    // call from JavaScript); the out pointers are locals; the string is
    // NUL-terminated.
    let made = unsafe {
        sys::napi_create_string_utf8(env.raw(), c"hvsandbox".as_ptr(), 9, &mut name) == sys::Status::napi_ok
            && sys::napi_async_init(env.raw(), std::ptr::null_mut(), name, &mut async_context) == sys::Status::napi_ok
    };
    if !made {
        // SAFETY: an initialised handle is closed, freed by its callback.
        unsafe { uv_close(handle, Some(free_handle)) };
        return None;
    }
    let table = make_table(env)?;
    // The poll keeps Node running only while runs are pending (as a
    // child process does), see `watch` and `on_readable`.
    // SAFETY: `handle` is an active handle of this loop.
    unsafe { uv_unref(handle) };
    // SAFETY: `env` is live; the hook runs on this thread when the
    // environment is torn down, with no argument.
    unsafe { sys::napi_add_env_cleanup_hook(env.raw(), Some(tear_down), std::ptr::null_mut()) };
    Some(Watch::Ready { env: env.raw(), async_context, eventfd, handle, pending: Vec::new(), table })
}

fn make_table(env: &Env) -> Option<Table> {
    let mut data: *mut c_void = std::ptr::null_mut();
    let mut buffer: sys::napi_value = std::ptr::null_mut();
    let mut array: sys::napi_value = std::ptr::null_mut();
    let mut reference: sys::napi_ref = std::ptr::null_mut();
    let len = ROWS as usize * NUMBERS;
    // SAFETY: `env` is live, with a handle scope open (a call from
    // JavaScript); the out pointers are locals; the typed array covers
    // exactly the new ArrayBuffer.
    let made = unsafe {
        sys::napi_create_arraybuffer(env.raw(), len * 8, &mut data, &mut buffer) == sys::Status::napi_ok
            && sys::napi_create_typedarray(env.raw(), sys::TypedarrayType::float64_array, len, buffer, 0, &mut array)
                == sys::Status::napi_ok
            && sys::napi_create_reference(env.raw(), array, 1, &mut reference) == sys::Status::napi_ok
    };
    (made && !data.is_null()).then(|| Table { rows: data.cast(), next: 0, array: reference })
}

/// The table of numbers (a `Float64Array` of rows of `NUMBERS`), if runs
/// are settled on this thread.
pub fn table(env: &Env) -> Option<sys::napi_value> {
    WATCH.with(|w| match &*w.borrow() {
        Some(Watch::Ready { table, .. }) => {
            let mut value: sys::napi_value = std::ptr::null_mut();
            // SAFETY: the reference was made in this env (this thread's)
            // and is never deleted while the watch is ready.
            let ok = unsafe { sys::napi_get_reference_value(env.raw(), table.array, &mut value) };
            (ok == sys::Status::napi_ok && !value.is_null()).then_some(value)
        }
        _ => None,
    })
}

/// `out` with its numbers in the next free row of the table, if there is
/// one (else as it was).
pub fn to_row(out: RawOutput) -> RawOutput {
    WATCH.with(|w| match &mut *w.borrow_mut() {
        Some(Watch::Ready { table, .. }) if table.next < ROWS => {
            let row = table.next;
            table.next += 1;
            // SAFETY: `row` < ROWS, so the row lies in the table's
            // ArrayBuffer, which lives as long as the watch (see `Table`);
            // only this thread touches it, and no reference to it is held.
            out.into_row(row, unsafe { &mut *table.rows.add(row as usize) })
        }
        _ => out,
    })
}

/// Settles `process` with `done` when it ends. Call only after
/// `available` said yes on this thread, for a process started with
/// `Command::notify_on_end(true)`.
pub fn watch(env: &Env, process: Process, done: Done) {
    let waiter = Waiter { process, done };
    let refused = WATCH.with(|w| match &mut *w.borrow_mut() {
        Some(Watch::Ready { pending, handle, .. }) => {
            if pending.is_empty() {
                // SAFETY: `handle` is this loop's active poll handle.
                unsafe { uv_ref(*handle) };
            }
            pending.push(waiter);
            None
        }
        _ => Some(waiter),
    });
    // Not reached when `available` was asked first; settled at once
    // rather than never.
    if let Some(mut w) = refused {
        w.process.kill();
        let result = w.process.wait();
        (w.done)(env.raw(), result);
    }
}

/// libuv: the eventfd is readable, so some run (perhaps several, perhaps
/// not one of ours) has ended.
unsafe extern "C" fn on_readable(_handle: *mut c_void, _status: c_int, _events: c_int) {
    let ended = WATCH.with(|w| match &mut *w.borrow_mut() {
        Some(Watch::Ready { env, async_context, eventfd, pending, handle, table }) => {
            // The rows of the last batch have been read (see `Table`).
            table.next = 0;
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from the non-blocking
            // eventfd (resetting it); a failure (EAGAIN: another reader
            // took it) is harmless, the ends are looked at below anyway.
            let _ = unsafe { libc::read(*eventfd, (&mut count as *mut u64).cast(), 8) };
            let (ended, running): (Vec<Waiter>, Vec<Waiter>) =
                std::mem::take(pending).into_iter().partition(|w| w.process.has_ended());
            if running.is_empty() {
                // SAFETY: `handle` is this loop's active poll handle.
                unsafe { uv_unref(*handle) };
            }
            *pending = running;
            Some((*env, *async_context, ended))
        }
        _ => None,
    });
    let Some((env, async_context, ended)) = ended else { return };
    if ended.is_empty() {
        return;
    }
    // Outside the borrow: settling runs JavaScript, which may start runs.
    let mut handles: sys::napi_handle_scope = std::ptr::null_mut();
    let mut resource: sys::napi_value = std::ptr::null_mut();
    let mut callbacks: sys::napi_callback_scope = std::ptr::null_mut();
    // SAFETY: on the loop's (JavaScript) thread with its live env; the out
    // pointers are locals. The scopes are closed below in reverse order.
    unsafe {
        sys::napi_open_handle_scope(env, &mut handles);
        sys::napi_create_object(env, &mut resource);
        sys::napi_open_callback_scope(env, resource, async_context, &mut callbacks);
    }
    for mut w in ended {
        let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let result = w.process.wait();
            (w.done)(env, result);
        }));
        // A panic here loses one promise, never the process (it cannot
        // cross into libuv).
        drop(settled);
    }
    // SAFETY: the scopes opened above, closed once; closing the callback
    // scope runs the promises' reactions (microtasks, nextTick).
    unsafe {
        sys::napi_close_callback_scope(env, callbacks);
        sys::napi_close_handle_scope(env, handles);
    }
}

/// Node is tearing this environment down: runs still pending are killed
/// (dropping a process kills it) and the poll handle is closed.
unsafe extern "C" fn tear_down(_arg: *mut c_void) {
    let watch = WATCH.with(|w| w.borrow_mut().replace(Watch::Unavailable));
    if let Some(Watch::Ready { handle, pending, .. }) = watch {
        drop(pending);
        // SAFETY: `handle` is this loop's active poll handle, closed once
        // here; its memory is freed by the close callback.
        unsafe {
            uv_poll_stop(handle);
            uv_close(handle, Some(free_handle));
        }
    }
}

unsafe extern "C" fn free_handle(handle: *mut c_void) {
    // SAFETY: libuv is done with the closed handle, which `set_up`
    // allocated with calloc.
    unsafe { libc::free(handle) };
}
