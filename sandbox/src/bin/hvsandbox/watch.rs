//! One thread of the server watches all of its runs: it kills a run whose
//! client has gone (its connection closed) or whose deadline (the
//! client's timeout, shorter than the server's) has passed. One thread
//! for all, not one per run: starting and joining a thread costs more
//! here than a warm run's own work in the VM does. It looks again at
//! least every [`TICK`], so a new run is woken for only when its
//! deadline comes before that: a run's start does not wake a thread
//! that would compete with it for the CPU.
//!
//! A run is watched from [`Watcher::watch`] until its [`Watch`] is
//! dropped, which must happen before its connection is closed: the
//! thread acts only on runs still watched, by their id, so a descriptor
//! number reused by a later connection is never taken for an earlier
//! one's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hvsandbox::ProcessKillHandle;

/// What became of a run, as its watcher saw it.
pub(crate) struct Fate {
    /// 0 while it runs, then [`CLIENT_GONE`] or [`DEADLINE`] if the
    /// watcher ended it.
    why: AtomicU8,
    /// Set with [`CLIENT_GONE`]: its output has nowhere to go.
    give_up: AtomicBool,
    /// A reader of its output went away (a closed pipe) and it was ended.
    reader_gone: AtomicBool,
    /// Past this, output still not taken by the client is dropped (a
    /// reader that never reads must not hold a worker for ever).
    write_until: Instant,
}

/// How long after its deadline a run's output may still wait for its
/// reader.
const WRITE_GRACE: Duration = Duration::from_secs(5);

/// The longest the thread waits before looking again: how late a
/// client's leaving may be seen.
const TICK: Duration = Duration::from_millis(50);

pub(crate) const CLIENT_GONE: u8 = 1;
pub(crate) const DEADLINE: u8 = 2;

impl Fate {
    /// A run that ends by `deadline` at the latest.
    pub(crate) fn new(deadline: Instant) -> Fate {
        Fate {
            why: AtomicU8::new(0),
            give_up: AtomicBool::new(false),
            reader_gone: AtomicBool::new(false),
            write_until: deadline + WRITE_GRACE,
        }
    }

    pub(crate) fn why(&self) -> u8 {
        self.why.load(Ordering::SeqCst)
    }

    /// Marks the run as ended for a reader of its output that went away.
    pub(crate) fn reader_gone(&self) {
        self.reader_gone.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_reader_gone(&self) -> bool {
        self.reader_gone.load(Ordering::SeqCst)
    }

    /// Whether writing to the client should stop: it has gone, or its
    /// output waited too long.
    pub(crate) fn stop_writing(&self) -> bool {
        self.give_up.load(Ordering::SeqCst) || Instant::now() > self.write_until
    }
}

struct Watched {
    id: u64,
    conn: RawFd,
    deadline: Instant,
    kill: ProcessKillHandle,
    fate: Arc<Fate>,
}

struct Shared {
    runs: Mutex<Vec<Watched>>,
    /// Signalled when a run is added whose deadline comes before the
    /// thread's next look, so it polls anew.
    wake: EventFd,
    next_id: AtomicU64,
    /// When the thread looks next, in nanoseconds since `epoch`.
    next_look: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server's watching thread (it lives as long as the process).
pub(crate) struct Watcher {
    shared: Arc<Shared>,
}

/// A run being watched; dropping it stops the watching.
pub(crate) struct Watch<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.shared.lock().retain(|w| w.id != self.id);
    }
}

impl Watcher {
    pub(crate) fn start() -> std::io::Result<Watcher> {
        let wake = EventFd::new()?;
        let shared = Arc::new(Shared {
            runs: Mutex::new(Vec::new()),
            wake,
            next_id: AtomicU64::new(0),
            next_look: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let s = shared.clone();
        std::thread::Builder::new().name("hvsandbox-watch".into()).spawn(move || watch_all(&s))?;
        Ok(Watcher { shared })
    }

    /// Watches a run until the returned guard is dropped: `conn` is its
    /// client's connection (open until then), `kill` stops it.
    pub(crate) fn watch(&self, conn: RawFd, deadline: Instant, kill: ProcessKillHandle, fate: Arc<Fate>) -> Watch<'_> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.lock().push(Watched { id, conn, deadline, kill, fate });
        if since(self.shared.epoch, deadline) < self.shared.next_look.load(Ordering::SeqCst) {
            self.shared.wake.signal();
        }
        Watch { shared: &self.shared, id }
    }
}

/// The thread: poll every watched connection and the wake-up eventfd
/// until the nearest deadline; end the runs whose client has gone or
/// whose deadline has passed.
fn watch_all(shared: &Shared) {
    loop {
        let (ids, mut fds, nearest) = {
            let runs = shared.lock();
            let mut fds = vec![libc::pollfd { fd: shared.wake.fd(), events: libc::POLLIN, revents: 0 }];
            fds.extend(runs.iter().map(|w| libc::pollfd {
                fd: w.conn,
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            }));
            let look = runs.iter().map(|w| w.deadline).fold(Instant::now() + TICK, Instant::min);
            // Published under the lock: a run added after this sees it.
            shared.next_look.store(since(shared.epoch, look), Ordering::SeqCst);
            (runs.iter().map(|w| w.id).collect::<Vec<_>>(), fds, look)
        };
        // Rounded up, so a deadline is never polled for in a busy loop.
        let left = nearest.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a live array of `fds.len()` pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Not expected (the arguments are ours): try again shortly.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        if fds[0].revents != 0 {
            shared.wake.drain();
        }
        let gone: Vec<u64> =
            ids.iter().zip(&fds[1..]).filter(|(_, p)| n > 0 && p.revents != 0).map(|(id, _)| *id).collect();
        let now = Instant::now();
        let mut runs = shared.lock();
        runs.retain(|w| {
            let why = if gone.contains(&w.id) {
                w.fate.give_up.store(true, Ordering::SeqCst);
                CLIENT_GONE
            } else if w.deadline <= now {
                DEADLINE
            } else {
                return true;
            };
            w.fate.why.store(why, Ordering::SeqCst);
            w.kill.kill();
            false
        });
    }
}

/// Nanoseconds from `epoch` to `t` (0 before it).
fn since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// An eventfd (non-blocking), to wake a thread waiting in poll(2): the
/// watcher for a new run, a run's stdin copy to stop.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> std::io::Result<EventFd> {
        // SAFETY: eventfd(2) makes a new descriptor, owned here at once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes it readable (until drained).
    pub(crate) fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an eventfd takes an 8-byte write from a live buffer.
        unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Takes what was signalled.
    pub(crate) fn drain(&self) {
        let mut count = [0u8; 8];
        // SAFETY: an eventfd read of 8 bytes into a live buffer.
        unsafe { libc::read(self.fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}
