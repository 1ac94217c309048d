//! What a spawned process's caller and the vCPU thread serving its run
//! share: bounded queues of output on its way out and input on its way in,
//! and the run's result once it ends. Both sides block on one condition
//! variable; the vCPU thread waits in short slices so a kill or a deadline
//! is seen soon.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::output::Output;

/// Output a spawned process may have produced and its reader not taken yet,
/// per stream, before the guest is made to wait (backpressure).
pub(crate) const OUTPUT_QUEUE_BYTES: usize = 1 << 20;
/// Input written and not yet read by the guest, before the writer waits.
pub(crate) const INPUT_QUEUE_BYTES: usize = 64 * 1024;
/// How long the vCPU thread waits at most before looking at its stop
/// conditions again.
const SLICE: Duration = Duration::from_millis(5);

/// What the guest's read of stdin finds.
pub(crate) enum Input {
    Bytes(Vec<u8>),
    End,
    NothingYet,
}

#[derive(Default)]
struct State {
    /// stdout, stderr: chunks with the order in which they were written.
    out: [VecDeque<(u64, Vec<u8>)>; 2],
    out_bytes: [usize; 2],
    next_seq: u64,
    input: VecDeque<u8>,
    input_closed: bool,
    /// The run ended (its result may have been taken already).
    ended: bool,
    result: Option<Result<Output>>,
    /// The caller dropped its process: nothing reads the output any more.
    abandoned: bool,
    /// Threads waiting on `changed` now: a wake with none skips the
    /// futex call (every call costs on these hosts, and most wakes of a
    /// short run find nobody waiting).
    waiters: usize,
}

/// Shared by a [`crate::Process`] and the run serving it.
pub(crate) struct Live {
    state: Mutex<State>,
    changed: Condvar,
    /// The process's own kill (affects its run only).
    killed: AtomicBool,
    input_cap: usize,
    /// The run's end also makes `end_notify`'s eventfd readable.
    notify_end: bool,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("killed", &self.is_killed()).finish_non_exhaustive()
    }
}

impl Live {
    pub(crate) fn new(input_cap: usize, notify_end: bool) -> Live {
        Live {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            killed: AtomicBool::new(false),
            input_cap: input_cap.clamp(1, INPUT_QUEUE_BYTES),
            notify_end,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills the process's run: its waits end now, not at their next look.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.poke();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Wakes every waiter to look at its stop conditions again (taking
    /// the lock first, so a waiter between its look and its wait is not
    /// missed).
    pub(crate) fn poke(&self) {
        let st = self.lock();
        self.wake(st);
    }

    /// Releases the lock, then wakes the waiters: woken while it is held,
    /// a waiter would sleep again on the lock (a second cross-CPU wake-up,
    /// ~100 µs on these hosts when its CPU was idle).
    fn wake(&self, st: MutexGuard<'_, State>) {
        let anyone = st.waiters > 0;
        drop(st);
        if anyone {
            self.changed.notify_all();
        }
    }

    /// Waits on `changed` (at most `slice` if given), counted in `waiters`.
    fn wait<'a>(&self, mut st: MutexGuard<'a, State>, slice: Option<Duration>) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = match slice {
            Some(d) => self.changed.wait_timeout(st, d).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0),
            None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
        st.waiters -= 1;
        st
    }

    /// Waits one slice for a change (or up to `until`).
    fn wait_slice<'a>(&self, st: MutexGuard<'a, State>, until: Option<Instant>) -> MutexGuard<'a, State> {
        let slice = until.map_or(SLICE, |u| u.saturating_duration_since(Instant::now()).min(SLICE));
        self.wait(st, Some(slice))
    }

    // --- the vCPU thread's side ---------------------------------------------------------

    /// Queues output of stream `fd` (1 or 2). With `stop`, first waits
    /// while the queue is full until the reader takes some or `stop` turns
    /// true (the bytes are queued anyway then: a stopped run's output is
    /// its partial output).
    pub(crate) fn push_output(&self, fd: u64, bytes: Vec<u8>, stop: Option<&dyn Fn() -> bool>) {
        let i = (fd == 2) as usize;
        let mut st = self.lock();
        if let Some(stop) = stop {
            while !st.abandoned && st.out_bytes[i] > 0 && st.out_bytes[i] + bytes.len() > OUTPUT_QUEUE_BYTES {
                if stop() || self.is_killed() {
                    break;
                }
                st = self.wait_slice(st, None);
            }
        }
        if st.abandoned || bytes.is_empty() {
            return;
        }
        st.out_bytes[i] += bytes.len();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.out[i].push_back((seq, bytes));
        self.wake(st);
    }

    /// Whether stream `fd`'s queue can take more now.
    pub(crate) fn has_room(&self, fd: u64) -> bool {
        let st = self.lock();
        st.abandoned || st.out_bytes[(fd == 2) as usize] < OUTPUT_QUEUE_BYTES
    }

    /// Takes up to `max` bytes of input.
    pub(crate) fn read_input(&self, max: usize) -> Input {
        let mut st = self.lock();
        if st.input.is_empty() {
            return if st.input_closed { Input::End } else { Input::NothingYet };
        }
        let n = max.min(st.input.len());
        let bytes: Vec<u8> = st.input.drain(..n).collect();
        self.wake(st);
        Input::Bytes(bytes)
    }

    /// Whether a read of input would find bytes or the end now.
    pub(crate) fn input_ready(&self) -> bool {
        let st = self.lock();
        !st.input.is_empty() || st.input_closed
    }

    /// Waits until `until`, `stop`, or (`for_input`) input is ready.
    pub(crate) fn sleep(&self, until: Option<Instant>, for_input: bool, stop: &dyn Fn() -> bool) {
        let mut st = self.lock();
        loop {
            if until.is_some_and(|u| Instant::now() >= u)
                || stop()
                || self.is_killed()
                || (for_input && (!st.input.is_empty() || st.input_closed))
            {
                return;
            }
            st = self.wait_slice(st, until);
        }
    }

    /// The run is over: its result, for the process to take (the first
    /// result given counts).
    pub(crate) fn finish(&self, result: Result<Output>) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        st.ended = true;
        st.result = Some(result);
        st.input.clear();
        self.wake(st);
        if self.notify_end {
            crate::end_notify::signal();
        }
    }

    // --- the caller's side -------------------------------------------------------------

    pub(crate) fn queued_output_bytes(&self) -> usize {
        let st = self.lock();
        st.out_bytes[0] + st.out_bytes[1]
    }

    pub(crate) fn ended(&self) -> bool {
        self.lock().ended
    }

    /// The next chunk of either stream (the earlier written first), or
    /// None once the run ended and both queues are empty; waits otherwise.
    pub(crate) fn next_chunk(&self, block: bool) -> Option<Option<(u64, Vec<u8>)>> {
        let mut st = self.lock();
        loop {
            let pick = match (st.out[0].front(), st.out[1].front()) {
                (Some(a), Some(b)) => Some(if a.0 < b.0 { 0 } else { 1 }),
                (Some(_), None) => Some(0),
                (None, Some(_)) => Some(1),
                (None, None) => None,
            };
            if let Some(i) = pick {
                let (_, bytes) = st.out[i].pop_front().unwrap_or_default();
                st.out_bytes[i] -= bytes.len();
                self.wake(st);
                return Some(Some((i as u64 + 1, bytes)));
            }
            if st.ended {
                return None;
            }
            if !block {
                return Some(None);
            }
            st = self.wait(st, None);
        }
    }

    /// Reads stream `fd` into `buf`: waits for bytes; 0 once the run ended
    /// and the stream is drained.
    pub(crate) fn read_stream(&self, fd: u64, buf: &mut [u8]) -> usize {
        let i = (fd == 2) as usize;
        let mut st = self.lock();
        loop {
            if let Some((_, front)) = st.out[i].front_mut() {
                let n = buf.len().min(front.len());
                buf[..n].copy_from_slice(&front[..n]);
                if n == front.len() {
                    st.out[i].pop_front();
                } else {
                    front.drain(..n);
                }
                st.out_bytes[i] -= n;
                self.wake(st);
                return n;
            }
            if st.ended || buf.is_empty() {
                return 0;
            }
            st = self.wait(st, None);
        }
    }

    /// Everything still queued of stream `fd`.
    pub(crate) fn drain_stream(&self, fd: u64) -> Vec<u8> {
        let i = (fd == 2) as usize;
        let mut st = self.lock();
        let mut all = Vec::with_capacity(st.out_bytes[i]);
        for (_, chunk) in st.out[i].drain(..) {
            all.extend_from_slice(&chunk);
        }
        st.out_bytes[i] = 0;
        self.wake(st);
        all
    }

    /// Queues input, waiting while the queue is full. Err(()) once the run
    /// ended or input was closed (a broken pipe).
    pub(crate) fn write_input(&self, data: &[u8]) -> std::result::Result<usize, ()> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut st = self.lock();
        loop {
            if st.ended || st.input_closed {
                return Err(());
            }
            let room = self.input_cap.saturating_sub(st.input.len());
            if room > 0 {
                let n = room.min(data.len());
                st.input.extend(&data[..n]);
                self.wake(st);
                return Ok(n);
            }
            st = self.wait(st, None);
        }
    }

    /// End of input: the guest's reads return 0 once the queue is read.
    pub(crate) fn close_input(&self) {
        let mut st = self.lock();
        st.input_closed = true;
        self.wake(st);
    }

    /// Waits for the run's end (leaving its result to the process).
    pub(crate) fn wait_ended(&self) {
        let mut st = self.lock();
        while !st.ended {
            st = self.wait(st, None);
        }
    }

    /// Waits for the run's end; takes its result (None if taken before).
    pub(crate) fn wait_result(&self, block: bool) -> Option<Option<Result<Output>>> {
        let mut st = self.lock();
        loop {
            if st.ended {
                return Some(st.result.take());
            }
            if !block {
                return None;
            }
            st = self.wait(st, None);
        }
    }

    /// The caller is gone: output is dropped from now on and nobody waits.
    pub(crate) fn abandon(&self) {
        let mut st = self.lock();
        st.abandoned = true;
        st.input_closed = true;
        st.out = Default::default();
        st.out_bytes = [0; 2];
        self.wake(st);
    }
}

/// The vCPU thread's hold on a process's run: whatever happens to the job
/// (even a thread that dies with it), the process learns that the run
/// ended.
pub(crate) struct RunEnd(pub(crate) std::sync::Arc<Live>);

impl Drop for RunEnd {
    fn drop(&mut self) {
        self.0.finish(Err(crate::error::Error::Internal {
            context: "the sandbox's vCPU thread stopped before the run ended".into(),
            source: None,
        }));
    }
}
