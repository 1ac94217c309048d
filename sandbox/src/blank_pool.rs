//! Blank VMs made ahead, process-wide, for the first run of new sandboxes.
//!
//! A sandbox that runs again makes its next VM itself while idle; a new
//! sandbox has had no idle time yet. When a cold sandbox is built, it asks
//! this pool to keep VMs of its memory size ready; its first run takes one
//! instead of creating it on the caller's path. One background thread, in
//! the same jail as the vCPU threads, makes them and boots the runtime in
//! them as far as it goes without a program (see `Vm::preboot`). Bounded:
//! a few VMs for each of the few most recently asked sizes.

use std::sync::atomic::AtomicI64;
use std::sync::{Condvar, Mutex, OnceLock};

use hvsandbox_core::Vm;

use crate::jail::{self, SeccompMode};

/// VMs kept ready for each size.
const PER_SIZE: usize = 2;
/// Sizes kept (the most recently asked for).
const SIZES: usize = 4;

#[derive(Default)]
struct State {
    /// Sizes asked for, most recent first.
    sizes: Vec<u64>,
    ready: Vec<(u64, Vm)>,
    /// The maker could not start or make VMs: do not ask again.
    broken: bool,
}

struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let started = std::thread::Builder::new().name("hvsandbox-blank-vms".into()).spawn(maker);
        let state = State { broken: started.is_err(), ..State::default() };
        Pool { state: Mutex::new(state), wake: Condvar::new() }
    })
}

/// A sandbox of `mem` bytes exists: keep VMs of that size ready.
pub(crate) fn prime(mem: u64) {
    let p = pool();
    let mut st = p.lock();
    if st.broken {
        return;
    }
    if st.sizes.first() != Some(&mem) {
        st.sizes.retain(|&s| s != mem);
        st.sizes.insert(0, mem);
        if st.sizes.len() > SIZES {
            let gone = st.sizes.pop();
            st.ready.retain(|(s, _)| Some(*s) != gone);
        }
    }
    drop(st);
    p.wake.notify_all();
}

/// A ready VM of `mem` bytes, if there is one.
pub(crate) fn take(mem: u64) -> Option<Vm> {
    let p = pool();
    let mut st = p.lock();
    let i = st.ready.iter().position(|(s, _)| *s == mem)?;
    let (_, vm) = st.ready.swap_remove(i);
    drop(st);
    p.wake.notify_all();
    Some(vm)
}

/// The size that is short of ready VMs, if any.
fn wanted(st: &State) -> Option<u64> {
    st.sizes.iter().copied().find(|&s| st.ready.iter().filter(|(r, _)| *r == s).count() < PER_SIZE)
}

fn maker() {
    let p = pool();
    // Guest code (the runtime's boot) runs here: the same jail as a
    // vCPU thread's.
    static VIOLATION: AtomicI64 = AtomicI64::new(-1);
    let mode = jail::env_override().unwrap_or(SeccompMode::Enforce);
    if jail::enter(mode, &VIOLATION).is_err() {
        p.lock().broken = true;
        return;
    }
    let mut failures = 0;
    loop {
        let mem = {
            let mut st = p.lock();
            loop {
                if let Some(mem) = wanted(&st) {
                    break mem;
                }
                st = p.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let made = Vm::new(mem).and_then(|mut vm| vm.preboot().map(|()| vm));
        match made {
            Ok(vm) => {
                failures = 0;
                let mut st = p.lock();
                if st.sizes.contains(&mem) {
                    st.ready.push((mem, vm));
                }
            }
            Err(_) => {
                failures += 1;
                if failures >= 3 || VIOLATION.load(std::sync::atomic::Ordering::SeqCst) >= 0 {
                    let mut st = p.lock();
                    st.broken = true;
                    st.sizes.clear();
                    return;
                }
            }
        }
    }
}
