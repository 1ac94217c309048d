//! The threads that do the binding's blocking work (a run, a snapshot, a
//! stdin write), so that none of it happens on Node's main thread nor on
//! libuv's four-thread pool (a long guest run there would starve the
//! application's file and DNS work). Grows on demand: a job that finds no
//! idle thread gets a new one; a thread idle for a while ends.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle thread waits for work before it ends.
const IDLE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    threads: usize,
}

#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Pool::default)
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `job` on a worker thread. Jobs catch their own panics (see
/// `crate::promise`); one that escapes ends its thread only.
pub fn submit(job: impl FnOnce() + Send + 'static) {
    let p = pool();
    let mut st = p.lock();
    st.jobs.push_back(Box::new(job));
    if st.jobs.len() <= st.idle {
        p.wake.notify_one();
        return;
    }
    st.threads += 1;
    drop(st);
    let started = std::thread::Builder::new().name("hvsandbox-node".into()).spawn(work);
    if started.is_err() {
        let mut st = p.lock();
        st.threads -= 1;
        if st.threads == 0 {
            // No thread at all to take it: run it here rather than never.
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                job();
            }
        }
    }
}

fn work() {
    let p = pool();
    let mut st = p.lock();
    loop {
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            job();
            st = p.lock();
            continue;
        }
        st.idle += 1;
        let (guard, waited) = p.wake.wait_timeout(st, IDLE).unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if waited.timed_out() && st.jobs.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}
