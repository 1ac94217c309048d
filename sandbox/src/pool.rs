//! A pool of ready sandboxes started from one snapshot: each has its VM
//! made already, so taking one and running costs a reset and the run. A
//! background thread keeps the pool full; sandboxes go back on drop.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::config::SandboxBuilder;
use crate::error::{Error, Result};
use crate::sandbox::Sandbox;
use crate::snapshot::Snapshot;

struct State {
    ready: Vec<Sandbox>,
    /// Sandboxes out on loan (they come back unless lost).
    loaned: usize,
    closed: bool,
    /// The refiller's last failure, reported by `get` when it has nothing.
    error: Option<String>,
}

struct Shared {
    snapshot: Snapshot,
    builder: SandboxBuilder,
    size: usize,
    state: Mutex<State>,
    /// Signalled when the pool needs refilling or is closed.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn make(&self) -> Result<Sandbox> {
        let mut sb = self.builder.clone().build_from(&self.snapshot)?;
        sb.warm()?;
        Ok(sb)
    }
}

/// Keeps up to `size` warm sandboxes of a snapshot ready. `Send + Sync`:
/// share it between threads (`Arc`) and [`SandboxPool::get`] from any.
pub struct SandboxPool {
    shared: Arc<Shared>,
    refiller: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SandboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPool").field("size", &self.shared.size).field("ready", &self.ready()).finish()
    }
}

impl SandboxPool {
    /// A pool of sandboxes built by `builder` from `snapshot`, refilled in
    /// the background up to `size` (1 ..= 1024). The first one is made
    /// before this returns, so a bad configuration fails here.
    pub fn new(builder: SandboxBuilder, snapshot: &Snapshot, size: usize) -> Result<SandboxPool> {
        if !(1..=1024).contains(&size) {
            return Err(Error::InvalidConfig(format!("pool size must be 1..=1024, got {size}")));
        }
        let shared = Arc::new(Shared {
            snapshot: snapshot.clone(),
            builder,
            size,
            state: Mutex::new(State { ready: Vec::new(), loaned: 0, closed: false, error: None }),
            wake: Condvar::new(),
        });
        let first = shared.make()?;
        shared.lock().ready.push(first);
        let bg = shared.clone();
        let refiller =
            std::thread::Builder::new().name("hvsandbox-pool".into()).spawn(move || refill(&bg)).map_err(|e| {
                Error::Internal {
                    context: "cannot start the pool's thread".into(),
                    source: Some(std::sync::Arc::new(e)),
                }
            })?;
        Ok(SandboxPool { shared, refiller: Some(refiller) })
    }

    /// A ready sandbox (made now if none is): run it with
    /// [`crate::Command::resume`]; it goes back to the pool when dropped.
    pub fn get(&self) -> Result<PooledSandbox> {
        let taken = {
            let mut st = self.shared.lock();
            let sb = st.ready.pop();
            if sb.is_none() {
                if let Some(e) = &st.error {
                    return Err(Error::Internal {
                        context: format!("the pool cannot make sandboxes: {e}"),
                        source: None,
                    });
                }
            }
            st.loaned += 1;
            sb
        };
        let sandbox = match taken {
            Some(sb) => sb,
            None => match self.shared.make() {
                Ok(sb) => sb,
                Err(e) => {
                    self.shared.lock().loaned -= 1;
                    return Err(e);
                }
            },
        };
        Ok(PooledSandbox { sandbox: Some(sandbox), shared: self.shared.clone() })
    }

    /// A sandbox that is ready now, or None (without making one: for
    /// callers that must not block, such as an event loop).
    pub fn try_get(&self) -> Option<PooledSandbox> {
        let sandbox = {
            let mut st = self.shared.lock();
            let sb = st.ready.pop()?;
            st.loaned += 1;
            sb
        };
        Some(PooledSandbox { sandbox: Some(sandbox), shared: self.shared.clone() })
    }

    /// Sandboxes ready now.
    pub fn ready(&self) -> usize {
        self.shared.lock().ready.len()
    }

    /// The pool's target size.
    pub fn size(&self) -> usize {
        self.shared.size
    }
}

fn refill(shared: &Shared) {
    loop {
        {
            let mut st = shared.lock();
            // Sandboxes on loan come back: only lost ones are replaced.
            while !st.closed && st.ready.len() + st.loaned >= shared.size {
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closed {
                return;
            }
        }
        match shared.make() {
            Ok(sb) => {
                let mut st = shared.lock();
                st.error = None;
                if st.closed || st.ready.len() + st.loaned >= shared.size {
                    drop(st);
                    drop(sb);
                } else {
                    st.ready.push(sb);
                }
            }
            Err(e) => {
                shared.lock().error = Some(e.to_string());
                // Do not spin on a persistent failure.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

impl Drop for SandboxPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refiller.take() {
            let _ = t.join();
        }
        let ready = std::mem::take(&mut self.shared.lock().ready);
        drop(ready);
    }
}

/// A sandbox on loan from a [`SandboxPool`]; it returns on drop (unless
/// poisoned or the pool is full or gone). Each run starts from the
/// snapshot, so nothing of one borrower's runs reaches the next.
pub struct PooledSandbox {
    sandbox: Option<Sandbox>,
    shared: Arc<Shared>,
}

impl Deref for PooledSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        match &self.sandbox {
            Some(sb) => sb,
            None => unreachable!("a pooled sandbox is only emptied by drop"),
        }
    }
}

impl DerefMut for PooledSandbox {
    fn deref_mut(&mut self) -> &mut Sandbox {
        match &mut self.sandbox {
            Some(sb) => sb,
            None => unreachable!("a pooled sandbox is only emptied by drop"),
        }
    }
}

impl Drop for PooledSandbox {
    fn drop(&mut self) {
        let Some(mut sb) = self.sandbox.take() else { return };
        // A process still running is killed before the next borrower.
        sb.settle();
        let mut st = self.shared.lock();
        st.loaned -= 1;
        if !sb.is_poisoned() && !st.closed && st.ready.len() + st.loaned < self.shared.size {
            st.ready.push(sb);
        } else {
            // Lost (or one too many): the refiller makes up the number.
            drop(st);
            self.shared.wake.notify_all();
            drop(sb);
        }
    }
}
