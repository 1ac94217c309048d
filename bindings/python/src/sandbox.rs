//! `Command`, `Sandbox`, `Snapshot` and `SandboxPool` for Python.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use hvsandbox::{InterruptHandle, PooledSandbox, SnapshotPoint};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::convert;
use crate::options::{self, Env, Files};
use crate::process::Process;
use crate::sigint::{self, Killer};

/// What to run: built once by the facade, then run, spawned or
/// snapshotted.
#[pyclass(frozen, module = "hvsandbox._native")]
pub struct Command {
    pub inner: hvsandbox::Command,
}

#[pymethods]
impl Command {
    #[new]
    #[pyo3(signature = (program, args, *, image=None, resume=false, env=None, env_clear=false, stdin=None,
                        files=None, cwd=None, collect=None, unlimited_streaming=false))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn new(
        program: PyBackedBytes,
        args: Vec<PyBackedBytes>,
        image: Option<PyBackedBytes>,
        resume: bool,
        env: Option<Env>,
        env_clear: bool,
        stdin: Option<PyBackedBytes>,
        files: Option<Files>,
        cwd: Option<String>,
        collect: Option<Vec<String>>,
        unlimited_streaming: bool,
    ) -> Command {
        let name = OsStr::from_bytes(&program);
        let mut c = match (resume, image) {
            (true, _) => hvsandbox::Command::resume(),
            (false, Some(image)) => hvsandbox::Command::from_image(name, &image[..]),
            (false, None) => hvsandbox::Command::new(name),
        };
        c = c.args(args.iter().map(|a| OsStr::from_bytes(a)));
        for (k, v) in env.iter().flatten() {
            c = c.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
        }
        if env_clear {
            c = c.env_clear();
        }
        if let Some(input) = stdin {
            c = c.stdin(&input[..]);
        }
        for (path, data, mode) in files.iter().flatten() {
            c = c.file_with_mode(path, &data[..], *mode);
        }
        if let Some(cwd) = cwd {
            c = c.cwd(cwd);
        }
        for path in collect.iter().flatten() {
            c = c.collect(path);
        }
        Command { inner: c.unlimited_streaming(unlimited_streaming) }
    }

    fn __repr__(&self) -> String {
        format!("Command({:?})", self.inner.program_name())
    }
}

/// A sandbox owned here or on loan from a pool.
enum Held {
    Own(hvsandbox::Sandbox),
    Pooled(PooledSandbox),
}

impl Held {
    fn sandbox(&mut self) -> &mut hvsandbox::Sandbox {
        match self {
            Held::Own(sb) => sb,
            Held::Pooled(sb) => sb,
        }
    }
}

/// Why a call on a sandbox did not run.
enum Failure {
    Closed,
    Failed(hvsandbox::Error),
}

impl From<hvsandbox::Error> for Failure {
    fn from(e: hvsandbox::Error) -> Failure {
        Failure::Failed(e)
    }
}

fn raise(py: Python<'_>, f: Failure) -> PyErr {
    match f {
        Failure::Closed => convert::closed(py),
        Failure::Failed(e) => convert::error(py, &e),
    }
}

/// A sandbox: runs one program at a time. Usable from any thread; calls
/// from several threads take turns.
#[pyclass(frozen, module = "hvsandbox._native")]
pub struct Sandbox {
    held: Mutex<Option<Held>>,
    interrupt: InterruptHandle,
    from_snapshot: bool,
}

impl Sandbox {
    fn new_held(held: Held, from_snapshot: bool) -> Sandbox {
        let mut held = held;
        let interrupt = held.sandbox().interrupt_handle();
        Sandbox { held: Mutex::new(Some(held)), interrupt, from_snapshot }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the sandbox with the GIL released; Ctrl-C on the main
    /// thread stops its run.
    fn with_sandbox<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut hvsandbox::Sandbox) -> Result<T, hvsandbox::Error> + Send,
    ) -> PyResult<T> {
        let armed = Arc::new(AtomicBool::new(false));
        let killer = || Killer::Run(self.interrupt.clone(), armed.clone());
        let result = sigint::guarded(py, killer, || {
            let mut held = self.lock();
            let sb = held.as_mut().ok_or(Failure::Closed)?.sandbox();
            armed.store(true, Ordering::SeqCst);
            let r = f(sb);
            armed.store(false, Ordering::SeqCst);
            r.map_err(Failure::from)
        })?;
        result.map_err(|f| raise(py, f))
    }
}

#[pymethods]
impl Sandbox {
    #[new]
    #[pyo3(signature = (options=None, snapshot=None))]
    fn new(
        py: Python<'_>,
        options: Option<&Bound<'_, PyDict>>,
        snapshot: Option<&Bound<'_, Snapshot>>,
    ) -> PyResult<Self> {
        let builder = options::builder(options)?;
        let snapshot = snapshot.map(|s| s.get().inner.clone());
        let from_snapshot = snapshot.is_some();
        let built = py.detach(|| match &snapshot {
            Some(s) => builder.build_from(s),
            None => builder.build(),
        });
        let sb = built.map_err(|e| convert::error(py, &e))?;
        Ok(Sandbox::new_held(Held::Own(sb), from_snapshot))
    }

    /// Runs `command` to completion: an output tuple (see `convert::output`).
    fn run<'py>(&self, py: Python<'py>, command: &Bound<'py, Command>) -> PyResult<Bound<'py, PyTuple>> {
        let cmd = &command.get().inner;
        let out = self.with_sandbox(py, |sb| sb.run(cmd))?;
        convert::output(py, &out)
    }

    /// Starts `command` and returns its process at once.
    fn spawn(&self, py: Python<'_>, command: &Bound<'_, Command>) -> PyResult<Process> {
        let cmd = &command.get().inner;
        let process = self.with_sandbox(py, |sb| sb.spawn(cmd))?;
        Ok(Process::new(process))
    }

    /// Runs `command` up to `point` ("entry" or "checkpoint") and returns
    /// the snapshot taken there.
    fn snapshot(&self, py: Python<'_>, command: &Bound<'_, Command>, point: &str) -> PyResult<Snapshot> {
        let point = match point {
            "entry" => SnapshotPoint::Entry,
            "checkpoint" => SnapshotPoint::Checkpoint,
            other => {
                return Err(PyValueError::new_err(format!("point must be 'entry' or 'checkpoint', got {other:?}")))
            }
        };
        let cmd = &command.get().inner;
        let inner = self.with_sandbox(py, |sb| sb.snapshot(cmd, point))?;
        Ok(Snapshot { inner })
    }

    /// Makes a snapshot sandbox's next VM now.
    fn warm(&self, py: Python<'_>) -> PyResult<()> {
        self.with_sandbox(py, |sb| sb.warm())
    }

    /// Stops the run in progress, from any thread (no-op when idle).
    fn kill(&self) {
        self.interrupt.kill();
    }

    /// Ends the sandbox (a process still running is killed; a pooled
    /// sandbox goes back to its pool). Waits for a call in progress.
    fn close(&self, py: Python<'_>) {
        self.interrupt.kill();
        py.detach(|| drop(self.lock().take()));
    }

    #[getter]
    fn closed(&self) -> bool {
        match self.held.try_lock() {
            Ok(held) => held.is_none(),
            Err(TryLockError::Poisoned(e)) => e.into_inner().is_none(),
            Err(TryLockError::WouldBlock) => false,
        }
    }

    /// Whether an earlier failure made the sandbox unusable.
    #[getter]
    fn poisoned(&self) -> bool {
        let mut held = match self.held.try_lock() {
            Ok(h) => h,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        held.as_mut().is_some_and(|h| h.sandbox().is_poisoned())
    }

    /// Whether a call or a spawned process is running.
    #[getter]
    fn busy(&self) -> bool {
        let mut held = match self.held.try_lock() {
            Ok(h) => h,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return true,
        };
        held.as_mut().is_some_and(|h| h.sandbox().is_busy())
    }

    #[getter(from_snapshot)]
    fn is_from_snapshot(&self) -> bool {
        self.from_snapshot
    }
}

/// A frozen guest sandboxes start from.
#[pyclass(frozen, module = "hvsandbox._native")]
pub struct Snapshot {
    pub inner: hvsandbox::Snapshot,
}

#[pymethods]
impl Snapshot {
    /// Writes the snapshot to a file.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path)).map_err(|e| convert::error(py, &e))
    }

    /// Reads a snapshot file written by `save`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Snapshot> {
        let inner = py.detach(|| hvsandbox::Snapshot::load(&path)).map_err(|e| convert::error(py, &e))?;
        Ok(Snapshot { inner })
    }

    /// Reads a snapshot from the bytes of a file written by `save`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: PyBackedBytes) -> PyResult<Snapshot> {
        let inner = py.detach(|| hvsandbox::Snapshot::from_bytes(&data)).map_err(|e| convert::error(py, &e))?;
        Ok(Snapshot { inner })
    }

    /// Whether VMs made from now on for this snapshot copy its memory
    /// instead of sharing it copy-on-write (see `hvsandbox::Snapshot::copy_memory`).
    #[pyo3(signature = (copy = true))]
    fn copy_memory(&self, py: Python<'_>, copy: bool) {
        py.detach(|| self.inner.copy_memory(copy));
    }

    /// "entry" or "checkpoint".
    #[getter]
    fn point(&self) -> &'static str {
        match self.inner.point() {
            SnapshotPoint::Entry => "entry",
            SnapshotPoint::Checkpoint => "checkpoint",
        }
    }

    #[getter]
    fn memory_bytes(&self) -> u64 {
        self.inner.memory_bytes()
    }

    #[getter]
    fn resident_bytes(&self) -> u64 {
        self.inner.resident_bytes()
    }

    #[getter]
    fn max_processes(&self) -> u32 {
        self.inner.max_processes()
    }

    #[getter]
    fn max_open_files(&self) -> u32 {
        self.inner.max_open_files()
    }

    /// The arguments (after argv[0]) its program was started with.
    #[getter]
    fn args<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner.args().map(|a| PyBytes::new(py, a.as_bytes())).collect()
    }

    /// The environment its program was started with, as (name, value).
    #[getter]
    fn env<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        self.inner.env().map(|(k, v)| (PyBytes::new(py, k.as_bytes()), PyBytes::new(py, v.as_bytes()))).collect()
    }

    /// Its guest's mounts as (host directory when taken, guest path).
    #[getter]
    fn mounts(&self) -> Vec<(PathBuf, String)> {
        self.inner.mounts().map(|(host, guest)| (host.to_path_buf(), guest.to_string())).collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Snapshot(point={:?}, memory_bytes={}, resident_bytes={})",
            self.point(),
            self.inner.memory_bytes(),
            self.inner.resident_bytes()
        )
    }
}

/// Warm sandboxes of one snapshot, refilled in the background.
#[pyclass(frozen, module = "hvsandbox._native")]
pub struct SandboxPool {
    pool: Mutex<Option<Arc<hvsandbox::SandboxPool>>>,
    size: usize,
}

impl SandboxPool {
    fn pool(&self) -> Option<Arc<hvsandbox::SandboxPool>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[pymethods]
impl SandboxPool {
    #[new]
    #[pyo3(signature = (snapshot, size, options=None))]
    fn new(
        py: Python<'_>,
        snapshot: &Bound<'_, Snapshot>,
        size: usize,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let builder = options::builder(options)?;
        let snap = &snapshot.get().inner;
        let pool =
            py.detach(|| hvsandbox::SandboxPool::new(builder, snap, size)).map_err(|e| convert::error(py, &e))?;
        Ok(SandboxPool { pool: Mutex::new(Some(Arc::new(pool))), size })
    }

    /// A warm sandbox on loan; it goes back when closed.
    fn get(&self, py: Python<'_>) -> PyResult<Sandbox> {
        let pool = self.pool().ok_or_else(|| convert::closed(py))?;
        let sb = py.detach(|| pool.get()).map_err(|e| convert::error(py, &e))?;
        Ok(Sandbox::new_held(Held::Pooled(sb), true))
    }

    /// Sandboxes ready now.
    #[getter]
    fn ready(&self) -> usize {
        self.pool().map_or(0, |p| p.ready())
    }

    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    #[getter]
    fn closed(&self) -> bool {
        self.pool().is_none()
    }

    /// Stops the pool's refilling and drops its ready sandboxes (those on
    /// loan are dropped when closed).
    fn close(&self, py: Python<'_>) {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(pool));
    }
}
