//! A spawned process for JavaScript: a worker thread pumps its events
//! (output chunks, then its end) into a threadsafe function, pausing while
//! JavaScript's streams are full (backpressure: the guest then waits in its
//! `write`, as a child writing to a full pipe does); its stdin is written
//! from worker threads, since a write waits while the guest has not read.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hvsandbox::{Error, Output, Process, ProcessEvent, ProcessKillHandle, ProcessStdin};
use napi::bindgen_prelude::Buffer;
use napi::threadsafe_function::{ErrorStrategy, ThreadSafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsFunction, JsObject};
use napi_derive::napi;

use crate::convert::{self, RawError, RawOutput};
use crate::{lock, panic_message, promise, workers};

pub enum PumpEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(Box<Result<Output, Error>>),
}

/// One event for JavaScript: `kind` is "stdout", "stderr" or "exit".
#[napi(object, object_from_js = false)]
pub struct RawEvent {
    pub kind: String,
    pub data: Option<Buffer>,
    pub output: Option<RawOutput>,
    pub error: Option<RawError>,
}

pub type Events = ThreadsafeFunction<PumpEvent, ErrorStrategy::Fatal>;

/// The threadsafe function that hands `on_event` a process's events on
/// the main thread. It keeps Node's event loop alive until the process's
/// end is delivered (as a child process does).
pub fn events(on_event: &JsFunction) -> napi::Result<Events> {
    on_event.create_threadsafe_function(0, |ctx: ThreadSafeCallContext<PumpEvent>| {
        let ev = match ctx.value {
            PumpEvent::Stdout(b) => RawEvent { kind: "stdout".into(), data: Some(b.into()), output: None, error: None },
            PumpEvent::Stderr(b) => RawEvent { kind: "stderr".into(), data: Some(b.into()), output: None, error: None },
            PumpEvent::Exit(r) => match *r {
                Ok(o) => RawEvent { kind: "exit".into(), data: None, output: Some(convert::output(o)), error: None },
                Err(e) => RawEvent { kind: "exit".into(), data: None, output: None, error: Some(convert::error(e)) },
            },
        };
        Ok(vec![ev])
    })
}

/// Whether JavaScript wants more output now.
#[derive(Default)]
struct Flow {
    paused: Mutex<bool>,
    changed: Condvar,
    /// Never pause again (the process was killed or its streams dropped).
    free: AtomicBool,
}

impl Flow {
    fn set_paused(&self, paused: bool) {
        *lock(&self.paused) = paused;
        self.changed.notify_all();
    }

    /// Waits while paused, unless the run has ended: then what it left
    /// is bounded and goes out at once (so an abandoned process never
    /// keeps its thread, nor Node's event loop, forever).
    fn wait(&self, process: &Process) {
        let mut paused = lock(&self.paused);
        while *paused && !self.free.load(Ordering::SeqCst) && !process.has_ended() {
            paused = self
                .changed
                .wait_timeout(paused, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

#[napi]
pub struct NativeProcess {
    kill: ProcessKillHandle,
    stdin: Arc<Mutex<Option<ProcessStdin>>>,
    flow: Arc<Flow>,
}

/// Starts pumping `p`'s events to `events`.
pub fn start(mut p: Process, events: Events) -> NativeProcess {
    let stdin = Arc::new(Mutex::new(p.take_stdin()));
    let kill = p.kill_handle();
    let flow = Arc::new(Flow::default());
    let pump_flow = flow.clone();
    workers::submit(move || pump(p, &events, &pump_flow));
    NativeProcess { kill, stdin, flow }
}

fn pump(mut p: Process, events: &Events, flow: &Flow) {
    let pumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
        flow.wait(&p);
        let ev = match p.next_event() {
            Some(ProcessEvent::Stdout(b)) => PumpEvent::Stdout(b),
            Some(ProcessEvent::Stderr(b)) => PumpEvent::Stderr(b),
            Some(ProcessEvent::Exited(r)) => PumpEvent::Exit(Box::new(r)),
            None => return,
        };
        let last = matches!(ev, PumpEvent::Exit(_));
        events.call(ev, ThreadsafeFunctionCallMode::Blocking);
        if last {
            return;
        }
    }));
    if let Err(panic) = pumped {
        p.kill();
        let e = convert::internal(&format!("hvsandbox (Node binding) panicked: {}", panic_message(&*panic)));
        events.call(PumpEvent::Exit(Box::new(Err(e))), ThreadsafeFunctionCallMode::Blocking);
    }
}

#[napi]
impl NativeProcess {
    /// Stops the process (its end comes as an event with `CANCELLED`).
    #[napi]
    pub fn kill(&self) {
        self.flow.free.store(true, Ordering::SeqCst);
        self.kill.kill();
        self.flow.changed.notify_all();
    }

    /// Stops (`true`) or restarts the flow of output events.
    #[napi]
    pub fn set_paused(&self, paused: bool) {
        self.flow.set_paused(paused);
    }

    /// Output events never pause again (nobody reads the streams).
    #[napi]
    pub fn unpause_for_good(&self) {
        self.flow.free.store(true, Ordering::SeqCst);
        self.flow.changed.notify_all();
    }

    /// Writes to the process's stdin; resolves to null, or to why not
    /// (the process ended, or its stdin was closed).
    #[napi]
    pub fn write_stdin(&self, env: Env, data: Buffer) -> napi::Result<JsObject> {
        let stdin = self.stdin.clone();
        let data = data.to_vec();
        promise(
            &env,
            move || {
                Ok(match lock(&stdin).as_mut() {
                    Some(w) => w.write_all(&data).err().map(|e| e.to_string()),
                    None => Some("stdin is closed".to_string()),
                })
            },
            |r| r,
        )
    }

    /// Ends the process's input.
    #[napi]
    pub fn close_stdin(&self, env: Env) -> napi::Result<JsObject> {
        let stdin = self.stdin.clone();
        promise(
            &env,
            move || {
                lock(&stdin).take();
                Ok(())
            },
            |()| (),
        )
    }
}
