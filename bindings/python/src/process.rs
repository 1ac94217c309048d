//! A spawned process for Python. Its parts are locked apart — the
//! process (events, wait), each output reader, stdin — so a thread
//! blocked on one never holds up another (write stdin while a thread
//! waits for output), and `kill` takes no lock at all.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use hvsandbox::{OutputReader, ProcessEvent, ProcessKillHandle, ProcessStdin};
use pyo3::exceptions::{PyBrokenPipeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert;
use crate::sigint::{self, Killer};

/// Most bytes one `read` returns.
const MAX_READ: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A program running in a sandbox.
#[pyclass(frozen, module = "hvsandbox._native")]
pub struct Process {
    process: Mutex<hvsandbox::Process>,
    killer: ProcessKillHandle,
    stdin: Mutex<Option<ProcessStdin>>,
    /// stdin was written to or closed: `wait` leaves it to the caller.
    stdin_used: AtomicBool,
    stdout: Mutex<OutputReader>,
    stderr: Mutex<OutputReader>,
}

impl Process {
    pub fn new(mut p: hvsandbox::Process) -> Process {
        let stdin = p.take_stdin();
        Process {
            killer: p.kill_handle(),
            stdin: Mutex::new(stdin),
            stdin_used: AtomicBool::new(false),
            stdout: Mutex::new(p.stdout()),
            stderr: Mutex::new(p.stderr()),
            process: Mutex::new(p),
        }
    }

    fn guarded<T: Send>(&self, py: Python<'_>, call: impl FnOnce() -> T + Send) -> PyResult<T> {
        sigint::guarded(py, || Killer::Process(self.killer.clone()), call)
    }
}

/// An event as `(fd, bytes)`: 1 stdout, 2 stderr; `(0, None)` once the
/// process has ended.
type Event<'py> = (u8, Option<Bound<'py, PyBytes>>);

fn event(py: Python<'_>, ev: Option<ProcessEvent>) -> Event<'_> {
    match ev {
        Some(ProcessEvent::Stdout(b)) => (1, Some(PyBytes::new(py, &b))),
        Some(ProcessEvent::Stderr(b)) => (2, Some(PyBytes::new(py, &b))),
        Some(ProcessEvent::Exited(_)) | None => (0, None),
    }
}

#[pymethods]
impl Process {
    /// The next output chunk, waiting for it; `(0, None)` at the end (the
    /// result is `wait()`'s).
    fn next_event<'py>(&self, py: Python<'py>) -> PyResult<Event<'py>> {
        let ev = self.guarded(py, || lock(&self.process).next_event())?;
        Ok(event(py, ev))
    }

    /// Like `next_event` without waiting: None when nothing is there yet.
    fn try_next_event<'py>(&self, py: Python<'py>) -> Option<Event<'py>> {
        let mut p = match self.process.try_lock() {
            Ok(p) => p,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        match p.try_next_event() {
            None if !p.has_ended() => None,
            ev => Some(event(py, ev)),
        }
    }

    /// Up to `size` bytes of stream `fd` (1 or 2), waiting for some;
    /// b"" at the end.
    fn read<'py>(&self, py: Python<'py>, fd: u8, size: usize) -> PyResult<Bound<'py, PyBytes>> {
        let reader = match fd {
            1 => &self.stdout,
            2 => &self.stderr,
            _ => return Err(PyValueError::new_err(format!("fd must be 1 or 2, got {fd}"))),
        };
        let mut buf = vec![0u8; size.min(MAX_READ)];
        let n = self.guarded(py, || lock(reader).read(&mut buf))??;
        Ok(PyBytes::new(py, &buf[..n]))
    }

    /// Writes all of `data` to the program's stdin (waits while the guest
    /// is behind).
    fn write_stdin(&self, py: Python<'_>, data: PyBackedBytes) -> PyResult<()> {
        self.stdin_used.store(true, Ordering::SeqCst);
        let written = self.guarded(py, || match lock(&self.stdin).as_mut() {
            Some(w) => w.write_all(&data).map_err(|e| e.to_string()).map(|()| true),
            None => Ok(false),
        })?;
        match written {
            Ok(true) => Ok(()),
            Ok(false) => Err(PyValueError::new_err("write to a closed stdin")),
            Err(e) => Err(PyBrokenPipeError::new_err(e)),
        }
    }

    /// Ends the program's input.
    fn close_stdin(&self, py: Python<'_>) {
        self.stdin_used.store(true, Ordering::SeqCst);
        let stdin = py.detach(|| lock(&self.stdin).take());
        drop(stdin);
    }

    /// Waits for the end: the output tuple of the run (what events and
    /// reads did not take) or its error. Closes stdin first unless it was
    /// written to or closed.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let result = self.guarded(py, || {
            if !self.stdin_used.load(Ordering::SeqCst) {
                drop(lock(&self.stdin).take());
            }
            lock(&self.process).wait()
        })?;
        let out = result.map_err(|e| convert::error(py, &e))?;
        convert::output(py, &out)
    }

    /// `(code, signal)` once the run has ended, None before (or while
    /// another thread waits for it); raises the run's error.
    fn try_wait(&self, py: Python<'_>) -> PyResult<Option<(Option<i32>, Option<i32>)>> {
        let mut p = match self.process.try_lock() {
            Ok(p) => p,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        match p.try_wait() {
            Ok(status) => Ok(status.map(|s| (s.code(), s.signal()))),
            Err(e) => Err(convert::error(py, &e)),
        }
    }

    /// Stops the program now (from any thread); its run ends `Cancelled`.
    fn kill(&self) {
        self.killer.kill();
    }
}
