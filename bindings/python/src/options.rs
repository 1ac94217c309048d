//! A sandbox's settings from Python: the facade passes a dict of
//! normalised values (bytes as `int`, durations as `float` seconds, env as
//! `(bytes, bytes)` pairs, ...); each key maps to one `SandboxBuilder`
//! setting. Wrong types raise `TypeError`, values out of range `ValueError`
//! (or the Rust API's `InvalidConfig` when the sandbox is built).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use hvsandbox::{HugePages, SandboxBuilder, SeccompMode};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyDict;

/// Longest duration accepted (a deadline past it would not fit the clock).
const MAX_SECONDS: f64 = (1u64 << 32) as f64;

/// A duration given in seconds.
pub fn duration(what: &str, seconds: f64) -> PyResult<Duration> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_SECONDS {
        return Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds up to {MAX_SECONDS}, got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Environment pairs as given to the builder or a command.
pub type Env = Vec<(PyBackedBytes, PyBackedBytes)>;
/// Files as `(guest path, contents, mode)`.
pub type Files = Vec<(String, PyBackedBytes, u32)>;

/// Builds the builder the dict `options` describes.
pub fn builder(options: Option<&Bound<'_, PyDict>>) -> PyResult<SandboxBuilder> {
    let mut b = SandboxBuilder::default();
    let Some(options) = options else { return Ok(b) };
    for (key, value) in options.iter() {
        let key: String = key.extract().map_err(|_| PyTypeError::new_err("option names must be str"))?;
        if value.is_none() {
            continue;
        }
        b = match key.as_str() {
            "memory" => b.memory_bytes(get(&key, &value)?),
            "timeout" => b.timeout(duration("timeout", get(&key, &value)?)?),
            "cpu_time" => b.cpu_time(duration("cpu_time", get(&key, &value)?)?),
            "max_output" => b.max_output(get(&key, &value)?),
            "fail_on_output_limit" => b.fail_on_output_limit(get(&key, &value)?),
            "env" => {
                let env: Env = get(&key, &value)?;
                env.iter().fold(b, |b, (k, v)| b.env(OsStr::from_bytes(k), OsStr::from_bytes(v)))
            }
            "mounts" => {
                let mounts: Vec<(PathBuf, String, bool)> = get(&key, &value)?;
                mounts.into_iter().fold(b, |b, (host, guest, kernel_fs)| {
                    if kernel_fs {
                        b.mount_with_kernel_fs(host, guest)
                    } else {
                        b.mount(host, guest)
                    }
                })
            }
            "files" => {
                let files: Files = get(&key, &value)?;
                files.iter().fold(b, |b, (path, data, mode)| b.file_with_mode(path, &data[..], *mode))
            }
            "cwd" => b.cwd(get::<String>(&key, &value)?),
            "seccomp" => b.seccomp(seccomp(&get::<String>(&key, &value)?)?),
            "huge_pages" => b.huge_pages(huge_pages(&get::<String>(&key, &value)?)?),
            "max_processes" => b.max_processes(get(&key, &value)?),
            "max_open_files" => b.max_open_files(get(&key, &value)?),
            "max_input" => b.max_input(get(&key, &value)?),
            "max_collect_bytes" => b.max_collect_bytes(get(&key, &value)?),
            "max_collect_files" => b.max_collect_files(get(&key, &value)?),
            other => return Err(PyTypeError::new_err(format!("unknown sandbox option {other:?}"))),
        };
    }
    Ok(b)
}

/// One option's value: a wrong type is a `TypeError`, an integer out of
/// the setting's range a `ValueError`.
fn get<'a, 'py, T>(key: &str, value: &'a Bound<'py, PyAny>) -> PyResult<T>
where
    T: FromPyObject<'a, 'py>,
    T::Error: Into<PyErr>,
{
    value.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        if e.is_instance_of::<PyOverflowError>(value.py()) {
            PyValueError::new_err(format!("option {key}: {value} is out of range"))
        } else {
            PyTypeError::new_err(format!("option {key}: {e}"))
        }
    })
}

fn seccomp(mode: &str) -> PyResult<SeccompMode> {
    match mode {
        "enforce" => Ok(SeccompMode::Enforce),
        "log" => Ok(SeccompMode::Log),
        "off" => Ok(SeccompMode::Disabled),
        other => Err(PyValueError::new_err(format!("seccomp must be 'enforce', 'log' or 'off', got {other:?}"))),
    }
}

fn huge_pages(mode: &str) -> PyResult<HugePages> {
    HugePages::parse(mode)
        .ok_or_else(|| PyValueError::new_err(format!("huge_pages must be 'off', 'prefer' or 'require', got {mode:?}")))
}
