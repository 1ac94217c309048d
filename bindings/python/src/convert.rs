//! Results and errors on their way to Python: an `Output` becomes a tuple
//! the facade turns into a `CompletedRun`; an `Error` becomes an instance
//! of the facade's exception class for its kind (made by the factory the
//! facade registers), carrying the partial output and the error's fields.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

/// Statistics of one run.
#[pyclass(frozen, get_all, module = "hvsandbox._native")]
#[derive(Clone, Debug)]
pub struct Stats {
    /// Wall time of the run, seconds (boot included).
    pub wall: f64,
    /// CPU time the vCPU thread used, seconds.
    pub cpu: f64,
    pub exits: u64,
    pub syscalls: u64,
    pub memory_used: u64,
    pub page_faults: u64,
    pub processes: u64,
    /// System-call sites the runtime rewrote to enter it by a jump.
    pub rewritten_sites: u64,
    /// System calls that took the hypervisor's slow path (not a rewritten
    /// site): all of them with rewriting off.
    pub slow_syscalls: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// System calls the runtime does not implement: number -> count.
    pub unknown_syscalls: BTreeMap<u32, u64>,
}

#[pymethods]
impl Stats {
    fn __repr__(&self) -> String {
        format!(
            "Stats(wall={:.6}, cpu={:.6}, exits={}, syscalls={}, memory_used={}, page_faults={}, processes={}, \
             rewritten_sites={}, slow_syscalls={}, stdout_bytes={}, stderr_bytes={})",
            self.wall,
            self.cpu,
            self.exits,
            self.syscalls,
            self.memory_used,
            self.page_faults,
            self.processes,
            self.rewritten_sites,
            self.slow_syscalls,
            self.stdout_bytes,
            self.stderr_bytes
        )
    }
}

/// Where a program faulted when a CPU exception ended it.
#[pyclass(frozen, get_all, module = "hvsandbox._native")]
#[derive(Clone, Debug)]
pub struct FaultInfo {
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
    pub address: Option<u64>,
}

#[pymethods]
impl FaultInfo {
    fn __repr__(&self) -> String {
        let address = self.address.map_or("None".to_string(), |a| format!("{a:#x}"));
        format!(
            "FaultInfo(vector={}, error_code={:#x}, rip={:#x}, address={address})",
            self.vector, self.error_code, self.rip
        )
    }
}

fn stats(s: &hvsandbox::Stats) -> Stats {
    Stats {
        wall: s.wall.as_secs_f64(),
        cpu: s.cpu.as_secs_f64(),
        exits: s.exits,
        syscalls: s.syscalls,
        memory_used: s.memory_used,
        page_faults: s.page_faults,
        processes: s.processes,
        rewritten_sites: s.rewritten_sites,
        slow_syscalls: s.slow_syscalls,
        stdout_bytes: s.stdout_bytes,
        stderr_bytes: s.stderr_bytes,
        unknown_syscalls: s.unknown_syscalls.clone(),
    }
}

/// An output as `(code, signal, stdout, stderr, stdout_truncated,
/// stderr_truncated, fault, files, files_truncated, stats)`.
pub fn output<'py>(py: Python<'py>, o: &hvsandbox::Output) -> PyResult<Bound<'py, PyTuple>> {
    let fault =
        o.fault.map(|f| FaultInfo { vector: f.vector, error_code: f.error_code, rip: f.rip, address: f.address });
    let files = PyDict::new(py);
    for (path, data) in &o.files {
        files.set_item(path, PyBytes::new(py, data))?;
    }
    let items: Vec<Bound<'py, PyAny>> = vec![
        o.status.code().into_pyobject(py)?,
        o.status.signal().into_pyobject(py)?,
        PyBytes::new(py, &o.stdout).into_any(),
        PyBytes::new(py, &o.stderr).into_any(),
        pybool(py, o.stdout_truncated),
        pybool(py, o.stderr_truncated),
        fault.into_pyobject(py)?.into_any(),
        files.into_any(),
        pybool(py, o.files_truncated),
        Bound::new(py, stats(&o.stats))?.into_any(),
    ];
    PyTuple::new(py, items)
}

fn pybool(py: Python<'_>, b: bool) -> Bound<'_, PyAny> {
    pyo3::types::PyBool::new(py, b).to_owned().into_any()
}

/// The facade's `make_error(code, message, info) -> BaseException`.
static ERROR_FACTORY: OnceLock<Py<PyAny>> = OnceLock::new();

/// Registers the function that makes the exception for an error (called
/// once, by the facade when it is imported).
#[pyfunction]
pub fn set_error_factory(factory: Py<PyAny>) {
    let _ = ERROR_FACTORY.set(factory);
}

/// The Python exception for `e`.
pub fn error(py: Python<'_>, e: &hvsandbox::Error) -> PyErr {
    let code = e.kind().code();
    let message = e.to_string();
    match make_error(py, code, &message, e) {
        Ok(err) => err,
        Err(failed) => failed,
    }
}

fn make_error(py: Python<'_>, code: &str, message: &str, e: &hvsandbox::Error) -> PyResult<PyErr> {
    let Some(factory) = ERROR_FACTORY.get() else {
        return Ok(PyRuntimeError::new_err(format!("{code}: {message}")));
    };
    let info = PyDict::new(py);
    if let Some(p) = e.partial_output() {
        info.set_item("stdout", PyBytes::new(py, &p.stdout))?;
        info.set_item("stderr", PyBytes::new(py, &p.stderr))?;
    }
    match e {
        hvsandbox::Error::Timeout { limit, cpu, .. } => {
            info.set_item("limit", limit.as_secs_f64())?;
            info.set_item("cpu", *cpu)?;
        }
        hvsandbox::Error::MemoryLimitExceeded { limit, .. } => info.set_item("limit", *limit)?,
        hvsandbox::Error::OutputLimitExceeded { stream, limit, .. } => {
            info.set_item("stream", *stream)?;
            info.set_item("limit", *limit)?;
        }
        hvsandbox::Error::InvalidProgram { program, reason } => {
            info.set_item("program", program)?;
            info.set_item("reason", reason)?;
        }
        hvsandbox::Error::JailViolation { syscall } => info.set_item("syscall", syscall)?,
        _ => {}
    }
    let exc = factory.bind(py).call1((code, message, info))?;
    Ok(PyErr::from_value(exc))
}

/// The exception for a call on a closed sandbox or pool.
pub fn closed(py: Python<'_>) -> PyErr {
    let message = "the sandbox is closed";
    let Some(factory) = ERROR_FACTORY.get() else {
        return PyRuntimeError::new_err(format!("SANDBOX_CLOSED: {message}"));
    };
    match factory.bind(py).call1(("SANDBOX_CLOSED", message, PyDict::new(py))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}
