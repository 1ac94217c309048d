//! The `--stats` line: one JSON object on stderr.

use std::collections::BTreeMap;

use hvsandbox::{Error, ErrorKind, Output};
use serde::Serialize;

/// The `--stats` line of a run that ended: its field names and order are
/// the command's interface.
#[derive(Serialize)]
struct StatsLine<'a> {
    exit_code: Option<i32>,
    signal: Option<i32>,
    wall_us: u128,
    cpu_us: u128,
    exits: u64,
    syscalls: u64,
    memory_used: u64,
    page_faults: u64,
    processes: u64,
    stdout_bytes: u64,
    stderr_bytes: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    files: usize,
    files_truncated: bool,
    /// System call number (as a string key) -> how often.
    unknown_syscalls: &'a BTreeMap<u32, u64>,
}

/// The `--stats` line of a run that failed.
#[derive(Serialize)]
struct ErrorLine {
    error: &'static str,
    message: String,
}

pub(crate) fn stats_json(out: &Output) -> String {
    let s = &out.stats;
    let line = StatsLine {
        exit_code: out.status.code(),
        signal: out.status.signal(),
        wall_us: s.wall.as_micros(),
        cpu_us: s.cpu.as_micros(),
        exits: s.exits,
        syscalls: s.syscalls,
        memory_used: s.memory_used,
        page_faults: s.page_faults,
        processes: s.processes,
        stdout_bytes: out.stats.stdout_bytes,
        stderr_bytes: out.stats.stderr_bytes,
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        files: out.files.len(),
        files_truncated: out.files_truncated,
        unknown_syscalls: &s.unknown_syscalls,
    };
    to_json(&line)
}

pub(crate) fn error_json(e: &Error) -> String {
    to_json(&ErrorLine { error: e.kind().code(), message: e.to_string() })
}

/// One line of JSON. (Serialising these structs does not fail: their map
/// keys are numbers, their strings UTF-8.)
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({ "error": ErrorKind::Internal.code(), "message": e.to_string() }).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stats_and_errors_are_json() {
        let out = Output {
            status: hvsandbox::ExitStatus::Signal(11),
            stdout: b"a\"\n".to_vec(),
            stderr: Vec::new(),
            stdout_truncated: true,
            stderr_truncated: false,
            fault: None,
            files: BTreeMap::new(),
            files_truncated: false,
            stats: hvsandbox::Stats {
                wall: Duration::from_micros(1500),
                stdout_bytes: 3,
                unknown_syscalls: [(300, 2), (7, 1)].into_iter().collect(),
                ..Default::default()
            },
        };
        assert_eq!(
            stats_json(&out),
            "{\"exit_code\":null,\"signal\":11,\"wall_us\":1500,\"cpu_us\":0,\"exits\":0,\"syscalls\":0,\
             \"memory_used\":0,\"page_faults\":0,\"processes\":0,\"stdout_bytes\":3,\"stderr_bytes\":0,\
             \"stdout_truncated\":true,\"stderr_truncated\":false,\"files\":0,\"files_truncated\":false,\
             \"unknown_syscalls\":{\"7\":1,\"300\":2}}"
        );
        let e = Error::InvalidConfig("a \"b\"\n".into());
        assert_eq!(error_json(&e), format!("{{\"error\":\"INVALID_CONFIG\",\"message\":{:?}}}", e.to_string()));
    }
}
