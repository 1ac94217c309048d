//! The server's warm programs: after a program has run once, the server
//! takes its entry snapshot (the program loaded, before its first
//! instruction) and keeps a small pool of clones of it, each with its VM
//! made and its pages prefaulted. A later run of the same file starts
//! from one of them with its own argv and environment: what a cold run
//! would see, without the VM, the boot and the load.
//!
//! Which file a run would execute is asked anew at every run
//! ([`SandboxBuilder::locate_program`]: a path as the host names it, a
//! bare name looked up on the guest's `PATH` among the mounts): a program
//! is kept per `argv[0]` with its file's device, inode, size, mtime and
//! ctime, and a run from it is taken only while they are the same (a
//! rename over the file, a write to it or a chmod all change one of
//! them); otherwise the run is cold and a new snapshot is taken. A file
//! that changed while its snapshot was taken is not kept. At most
//! `max_programs` are kept; the one unused longest goes first. At most
//! [`MAKERS`] snapshots are made at once (each is a VM and a run); a
//! program that finds them all busy is tried again at its next run.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hvsandbox::{Command, PooledSandbox, ProgramFile, SandboxBuilder, SandboxPool, SnapshotPoint};

/// Most snapshots being made at once.
const MAKERS: usize = 2;

/// What [`Warm::take`] found.
pub(crate) enum Taken {
    Warm(Box<PooledSandbox>),
    /// A cold run; with a program to snapshot after it.
    Cold(Option<Box<Pending>>),
}

/// A program whose snapshot is to be made ([`Warm::prepare`]).
pub(crate) struct Pending {
    /// The program as the run named it, and the `PATH` it was looked up on.
    locate: Command,
    file: ProgramFile,
}

enum Slot {
    /// Its snapshot and pool are being made.
    Making,
    Ready(SandboxPool),
    /// It could not be snapshotted (its runs fail, or it changed).
    Failed,
}

struct Entry {
    file: ProgramFile,
    slot: Slot,
    used: Instant,
}

/// The warm programs of one server (`Send + Sync`).
pub(crate) struct Warm {
    builder: SandboxBuilder,
    per_program: usize,
    max_programs: usize,
    /// By `argv[0]`: the path given, or where a bare name was found.
    programs: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Snapshots being made now.
    making: AtomicUsize,
}

impl Warm {
    /// `per_program` clones kept per program (0: none, every run cold).
    pub(crate) fn new(builder: SandboxBuilder, per_program: usize, max_programs: usize) -> Arc<Warm> {
        Arc::new(Warm {
            builder,
            per_program,
            max_programs,
            programs: Mutex::new(HashMap::new()),
            making: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        self.programs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready clone of `program`'s entry snapshot (`env`: the run's
    /// `K=V`, whose `PATH` a bare name is looked up on), if the file it
    /// names is the one snapshotted and a clone is free. Otherwise the run
    /// is cold; for a program not yet being made, [`Taken::Cold`] carries
    /// what [`Warm::prepare`] needs to make its snapshot for the runs
    /// after this one.
    pub(crate) fn take(&self, program: &[u8], env: &[Vec<u8>]) -> Taken {
        if self.per_program == 0 {
            return Taken::Cold(None);
        }
        let mut locate = Command::new(OsStr::from_bytes(program));
        if let Some(path) = env.iter().rev().find_map(|kv| kv.strip_prefix(b"PATH=")) {
            locate = locate.env("PATH", OsStr::from_bytes(path));
        }
        // Not found, not a host file: its run says why.
        let Ok(file) = self.builder.locate_program(&locate) else { return Taken::Cold(None) };
        let key = file.argv0().as_bytes().to_vec();
        let mut programs = self.lock();
        if let Some(entry) = programs.get_mut(&key) {
            if entry.file == file {
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
        let replaced = programs.insert(key, Entry { file: file.clone(), slot: Slot::Making, used: Instant::now() });
        let evicted = (self.evict(&mut programs), replaced);
        drop(programs);
        // Their pools' VMs are torn down outside the lock.
        drop(evicted);
        Taken::Cold(Some(Box::new(Pending { locate, file })))
    }

    /// Makes a program's snapshot and pool in the background (called once
    /// the cold run that asked for it has ended: the two would share the
    /// CPUs).
    pub(crate) fn prepare(self: &Arc<Warm>, pending: Box<Pending>) {
        let key = pending.file.argv0().as_bytes().to_vec();
        let pending_file = pending.file.clone();
        if self.making.fetch_add(1, Ordering::SeqCst) >= MAKERS {
            self.making.fetch_sub(1, Ordering::SeqCst);
            // Tried again at its next run.
            self.forget(&key, &pending_file);
            return;
        }
        let warm = self.clone();
        let spawned = std::thread::Builder::new().name("hvsandbox-warm".into()).spawn(move || {
            warm.make(*pending);
            warm.making.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            self.making.fetch_sub(1, Ordering::SeqCst);
            self.forget(&key, &pending_file);
        }
    }

    /// Takes the program's entry snapshot and makes its pool.
    fn make(&self, Pending { locate, file }: Pending) {
        let made = self.builder.clone().build().and_then(|mut sb| {
            let snap = sb.snapshot(&locate, SnapshotPoint::Entry)?;
            let pool = SandboxPool::new(self.builder.clone(), &snap, self.per_program)?;
            warm_up(&pool);
            Ok(pool)
        });
        let same = self.builder.locate_program(&locate).is_ok_and(|now| now == file);
        let slot = match made {
            Ok(pool) if same => Slot::Ready(pool),
            _ => Slot::Failed,
        };
        let mut programs = self.lock();
        // Gone (evicted) or replaced by a newer file's: nothing to keep
        // (`slot` is dropped after the lock is let go).
        if let Some(entry) = programs.get_mut(file.argv0().as_bytes()).filter(|e| e.file == file) {
            entry.slot = slot;
        }
    }

    /// Drops the entry of a snapshot that will not be made now (tried
    /// again at the program's next run), if it is still that one's.
    fn forget(&self, key: &[u8], file: &ProgramFile) {
        let mut programs = self.lock();
        if programs.get(key).is_some_and(|e| e.file == *file && matches!(e.slot, Slot::Making)) {
            programs.remove(key);
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

/// How long the warm-up run of a new program's snapshot may take.
const WARM_UP: Duration = Duration::from_secs(1);

/// One run from a new program's snapshot before any client's: the first
/// run from a snapshot measures the pages it touches, which the clones
/// made after it read ahead, and leaves its own clone with them
/// translated, so the next client's run is not the slow first one. The
/// program runs as the snapshot has it (no arguments, the server's
/// environment) with an empty stdin, inside the sandbox like any run;
/// its output is dropped, and it is stopped after [`WARM_UP`].
fn warm_up(pool: &SandboxPool) {
    let Ok(mut sb) = pool.get() else { return };
    let Ok(mut process) = sb.spawn(&Command::resume().stdin([])) else { return };
    let kill = process.kill_handle();
    let (ended, ends) = std::sync::mpsc::channel::<()>();
    let stopper = std::thread::Builder::new().name("hvsandbox-warm-up".into()).spawn(move || {
        if ends.recv_timeout(WARM_UP) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            kill.kill();
        }
    });
    let _ = process.wait();
    drop(ended);
    if let Ok(stopper) = stopper {
        let _ = stopper.join();
    }
}
