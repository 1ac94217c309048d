//! The server's warm programs: after a program named by its host path
//! has run once, the server takes its entry snapshot (the program loaded,
//! before its first instruction) and keeps a small pool of clones of it,
//! each with its VM made and its pages prefaulted. A later run of the
//! same file starts from one of them with its own argv and environment:
//! what a cold run would see, without the VM, the boot and the load.
//!
//! A file is the same while its device, inode, size, mtime and ctime are
//! (a rename over it, a write to it or a chmod all change one of them);
//! otherwise its next run is cold and a new snapshot is taken. A file
//! changed while its snapshot was taken is not kept. Bare names (looked
//! up on the guest's PATH) always run cold. At most `max_programs` are
//! kept; the one unused longest goes first.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hvsandbox::{Command, PooledSandbox, SandboxBuilder, SandboxPool, SnapshotPoint};

/// What makes a file the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(path: &Path) -> Option<Identity> {
        let m = std::fs::metadata(path).ok()?;
        m.is_file().then(|| Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// What [`Warm::take`] found.
pub(crate) enum Taken {
    Warm(Box<PooledSandbox>),
    /// A cold run; with a program to snapshot after it.
    Cold(Option<Pending>),
}

/// A program whose snapshot is to be made ([`Warm::prepare`]).
pub(crate) struct Pending {
    program: Vec<u8>,
    identity: Identity,
}

enum Slot {
    /// Its snapshot and pool are being made.
    Making,
    Ready(SandboxPool),
    /// It could not be snapshotted (its runs fail, or it changed).
    Failed,
}

struct Entry {
    identity: Identity,
    slot: Slot,
    used: Instant,
}

/// The warm programs of one server (`Send + Sync`).
pub(crate) struct Warm {
    builder: SandboxBuilder,
    per_program: usize,
    max_programs: usize,
    programs: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl Warm {
    /// `per_program` clones kept per program (0: none, every run cold).
    pub(crate) fn new(builder: SandboxBuilder, per_program: usize, max_programs: usize) -> Arc<Warm> {
        Arc::new(Warm { builder, per_program, max_programs, programs: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        self.programs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready clone of `program`'s entry snapshot, if the file is the one
    /// snapshotted and a clone is free. Otherwise the run is cold; for a
    /// program named by a path and not yet being made, [`Taken::Cold`]
    /// carries what [`Warm::prepare`] needs to make its snapshot for the
    /// runs after this one.
    pub(crate) fn take(&self, program: &[u8]) -> Taken {
        if self.per_program == 0 || !program.contains(&b'/') {
            return Taken::Cold(None);
        }
        let Some(identity) = Identity::of(Path::new(OsStr::from_bytes(program))) else { return Taken::Cold(None) };
        let mut programs = self.lock();
        if let Some(entry) = programs.get_mut(program) {
            if entry.identity == identity {
                entry.used = Instant::now();
                return match &entry.slot {
                    Slot::Ready(pool) => pool.try_get().map_or(Taken::Cold(None), |sb| Taken::Warm(Box::new(sb))),
                    Slot::Making | Slot::Failed => Taken::Cold(None),
                };
            }
            if matches!(entry.slot, Slot::Making) {
                // Changed while being made: that one will not be kept.
                return Taken::Cold(None);
            }
        }
        programs.insert(program.to_vec(), Entry { identity, slot: Slot::Making, used: Instant::now() });
        let evicted = self.evict(&mut programs);
        drop(programs);
        // Their pools' VMs are torn down outside the lock.
        drop(evicted);
        Taken::Cold(Some(Pending { program: program.to_vec(), identity }))
    }

    /// Makes a program's snapshot and pool in the background (called once
    /// the cold run that asked for it has ended: the two would share the
    /// CPUs).
    pub(crate) fn prepare(self: &Arc<Warm>, pending: Pending) {
        let warm = self.clone();
        let key = pending.program.clone();
        let spawned = std::thread::Builder::new()
            .name("hvsandbox-warm".into())
            .spawn(move || warm.make(&pending.program, pending.identity));
        if spawned.is_err() {
            // Tried again at its next run.
            self.lock().remove(&key);
        }
    }

    /// Takes `program`'s entry snapshot and makes its pool.
    fn make(&self, program: &[u8], identity: Identity) {
        let path = Path::new(OsStr::from_bytes(program));
        let made = self.builder.clone().build().and_then(|mut sb| {
            let snap = sb.snapshot(&Command::new(path), SnapshotPoint::Entry)?;
            SandboxPool::new(self.builder.clone(), &snap, self.per_program)
        });
        let same = Identity::of(path) == Some(identity);
        let slot = match made {
            Ok(pool) if same => Slot::Ready(pool),
            _ => Slot::Failed,
        };
        let mut programs = self.lock();
        // Gone (evicted) or replaced by a newer file's: nothing to keep
        // (`slot` is dropped after the lock is let go).
        if let Some(entry) = programs.get_mut(program).filter(|e| e.identity == identity) {
            entry.slot = slot;
        }
    }

    /// Takes out the programs unused longest beyond `max_programs`.
    fn evict(&self, programs: &mut HashMap<Vec<u8>, Entry>) -> Vec<Entry> {
        let mut gone = Vec::new();
        while programs.len() > self.max_programs.max(1) {
            let Some(oldest) = programs.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else { break };
            gone.extend(programs.remove(&oldest));
        }
        gone
    }
}
