//! `hvsandbox._native`: the Rust side of the Python package. A thin layer
//! over the `hvsandbox` crate; the Python facade (`python/hvsandbox`)
//! gives it its Python shape (arguments, results, exception classes).
//!
//! Every blocking call releases the GIL (`Python::detach`); every class is
//! `Send + Sync` (a `Mutex` around what the Rust API takes `&mut`), so
//! objects work from any thread, and kills never wait for the lock a
//! blocking call holds (they go through an `InterruptHandle` or a
//! `ProcessKillHandle`).

mod convert;
mod options;
mod process;
mod sandbox;
mod sigint;

use pyo3::prelude::*;

/// The module's contents.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<sandbox::Command>()?;
    m.add_class::<sandbox::Sandbox>()?;
    m.add_class::<sandbox::Snapshot>()?;
    m.add_class::<sandbox::SandboxPool>()?;
    m.add_class::<process::Process>()?;
    m.add_class::<convert::Stats>()?;
    m.add_class::<convert::FaultInfo>()?;
    m.add_function(wrap_pyfunction!(convert::set_error_factory, m)?)?;
    m.add_function(wrap_pyfunction!(set_blank_vms, m)?)?;
    m.add("DEFAULT_MEMORY", hvsandbox::DEFAULT_MEMORY_MIB << 20)?;
    m.add("DEFAULT_TIMEOUT", hvsandbox::DEFAULT_TIMEOUT.as_secs_f64())?;
    m.add("DEFAULT_MAX_OUTPUT", hvsandbox::DEFAULT_MAX_OUTPUT)?;
    m.add("DEFAULT_MAX_INPUT", hvsandbox::DEFAULT_MAX_INPUT)?;
    m.add("DEFAULT_MAX_PROCESSES", hvsandbox::DEFAULT_MAX_PROCESSES)?;
    m.add("DEFAULT_MAX_OPEN_FILES", hvsandbox::DEFAULT_MAX_OPEN_FILES)?;
    m.add("DEFAULT_MAX_COLLECT_BYTES", hvsandbox::DEFAULT_MAX_COLLECT_BYTES)?;
    m.add("DEFAULT_MAX_COLLECT_FILES", hvsandbox::DEFAULT_MAX_COLLECT_FILES)?;
    m.add("DEFAULT_FILE_MODE", hvsandbox::DEFAULT_FILE_MODE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// How many VMs made ahead the process-wide pool keeps per kind (0: none).
#[pyfunction]
fn set_blank_vms(n: usize) {
    hvsandbox::set_blank_vms(n);
}
