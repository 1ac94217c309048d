//! The `hvsandbox` command: run a program in a KVM micro-VM.
//!
//! ```text
//! hvsandbox run [--memory 64M] [--timeout 2s] [--max-output 1M] [--max-input 256M] [--env K=V]...
//!               [--stats] [--mount HOST:GUEST]... [--file GUEST=HOSTPATH]... [--cwd PATH]
//!               [--collect GUEST_PATH... --collect-dir HOSTDIR] -- PROGRAM [ARGS...]
//! hvsandbox run --from-snapshot FILE [--mount HOST:GUEST]... [options] [-- ARGS...]
//! hvsandbox snapshot -o FILE [--at checkpoint|entry] [options] -- PROGRAM [ARGS...]
//! ```
//!
//! stdin is passed in (when it is not a terminal); stdout, stderr and the
//! exit status pass through (128 + signal when the program dies of one).
//! Errors print one line `hvsandbox: ...` and exit with a distinct code.
//!
//! stdin and the `--file` sources are read before the run, at most
//! `--max-input` bytes in all (more is an error, exit 125) and within the
//! `--timeout`, which covers reading them and the run together (exit 124).
//!
//! With `--from-snapshot`, the run's limits, environment, files and input
//! are the command line's. Memory, `--max-processes` and `--max-open-files`
//! are the snapshot's (its guest was booted with them): giving another
//! value is an error. The snapshot's mounts must be given again with
//! `--mount` at the same guest paths (the host directories may differ),
//! and no others: a snapshot file never makes the host open a directory
//! the command line did not name.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hvsandbox::{Command, Error, ErrorKind, Output, Sandbox, SandboxBuilder, SeccompMode, SnapshotPoint};
use serde::Serialize;

/// Exit code for a run that hit its timeout (as timeout(1)).
const EXIT_TIMEOUT: u8 = 124;
/// Exit code for bad usage, a bad configuration or KVM unavailable.
const EXIT_USAGE: u8 = 125;
/// Exit code for a program that cannot be run (as the shell's 126).
const EXIT_INVALID_PROGRAM: u8 = 126;
/// Exit code for a run cancelled by SIGINT/SIGTERM (as the shell's 130).
const EXIT_CANCELLED: u8 = 130;
/// Exit code when the program ran out of the sandbox's memory (as a shell
/// reports a process the OOM killer ended: 128 + SIGKILL).
const EXIT_MEMORY: u8 = 137;
/// Exit code when the output limit was exceeded with --fail-on-output-limit.
const EXIT_OUTPUT_LIMIT: u8 = 122;
/// Exit code when the vCPU thread's jail refused a system call.
const EXIT_JAIL: u8 = 123;
/// Exit code for a crash of the guest runtime or an internal error
/// (EX_SOFTWARE).
const EXIT_INTERNAL: u8 = 70;

#[derive(Parser, Debug)]
#[command(name = "hvsandbox", version, about = "Run untrusted Linux programs in KVM micro-VMs")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a Linux x86-64 program in a fresh micro-VM (or resume a snapshot).
    Run(RunArgs),
    /// Run a program up to its checkpoint (a read of
    /// /dev/hvsandbox/checkpoint) or, with --at entry or when it has none,
    /// to its first instruction, and save that snapshot to a file.
    Snapshot(SnapshotArgs),
}

#[derive(Args, Debug)]
struct SnapshotArgs {
    /// Where to write the snapshot.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
    /// Where to stop: checkpoint (falling back to entry if the program
    /// never reads the checkpoint) or entry.
    #[arg(long, value_enum, default_value_t = At::Checkpoint)]
    at: At,
    #[command(flatten)]
    run: RunArgs,
}

/// Where `hvsandbox snapshot` stops (see [`SnapshotArgs::at`]).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum At {
    Checkpoint,
    Entry,
}

/// `--seccomp`: the names of [`SeccompMode`] on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Seccomp {
    Enforce,
    Log,
    Off,
}

impl From<Seccomp> for SeccompMode {
    fn from(s: Seccomp) -> SeccompMode {
        match s {
            Seccomp::Enforce => SeccompMode::Enforce,
            Seccomp::Log => SeccompMode::Log,
            Seccomp::Off => SeccompMode::Disabled,
        }
    }
}

impl From<SeccompMode> for Seccomp {
    fn from(m: SeccompMode) -> Seccomp {
        match m {
            SeccompMode::Enforce => Seccomp::Enforce,
            SeccompMode::Log => Seccomp::Log,
            SeccompMode::Disabled => Seccomp::Off,
        }
    }
}

/// The help of an option whose default is the library's, or with
/// --from-snapshot the snapshot's.
fn guest_setting_help(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}; with --from-snapshot: the snapshot's]")
}

/// The options of `run`; `snapshot` takes them too, and those that
/// describe the sandbox or the program's inputs mean the same there (see
/// [`sandbox_builder`] and [`with_inputs`]).
#[derive(Args, Debug)]
struct RunArgs {
    #[arg(long, help = guest_setting_help(
        "Guest memory (e.g. 64M, 1G; a multiple of 2M)",
        Size(hvsandbox::DEFAULT_MEMORY_MIB << 20),
    ))]
    memory: Option<Size>,
    /// Wall-clock limit (e.g. 500ms, 2s, 1m), reading stdin and --file
    /// sources included.
    #[arg(long, default_value_t = Time(hvsandbox::DEFAULT_TIMEOUT))]
    timeout: Time,
    /// Cap on the input: stdin plus the --file contents (e.g. 256M).
    #[arg(long, default_value_t = Size(hvsandbox::DEFAULT_MAX_INPUT))]
    max_input: Size,
    /// Cap on each of stdout and stderr (e.g. 1M); the rest is dropped.
    #[arg(long, default_value_t = Size(hvsandbox::DEFAULT_MAX_OUTPUT as u64))]
    max_output: Size,
    /// Limit on the guest's CPU time (e.g. 500ms); default: none.
    #[arg(long)]
    cpu_time: Option<Time>,
    /// Fail (exit 122) instead of truncating output past --max-output.
    #[arg(long)]
    fail_on_output_limit: bool,
    #[arg(long, help = guest_setting_help("Most processes alive at once in the guest", hvsandbox::DEFAULT_MAX_PROCESSES))]
    max_processes: Option<u32>,
    #[arg(long, help = guest_setting_help("Most open files per guest process", hvsandbox::DEFAULT_MAX_OPEN_FILES))]
    max_open_files: Option<u32>,
    /// The vCPU thread's seccomp filter.
    #[arg(long, value_enum, default_value_t = Seccomp::from(SeccompMode::default()))]
    seccomp: Seccomp,
    /// Environment variable for the program: K=V, or K to pass the host's value.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<OsString>,
    /// Print the run statistics as one JSON line on stderr.
    #[arg(long)]
    stats: bool,
    /// Show a host directory read-only in the guest at GUEST (repeatable).
    #[arg(long = "mount", value_name = "HOST:GUEST")]
    mounts: Vec<OsString>,
    /// As --mount, but kernel filesystems (procfs, sysfs, ...) at or below HOST are shown too (repeatable).
    #[arg(long = "mount-kernel-fs", value_name = "HOST:GUEST")]
    kernel_fs_mounts: Vec<OsString>,
    /// Copy a host file into the guest at GUEST, keeping its permission bits (repeatable).
    #[arg(long = "file", value_name = "GUEST=HOSTPATH")]
    files: Vec<OsString>,
    /// The program's working directory in the guest (created if missing).
    #[arg(long, value_name = "PATH")]
    cwd: Option<String>,
    /// Bring back the files at or under this guest path (repeatable; needs --collect-dir).
    #[arg(long = "collect", value_name = "GUEST_PATH", requires = "collect_dir")]
    collect: Vec<String>,
    /// Where collected files are written: guest path /a/b.txt becomes HOSTDIR/a/b.txt.
    #[arg(long = "collect-dir", value_name = "HOSTDIR", requires = "collect")]
    collect_dir: Option<PathBuf>,
    /// Resume this snapshot file (from `hvsandbox snapshot`) instead of
    /// starting a program; the arguments after `--` are this run's. Give
    /// its mounts again with --mount (same guest paths).
    #[arg(long, value_name = "FILE")]
    from_snapshot: Option<PathBuf>,
    /// The program (a path on the host) and its arguments.
    #[arg(
        required_unless_present = "from_snapshot",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]"
    )]
    program: Vec<OsString>,
}

/// Parses a byte size: a number with an optional K/M/G suffix (binary units,
/// optional trailing `B`/`iB`).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower);
    let (digits, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        _ => (body, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("invalid size {s:?} (expected e.g. 64M, 1G, 4096)"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: a number (integer or decimal) with a unit ms, s, m or
/// h; a bare number means seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (expected e.g. 500ms, 2s, 1.5m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "us" => n / 1e6,
        other => return Err(format!("invalid duration unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is out of range"))
}

/// A byte size on the command line: read by [`parse_size`], shown in the
/// largest unit that holds it whole (`64M`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Size(u64);

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        parse_size(s).map(Size)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        match [(30, "G"), (20, "M"), (10, "K")].into_iter().find(|&(shift, _)| n != 0 && n.is_multiple_of(1 << shift)) {
            Some((shift, unit)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}"),
        }
    }
}

/// A duration on the command line: read by [`parse_duration`], shown in
/// the largest unit that holds it whole (`10s`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Time(Duration);

impl std::str::FromStr for Time {
    type Err = String;
    fn from_str(s: &str) -> Result<Time, String> {
        parse_duration(s).map(Time)
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

fn exit_code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Timeout => EXIT_TIMEOUT,
        ErrorKind::Cancelled => EXIT_CANCELLED,
        ErrorKind::InvalidProgram => EXIT_INVALID_PROGRAM,
        ErrorKind::InvalidConfig | ErrorKind::KvmUnavailable => EXIT_USAGE,
        ErrorKind::MemoryLimitExceeded => EXIT_MEMORY,
        ErrorKind::OutputLimitExceeded => EXIT_OUTPUT_LIMIT,
        ErrorKind::JailViolation => EXIT_JAIL,
        ErrorKind::SnapshotInvalid => EXIT_USAGE,
        _ => EXIT_INTERNAL,
    }
}

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
    stdout_bytes: usize,
    stderr_bytes: usize,
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

fn stats_json(out: &Output) -> String {
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
        stdout_bytes: out.stdout.len(),
        stderr_bytes: out.stderr.len(),
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        files: out.files.len(),
        files_truncated: out.files_truncated,
        unknown_syscalls: &s.unknown_syscalls,
    };
    to_json(&line)
}

fn error_json(e: &Error) -> String {
    to_json(&ErrorLine { error: e.kind().code(), message: e.to_string() })
}

/// One line of JSON. (Serialising these structs does not fail: their map
/// keys are numbers, their strings UTF-8.)
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({ "error": ErrorKind::Internal.code(), "message": e.to_string() }).to_string()
    })
}

/// Where SIGINT/SIGTERM go: the handle of the run, once there is one.
#[derive(Default)]
struct Termination {
    requested: std::sync::atomic::AtomicBool,
    handle: std::sync::OnceLock<hvsandbox::InterruptHandle>,
}

impl Termination {
    fn request(&self) {
        self.requested.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.get() {
            h.kill();
        }
    }
    fn requested(&self) -> bool {
        self.requested.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread started after
/// (the sandbox's vCPU thread among them), and turns them into a kill of
/// the run, from a thread that waits for them.
fn forward_termination_signals() -> std::io::Result<std::sync::Arc<Termination>> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let term = std::sync::Arc::new(Termination::default());
    let t = term.clone();
    std::thread::Builder::new().name("hvsandbox-signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` and `sig` are valid for the call; the signals are
        // blocked in all threads, so sigwait receives them.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            t.request();
        }
    })?;
    Ok(term)
}

/// Splits `s` at the first `sep` (`last`: the last one).
fn split_arg(s: &OsString, sep: u8, last: bool) -> Option<(&[u8], &[u8])> {
    let b = s.as_bytes();
    let at = if last { b.iter().rposition(|&c| c == sep) } else { b.iter().position(|&c| c == sep) }?;
    Some((&b[..at], &b[at + 1..]))
}

/// The builder with the mounts of --mount and --mount-kernel-fs.
fn add_mounts(mut builder: SandboxBuilder, r: &RunArgs) -> Result<SandboxBuilder, Error> {
    let specs = r.mounts.iter().map(|s| (s, false)).chain(r.kernel_fs_mounts.iter().map(|s| (s, true)));
    for (spec, kernel_fs) in specs {
        let flag = if kernel_fs { "--mount-kernel-fs" } else { "--mount" };
        let (host, guest) = split_arg(spec, b':', true)
            .ok_or_else(|| Error::InvalidConfig(format!("{flag} {spec:?}: expected HOST:GUEST")))?;
        let (host, guest) = (std::ffi::OsStr::from_bytes(host), utf8_guest_path(guest, flag)?);
        builder = if kernel_fs { builder.mount_with_kernel_fs(host, guest) } else { builder.mount(host, guest) };
    }
    Ok(builder)
}

fn utf8_guest_path(bytes: &[u8], flag: &str) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidConfig(format!("{flag}: the guest path must be UTF-8")))
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Writes one collected file at `dir` + its guest path, one component at a
/// time relative to directory fds, never following a symlink, so neither
/// the name nor anything already in `dir` can place it outside `dir`.
fn write_collected_file(dir: &OwnedFd, guest_path: &str, data: &[u8]) -> std::io::Result<()> {
    let parts: Vec<&str> = guest_path.split('/').skip(1).collect();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "the name would escape the directory");
    let bad_part = |p: &&str| p.is_empty() || *p == "." || *p == ".." || p.contains('\0');
    if !guest_path.starts_with('/') || parts.iter().any(bad_part) {
        return Err(bad());
    }
    let Some((file, parents)) = parts.split_last() else { return Err(bad()) };
    let open_at = |at: &OwnedFd, name: &str, flags: i32, mode: libc::c_uint| -> std::io::Result<OwnedFd> {
        let name = CString::new(name).map_err(|_| bad())?;
        let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: `name` is NUL-terminated and `at` an open directory fd.
        let fd = unsafe { libc::openat(at.as_raw_fd(), name.as_ptr(), flags, mode) };
        if fd < 0 {
            return Err(last_os_error());
        }
        // SAFETY: openat returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let mut cur: Option<OwnedFd> = None;
    for part in parents {
        let at = cur.as_ref().unwrap_or(dir);
        let name = CString::new(*part).map_err(|_| bad())?;
        // SAFETY: `name` is NUL-terminated and `at` an open directory fd.
        if unsafe { libc::mkdirat(at.as_fd().as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
            let e = last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        cur = Some(open_at(at, part, libc::O_RDONLY | libc::O_DIRECTORY, 0)?);
    }
    let at = cur.as_ref().unwrap_or(dir);
    let fd = open_at(at, file, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    std::fs::File::from(fd).write_all(data)
}

/// Writes the collected files under `dir` (created if missing); returns
/// how many could not be written, after saying why on stderr.
fn write_collected(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> usize {
    let root = std::fs::create_dir_all(dir).and_then(|()| std::fs::File::open(dir)).map(OwnedFd::from);
    let root = match root {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("hvsandbox: cannot open --collect-dir {}: {e}", dir.display());
            return files.len().max(1);
        }
    };
    let mut failed = 0;
    for (path, data) in files {
        if let Err(e) = write_collected_file(&root, path, data) {
            eprintln!("hvsandbox: cannot write collected file {path}: {e}");
            failed += 1;
        }
    }
    failed
}

/// The sandbox the options describe, for `run` and `snapshot` alike. Its
/// timeout is all of --timeout: give it what reading the input left (see
/// [`with_inputs`]). Memory, --max-processes and --max-open-files are set
/// only where given: a snapshot's guest fixes them (see `build_from`).
fn sandbox_builder(args: &RunArgs) -> Result<SandboxBuilder, Error> {
    let max_output = usize::try_from(args.max_output.0)
        .map_err(|_| Error::InvalidConfig(format!("--max-output {} is too large", args.max_output.0)))?;
    let mut builder = Sandbox::builder()
        .timeout(args.timeout.0)
        .max_input(args.max_input.0)
        .max_output(max_output)
        .fail_on_output_limit(args.fail_on_output_limit)
        .seccomp(args.seccomp.into());
    if let Some(cpu) = args.cpu_time {
        builder = builder.cpu_time(cpu.0);
    }
    if let Some(memory) = args.memory {
        builder = builder.memory_bytes(memory.0);
    }
    if let Some(n) = args.max_processes {
        builder = builder.max_processes(n);
    }
    if let Some(n) = args.max_open_files {
        builder = builder.max_open_files(n);
    }
    add_mounts(builder, args)
}

fn timed_out(limit: Duration) -> Error {
    Error::Timeout { limit, cpu: false, partial: Box::default() }
}

/// Adds the run's environment, working directory and input to `command`:
/// the --file sources, then (with `stdin`) stdin unless it is a terminal,
/// read within --timeout and at most --max-input bytes in all. Returns it
/// with what is left of --timeout for the run.
fn with_inputs(mut command: Command, args: &RunArgs, stdin: bool) -> Result<(Command, Duration), Error> {
    let deadline = Instant::now() + args.timeout.0;
    for kv in &args.env {
        let bytes = kv.as_bytes();
        match bytes.iter().position(|&b| b == b'=') {
            Some(eq) => {
                command = command
                    .env(std::ffi::OsStr::from_bytes(&bytes[..eq]), std::ffi::OsStr::from_bytes(&bytes[eq + 1..]));
            }
            None => {
                if let Some(v) = std::env::var_os(kv) {
                    command = command.env(kv, v);
                }
            }
        }
    }
    let mut budget = Budget { left: args.max_input.0, max: args.max_input.0, deadline, timeout: args.timeout.0 };
    for spec in &args.files {
        let (guest, host) = split_arg(spec, b'=', false)
            .ok_or_else(|| Error::InvalidConfig(format!("--file {spec:?}: expected GUEST=HOSTPATH")))?;
        let guest = utf8_guest_path(guest, "--file")?;
        let host = Path::new(std::ffi::OsStr::from_bytes(host));
        let what = format!("--file {guest}");
        let cannot = |e: std::io::Error| Error::InvalidConfig(format!("{what}: cannot read {}: {e}", host.display()));
        // Non-blocking: a FIFO without a writer must not hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(host)
            .map_err(cannot)?;
        let mode = file.metadata().map_err(cannot)?.permissions().mode();
        let data = budget.read(file.as_fd(), &what).map_err(|e| e.or_else(cannot))?;
        command = command.file_with_mode(guest, data, mode & 0o777);
    }
    if let Some(cwd) = &args.cwd {
        command = command.cwd(cwd);
    }
    if stdin && !std::io::stdin().is_terminal() {
        let input = budget
            .read(std::io::stdin().as_fd(), "stdin")
            .map_err(|e| e.or_else(|e| Error::InvalidConfig(format!("cannot read stdin: {e}"))))?;
        command = command.stdin(input);
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(args.timeout.0));
    }
    Ok((command, left))
}

/// What is left of the input allowance: bytes and time.
struct Budget {
    left: u64,
    max: u64,
    deadline: Instant,
    timeout: Duration,
}

/// A failure to read an input: too large or late (`Limit`), or an I/O
/// error for the caller to describe.
enum ReadFailure {
    Limit(Error),
    Io(std::io::Error),
}

impl ReadFailure {
    fn or_else(self, io: impl FnOnce(std::io::Error) -> Error) -> Error {
        match self {
            ReadFailure::Limit(e) => e,
            ReadFailure::Io(e) => io(e),
        }
    }
}

impl Budget {
    /// Reads `fd` (`what`) to its end, taking its bytes from the budget;
    /// waits for data with poll(2), so a source that never ends or never
    /// writes stops at the deadline.
    fn read(&mut self, fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<Vec<u8>, ReadFailure> {
        let mut data = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadFailure::Limit(timed_out(self.timeout)));
            }
            let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one valid pollfd, owned by this frame, for the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready < 0 {
                match last_os_error() {
                    e if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    e => return Err(ReadFailure::Io(e)),
                }
            }
            if ready == 0 {
                continue;
            }
            if pfd.revents & libc::POLLNVAL != 0 {
                // A closed stdin: no input.
                break;
            }
            // One byte more than the budget tells "too large" from "just fits".
            let want = usize::try_from(self.left.saturating_add(1) - data.len() as u64).unwrap_or(usize::MAX);
            let want = want.min(buf.len());
            // SAFETY: read into a live buffer of at least `want` bytes.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
            if n < 0 {
                match last_os_error() {
                    e if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => {
                        continue
                    }
                    e => return Err(ReadFailure::Io(e)),
                }
            }
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n as usize]);
            if data.len() as u64 > self.left {
                return Err(ReadFailure::Limit(Error::InvalidConfig(format!(
                    "{what}: the input (stdin and files) is larger than max_input ({} bytes; see --max-input)",
                    self.max
                ))));
            }
        }
        self.left -= data.len() as u64;
        Ok(data)
    }
}

fn run(args: RunArgs) -> Result<u8, Error> {
    let builder = sandbox_builder(&args)?;
    let snapshot = match &args.from_snapshot {
        Some(path) => Some(hvsandbox::Snapshot::load(path)?),
        None => None,
    };
    let command = match &snapshot {
        Some(_) => Command::resume().args(args.program.iter()),
        None => {
            let mut program = args.program.iter();
            let path = program.next().ok_or_else(|| Error::InvalidConfig("no program given".into()))?;
            Command::new(path).args(program)
        }
    };
    let (mut command, timeout) = with_inputs(command, &args, true)?;
    for c in &args.collect {
        command = command.collect(c);
    }

    let termination = forward_termination_signals().map_err(|e| Error::Internal {
        context: "cannot set up signal forwarding".into(),
        source: Some(Box::new(e)),
    })?;
    let builder = builder.timeout(timeout);
    let mut sandbox = match &snapshot {
        Some(snap) => builder.build_from(snap)?,
        None => builder.build()?,
    };
    let _ = termination.handle.set(sandbox.interrupt_handle());
    let out =
        if termination.requested() { Err(Error::Cancelled { partial: Box::default() }) } else { sandbox.run(&command) };
    // A timeout is reported as the one given (the run had what reading
    // the input left of it).
    let out = out.map_err(|e| match e {
        Error::Timeout { cpu: false, partial, .. } => Error::Timeout { limit: args.timeout.0, cpu: false, partial },
        e => e,
    });
    // What the program wrote passes through, also when it was stopped.
    // Output that cannot be written (a closed pipe) is not its fault.
    let written = match &out {
        Ok(o) => Some((&o.stdout, &o.stderr)),
        Err(e) => e.partial_output().map(|p| (&p.stdout, &p.stderr)),
    };
    if let Some((stdout, stderr)) = written {
        let _ = std::io::stdout().write_all(stdout);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().write_all(stderr);
    }
    if args.stats {
        let line = match &out {
            Ok(o) => stats_json(o),
            Err(e) => error_json(e),
        };
        eprintln!("{line}");
    }
    let out = out?;
    if out.truncated() {
        eprintln!("hvsandbox: output truncated at {} bytes per stream", args.max_output.0);
    }
    if let Some(dir) = &args.collect_dir {
        if out.files_truncated {
            eprintln!("hvsandbox: some collected files were dropped or cut short at the collection caps");
        }
        if write_collected(dir, &out.files) > 0 {
            return Ok(EXIT_USAGE);
        }
    }
    Ok(u8::try_from(out.status.shell_code().clamp(0, 255)).unwrap_or(u8::MAX))
}

/// `hvsandbox snapshot`: run to the snapshot point and save the snapshot.
fn snapshot(args: SnapshotArgs) -> Result<u8, Error> {
    let r = &args.run;
    let builder = sandbox_builder(r)?;
    let mut program = r.program.iter();
    let path = program.next().ok_or_else(|| Error::InvalidConfig("no program given".into()))?;
    // stdin stays the caller's: the snapshot's runs get their own.
    let (command, timeout) = with_inputs(Command::new(path).args(program), r, false)?;
    let mut sandbox = builder.timeout(timeout).build()?;
    let snap = match args.at {
        At::Entry => sandbox.snapshot(&command, SnapshotPoint::Entry)?,
        At::Checkpoint => match sandbox.snapshot(&command, SnapshotPoint::Checkpoint) {
            Ok(s) => s,
            // No checkpoint: the program's entry it is.
            Err(e) if e.kind() == ErrorKind::SnapshotInvalid => sandbox.snapshot(&command, SnapshotPoint::Entry)?,
            Err(e) => return Err(e),
        },
    };
    snap.save(&args.output)?;
    eprintln!(
        "hvsandbox: snapshot at the program's {} saved to {} ({} KiB of {} MiB guest memory)",
        if snap.point() == SnapshotPoint::Entry { "entry" } else { "checkpoint" },
        args.output.display(),
        snap.resident_bytes() / 1024,
        snap.memory_bytes() >> 20
    );
    Ok(0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // One sandbox, one run: VMs made ahead for later sandboxes would only
    // compete with it.
    hvsandbox::set_blank_vms(0);
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Snapshot(args) => snapshot(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("hvsandbox: {e}");
            ExitCode::from(exit_code_for(e.kind()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("18446744073709551615G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2 days").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_are_shown_as_they_are_written() {
        assert_eq!(Size(hvsandbox::DEFAULT_MAX_INPUT).to_string(), "256M");
        assert_eq!(Size(hvsandbox::DEFAULT_MAX_OUTPUT as u64).to_string(), "1M");
        assert_eq!(Size(1 << 30).to_string(), "1G");
        assert_eq!(Size(3 << 10).to_string(), "3K");
        assert_eq!((Size(4097).to_string(), Size(0).to_string()), ("4097".into(), "0".into()));
        assert_eq!(Time(hvsandbox::DEFAULT_TIMEOUT).to_string(), "10s");
        assert_eq!(Time(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Time(Duration::from_micros(7)).to_string(), "7us");
        for text in ["256M", "1M", "1G", "3K", "4097", "0"] {
            assert_eq!(text.parse::<Size>().map(|s| s.to_string()), Ok(text.to_string()));
        }
        for text in ["10s", "1500ms", "7us"] {
            assert_eq!(text.parse::<Time>().map(|t| t.to_string()), Ok(text.to_string()));
        }
    }

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

    #[test]
    fn collected_files_stay_inside_the_collect_dir() {
        let base = std::env::temp_dir().join(format!("hvsandbox-cli-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("out");
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), dir.join("link")).unwrap();
        let files: BTreeMap<String, Vec<u8>> = [
            ("/tmp/o.txt", "ok"),
            ("/a/b/c.txt", "deep"),
            ("/../escape.txt", "no"),
            ("/a/../../escape2.txt", "no"),
            ("relative.txt", "no"),
            ("/link/through-symlink.txt", "no"),
            ("/link", "no"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(write_collected(&dir, &files), 5);
        assert_eq!(std::fs::read(dir.join("tmp/o.txt")).unwrap(), b"ok");
        assert_eq!(std::fs::read(dir.join("a/b/c.txt")).unwrap(), b"deep");
        assert!(!base.join("escape.txt").exists() && !base.join("escape2.txt").exists());
        assert_eq!(std::fs::read_dir(base.join("elsewhere")).unwrap().count(), 0);
        assert!(std::fs::symlink_metadata(dir.join("link")).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn error_codes_are_distinct() {
        let codes = [
            exit_code_for(ErrorKind::Timeout),
            exit_code_for(ErrorKind::Cancelled),
            exit_code_for(ErrorKind::InvalidProgram),
            exit_code_for(ErrorKind::InvalidConfig),
            exit_code_for(ErrorKind::GuestCrashed),
            exit_code_for(ErrorKind::MemoryLimitExceeded),
            exit_code_for(ErrorKind::OutputLimitExceeded),
            exit_code_for(ErrorKind::JailViolation),
        ];
        let mut sorted = codes.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
    }
}
