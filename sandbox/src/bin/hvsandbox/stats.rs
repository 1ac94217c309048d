//! The `--stats` line: one JSON object on stderr.

use std::collections::BTreeMap;
use std::time::Duration;

use hvsandbox::{Error, ErrorKind, Output};
use serde::Serialize;

/// The `--stats` line: its field names and order are the command's
/// interface. A run that failed has the same fields, null but `wall_us`
/// (the time until the failure; the output it wrote so far has passed
/// through already), and two more at the end: `error` (the error's kind,
/// e.g. "TIMEOUT") and `message`.
#[derive(Default, Serialize)]
struct StatsLine<'a> {
    exit_code: Option<i32>,
    signal: Option<i32>,
    wall_us: u128,
    cpu_us: Option<u128>,
    exits: Option<u64>,
    syscalls: Option<u64>,
    memory_used: Option<u64>,
    page_faults: Option<u64>,
    processes: Option<u64>,
    rewritten_sites: Option<u64>,
    slow_syscalls: Option<u64>,
    stdout_bytes: Option<u64>,
    stderr_bytes: Option<u64>,
    stdout_truncated: Option<bool>,
    stderr_truncated: Option<bool>,
    files: Option<usize>,
    files_truncated: Option<bool>,
    /// System call number (as a string key) -> how often.
    unknown_syscalls: Option<&'a BTreeMap<u32, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

pub(crate) fn stats_json(out: &Output) -> String {
    let s = &out.stats;
    let line = StatsLine {
        exit_code: out.status.code(),
        signal: out.status.signal(),
        wall_us: s.wall.as_micros(),
        cpu_us: Some(s.cpu.as_micros()),
        exits: Some(s.exits),
        syscalls: Some(s.syscalls),
        memory_used: Some(s.memory_used),
        page_faults: Some(s.page_faults),
        processes: Some(s.processes),
        rewritten_sites: Some(s.rewritten_sites),
        slow_syscalls: Some(s.slow_syscalls),
        stdout_bytes: Some(out.stats.stdout_bytes),
        stderr_bytes: Some(out.stats.stderr_bytes),
        stdout_truncated: Some(out.stdout_truncated),
        stderr_truncated: Some(out.stderr_truncated),
        files: Some(out.files.len()),
        files_truncated: Some(out.files_truncated),
        unknown_syscalls: Some(&s.unknown_syscalls),
        error: None,
        message: None,
    };
    to_json(&line)
}

/// The `--stats` line of a run that failed with `e` after `wall`.
pub(crate) fn failure_stats_json(e: &Error, wall: Duration) -> String {
    to_json(&StatsLine {
        wall_us: wall.as_micros(),
        error: Some(e.kind().code()),
        message: Some(e.to_string()),
        ..StatsLine::default()
    })
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
             \"memory_used\":0,\"page_faults\":0,\"processes\":0,\"rewritten_sites\":0,\"slow_syscalls\":0,\"stdout_bytes\":3,\"stderr_bytes\":0,\
             \"stdout_truncated\":true,\"stderr_truncated\":false,\"files\":0,\"files_truncated\":false,\
             \"unknown_syscalls\":{\"7\":1,\"300\":2}}"
        );
        let e = Error::InvalidConfig("a \"b\"\n".into());
        let nulls = "\"cpu_us\":null,\"exits\":null,\"syscalls\":null,\"memory_used\":null,\"page_faults\":null,\
                     \"processes\":null,\"rewritten_sites\":null,\"slow_syscalls\":null";
        assert_eq!(
            failure_stats_json(&e, Duration::from_micros(7)),
            format!(
                "{{\"exit_code\":null,\"signal\":null,\"wall_us\":7,{nulls},\"stdout_bytes\":null,\"stderr_bytes\":null,\
                 \"stdout_truncated\":null,\"stderr_truncated\":null,\"files\":null,\"files_truncated\":null,\
                 \"unknown_syscalls\":null,\"error\":\"INVALID_CONFIG\",\"message\":{:?}}}",
                e.to_string()
            )
        );
    }
}
