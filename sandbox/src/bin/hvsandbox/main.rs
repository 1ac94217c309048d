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
//! stdin, stdout and stderr pass through live: output is written as the
//! program produces it, and stdin is read as the program reads it (a line
//! typed reaches it at once; never more than `--max-input` bytes ahead of
//! it; end of input when our stdin ends). The exit status passes through
//! (128 + signal when the program dies of one). Errors print one line
//! `hvsandbox: ...` and exit with a distinct code (with --stats, after the
//! stats line, which says the error's kind).
//!
//! `hvsandbox snapshot` takes the options of `run` and applies them to the
//! run that takes the snapshot (the guest's memory, limits, mounts, files,
//! working directory and environment are kept in it); it refuses --stats,
//! --collect and --from-snapshot.
//!
//! The `--file` sources are read before the run, at most `--max-input`
//! bytes in all (more is an error, exit 125) and within the `--timeout`,
//! which covers reading them and the run together, waiting for input
//! included (exit 124).
//!
//! A bare program name (no `/`) is looked up as execvp(3) does, on the
//! guest's `PATH` (--env PATH=..., or the usual directories) among the
//! --mount directories and --file files, as the guest sees them.
//!
//! With `--from-snapshot`, the run's limits, environment, files and input
//! are the command line's; an entry snapshot's program starts with the
//! snapshot's environment under --env, and with its arguments unless
//! `-- ARGS` gives others. Memory, `--max-processes` and `--max-open-files`
//! are the snapshot's (its guest was booted with them): giving another
//! value is an error. The snapshot's mounts must be given again with
//! `--mount` at the same guest paths (the host directories may differ),
//! and no others: a snapshot file never makes the host open a directory
//! the command line did not name.
//!
//! Here: the options, the sandbox they describe (one builder for `run`
//! and `snapshot`), and the two commands. Beside it: `inputs` (reading
//! stdin and the --file sources), `stats` (the --stats JSON line),
//! `collect` (writing collected files), `units` (sizes and durations),
//! `early_exit` (a run's status reaches the caller before its VM's
//! teardown).

mod client;
mod collect;
mod early_exit;
mod inputs;
mod live_io;
mod serve;
mod stats;
mod units;
mod warm;
mod watch;
mod wire;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hvsandbox::{Command, Error, ErrorKind, HugePages, Sandbox, SandboxBuilder, SeccompMode, SnapshotPoint};

use collect::write_collected;
use inputs::{stdin_is_dev_null, with_inputs};
use stats::{failure_stats_json, stats_json};
use units::{Size, Time};

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
    /// Serve runs to `hvsandbox run --server SOCKET` clients from VMs kept
    /// ready (warm clones of each program's entry snapshot after its
    /// first run); the options describe every run's sandbox.
    Serve(serve::ServeArgs),
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

/// `--huge-pages`: the names of [`HugePages`] on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Huge {
    Off,
    Prefer,
    Require,
}

impl From<Huge> for HugePages {
    fn from(h: Huge) -> HugePages {
        match h {
            Huge::Off => HugePages::Off,
            Huge::Prefer => HugePages::Prefer,
            Huge::Require => HugePages::Require,
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
/// The options that describe the sandbox and its limits: `run` and
/// `snapshot` take them for their one run, `serve` for all of its runs.
#[derive(Args, Debug)]
struct GuestArgs {
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
    /// Guest RAM from the host's hugetlb pool (vm.nr_hugepages): steadier and
    /// faster fresh memory on hosts that are VMs themselves; prefer falls back
    /// to ordinary memory when the pool is short, require fails (exit 125).
    #[arg(long, value_enum, default_value_t = Huge::Off)]
    huge_pages: Huge,
    /// Show a host directory read-only in the guest at GUEST (repeatable).
    #[arg(long = "mount", value_name = "HOST:GUEST")]
    mounts: Vec<OsString>,
    /// The host system as the guest's root: /usr, /bin, /sbin, /lib* read-only, a curated /etc
    /// (no accounts or keys), PATH/HOME/USER set (see the README).
    #[arg(long)]
    system: bool,
    /// As --mount, but kernel filesystems (procfs, sysfs, ...) at or below HOST are shown too (repeatable).
    #[arg(long = "mount-kernel-fs", value_name = "HOST:GUEST")]
    kernel_fs_mounts: Vec<OsString>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// Environment variable for the program: K=V, or K to pass the host's value.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<OsString>,
    /// Print the run statistics as one JSON line on stderr, also when the
    /// run fails (then with "error" and "message").
    #[arg(long)]
    stats: bool,
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
    /// Run in the `hvsandbox serve` listening at this socket (default:
    /// $HVSANDBOX_SERVER when set): its options set the sandbox; only
    /// --timeout (up to the server's) and --env are taken here.
    #[arg(long, value_name = "SOCKET")]
    server: Option<PathBuf>,
    /// Resume this snapshot file (from `hvsandbox snapshot`) instead of
    /// starting a program; the arguments after `--` are this run's (none
    /// given: an entry snapshot's program gets the snapshot's). Give its
    /// mounts again with --mount (same guest paths).
    #[arg(long, value_name = "FILE")]
    from_snapshot: Option<PathBuf>,
    /// The program (a path on the host, or a bare name looked up on the
    /// guest's PATH among the mounts and files) and its arguments.
    #[arg(
        required_unless_present = "from_snapshot",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]"
    )]
    program: Vec<OsString>,
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
/// (the sandbox's vCPU thread among them), and calls `on_signal` for each
/// from a thread that waits for them.
fn on_termination_signals(on_signal: impl Fn() + Send + 'static) -> std::io::Result<()> {
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
    std::thread::Builder::new().name("hvsandbox-signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` and `sig` are valid for the call; the signals are
        // blocked in all threads, so sigwait receives them.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            on_signal();
        }
    })?;
    Ok(())
}

/// Turns SIGINT and SIGTERM into a kill of the run (see
/// [`on_termination_signals`]).
fn forward_termination_signals() -> std::io::Result<std::sync::Arc<Termination>> {
    let term = std::sync::Arc::new(Termination::default());
    let t = term.clone();
    on_termination_signals(move || t.request())?;
    Ok(term)
}

/// Splits `s` at the first `sep` (`last`: the last one).
fn split_arg(s: &OsString, sep: u8, last: bool) -> Option<(&[u8], &[u8])> {
    let b = s.as_bytes();
    let at = if last { b.iter().rposition(|&c| c == sep) } else { b.iter().position(|&c| c == sep) }?;
    Some((&b[..at], &b[at + 1..]))
}

/// The builder with the mounts of --mount and --mount-kernel-fs.
fn add_mounts(mut builder: SandboxBuilder, r: &GuestArgs) -> Result<SandboxBuilder, Error> {
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

/// The sandbox the options describe, for `run` and `snapshot` alike. Its
/// timeout is all of --timeout: give it what reading the input left (see
/// [`with_inputs`]). Memory, --max-processes and --max-open-files are set
/// only where given: a snapshot's guest fixes them (see `build_from`).
fn sandbox_builder(args: &GuestArgs) -> Result<SandboxBuilder, Error> {
    let max_output = usize::try_from(args.max_output.0)
        .map_err(|_| Error::InvalidConfig(format!("--max-output {} is too large", args.max_output.0)))?;
    let mut builder = Sandbox::builder()
        .timeout(args.timeout.0)
        .max_input(args.max_input.0)
        .max_output(max_output)
        .fail_on_output_limit(args.fail_on_output_limit)
        .seccomp(args.seccomp.into())
        .huge_pages(args.huge_pages.into());
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
    if args.system {
        builder = builder.host_system();
    }
    add_mounts(builder, args)
}

/// `kept`: where the run's sandbox is left, for the caller to drop.
fn run(args: RunArgs, kept: &mut Option<Sandbox>) -> Result<u8, Error> {
    let builder = sandbox_builder(&args.guest)?;
    let snapshot = match &args.from_snapshot {
        Some(path) => {
            let snap = hvsandbox::Snapshot::load(path)?;
            // Run once: the VM gets its own copy of the snapshot's memory
            // (a fresh VM's run is faster so; see `Snapshot::copy_memory`).
            snap.copy_memory(true);
            Some(snap)
        }
        None => None,
    };
    let command = match &snapshot {
        Some(snap) => resume_command(snap, &args.program),
        None => {
            let mut program = args.program.iter();
            let path = program.next().ok_or_else(|| Error::InvalidConfig("no program given".into()))?;
            Command::new(path).args(program)
        }
    };
    // stdin is passed through live, not read ahead; /dev/null is no input.
    let (mut command, timeout) = with_inputs(command, &args, false)?;
    let live_stdin = !stdin_is_dev_null();
    if !live_stdin {
        command = command.stdin([]);
    }
    for c in &args.collect {
        command = command.collect(c);
    }

    let termination = forward_termination_signals().map_err(|e| Error::Internal {
        context: "cannot set up signal forwarding".into(),
        source: Some(std::sync::Arc::new(e)),
    })?;
    // One run: its VM is not put back for another.
    let builder = builder.timeout(timeout).reset_ahead(false);
    let mut sandbox = match &snapshot {
        Some(snap) => builder.build_from(snap)?,
        // Its VM is made while the program is opened and checked.
        None => builder.boot_ahead(true).build()?,
    };
    let _ = termination.handle.set(sandbox.interrupt_handle());
    let out = if termination.requested() {
        Err(Error::Cancelled { partial: Box::default() })
    } else {
        run_live(&mut sandbox, &command, live_stdin, args.guest.max_input.0)
    };
    // The run has ended: its VM is torn down after the process has exited
    // (`early_exit`), not before its output and status are given.
    *kept = Some(sandbox);
    let out = out.map_err(|e| timeout_as_given(e, &args.guest));
    if let (true, Ok(o)) = (args.stats, &out) {
        eprintln!("{}", stats_json(o));
    }
    let out = out?;
    if out.truncated() {
        eprintln!("hvsandbox: output truncated at {} bytes per stream", args.guest.max_output.0);
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

/// Runs `command` with stdin (with `live_stdin`), stdout and stderr
/// passed through as the program uses them: output is written out as it
/// is produced, and stdin is read only as far as the guest has room for
/// it (at most `max_input` bytes ahead of what the program has read).
/// Returns the run's result.
fn run_live(
    sandbox: &mut hvsandbox::Sandbox,
    command: &Command,
    live_stdin: bool,
    max_input: u64,
) -> Result<hvsandbox::Output, Error> {
    let mut process = sandbox.spawn(command)?;
    if let Some(stdin) = process.take_stdin().filter(|_| live_stdin) {
        let chunk = live_io::stdin_chunk(max_input);
        // Detached: it may wait in read(2) on our stdin after the run; the
        // command exits then anyway.
        let _ = std::thread::Builder::new()
            .name("hvsandbox-stdin".into())
            .spawn(move || live_io::pump_stdin(0, stdin, chunk, None));
    }
    // What the program wrote passes through, also when it was stopped.
    // Output that cannot be written (a closed pipe) is not its fault.
    // Locked per write, not held: the vCPU thread writes to stderr too
    // (HVSANDBOX_TRACE lines), and would wait for the lock forever.
    let pass = |to: &mut dyn Write, bytes: &[u8]| {
        let _ = to.write_all(bytes);
        let _ = to.flush();
    };
    live_io::pass_output(&mut process, |b| pass(&mut std::io::stdout(), b), |b| pass(&mut std::io::stderr(), b))
}

/// A timeout is reported as the one given (the run had what reading the
/// input left of it).
fn timeout_as_given(e: Error, args: &GuestArgs) -> Error {
    match e {
        Error::Timeout { cpu: false, partial, .. } => Error::Timeout { limit: args.timeout.0, cpu: false, partial },
        e => e,
    }
}

/// The command of a run from `snap`. An entry snapshot's program starts
/// as it was snapshotted: with the snapshot's environment (under --env)
/// and, unless `-- ARGS` gives others, its arguments. A checkpoint's
/// program has both already; ARGS are what its checkpoint read returns.
fn resume_command(snap: &hvsandbox::Snapshot, args: &[OsString]) -> Command {
    let mut command = Command::resume();
    if snap.point() == SnapshotPoint::Entry {
        command = snap.env().fold(command, |c, (k, v)| c.env(k, v));
        if args.is_empty() {
            return command.args(snap.args());
        }
    }
    command.args(args)
}

/// Refuses the `run` options that mean nothing to `snapshot` (every other
/// one applies to the run that takes the snapshot, and those that describe
/// the guest are kept in it).
fn check_snapshot_options(r: &RunArgs) -> Result<(), Error> {
    let refused = [
        (r.stats, "--stats (a run that ends in a snapshot has no statistics to print)"),
        (
            !r.collect.is_empty() || r.collect_dir.is_some(),
            "--collect and --collect-dir (nothing is collected from a snapshot)",
        ),
        (r.from_snapshot.is_some(), "--from-snapshot (a snapshot cannot be taken from a snapshot yet)"),
    ];
    match refused.iter().find(|(given, _)| *given) {
        Some((_, what)) => Err(Error::InvalidConfig(format!("`hvsandbox snapshot` does not take {what}"))),
        None => Ok(()),
    }
}

/// `hvsandbox snapshot`: run to the snapshot point and save the snapshot.
fn snapshot(args: SnapshotArgs) -> Result<u8, Error> {
    let r = &args.run;
    check_snapshot_options(r)?;
    let builder = sandbox_builder(&r.guest)?;
    let mut program = r.program.iter();
    let path = program.next().ok_or_else(|| Error::InvalidConfig("no program given".into()))?;
    // stdin stays the caller's: the snapshot's runs get their own.
    let (command, timeout) = with_inputs(Command::new(path).args(program), r, false)?;
    let mut sandbox = builder.timeout(timeout).build()?;
    let snap = match args.at {
        At::Entry => sandbox.snapshot(&command, SnapshotPoint::Entry),
        At::Checkpoint => match sandbox.snapshot(&command, SnapshotPoint::Checkpoint) {
            // No checkpoint: the program's entry it is.
            Err(e) if e.kind() == ErrorKind::SnapshotInvalid => sandbox.snapshot(&command, SnapshotPoint::Entry),
            taken => taken,
        },
    }
    .map_err(|e| timeout_as_given(e, &r.guest))?;
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

/// The server a run goes to: --server, else $HVSANDBOX_SERVER.
fn server_of(args: &RunArgs) -> Option<PathBuf> {
    args.server.clone().or_else(|| std::env::var_os(client::SERVER_ENV).filter(|s| !s.is_empty()).map(PathBuf::from))
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // A server run in its usual few words starts sooner without the
    // full parser (see `QuickRun`).
    if let Some(quick) = client::QuickRun::parse(&argv) {
        return match quick.run() {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("hvsandbox: {e}");
                ExitCode::from(exit_code_for(e.kind()))
            }
        };
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // One sandbox, one run: VMs made ahead for later sandboxes would only
    // compete with it, and the process's exit destroys its VM (no
    // background thread for VMs, and its jail, to start).
    hvsandbox::set_blank_vms(0);
    hvsandbox::set_background_vm_thread(false);
    // Nor clones made ahead: a snapshot's run need not measure the pages
    // it touches for their prefault passes.
    hvsandbox::set_prefault_limit(std::time::Duration::ZERO);
    // One malloc arena: the signal and vCPU threads would each reserve
    // their own (a 128 MiB mapping, trimmed) while the vCPU thread maps
    // guest memory; the threads here seldom allocate at the same time.
    // SAFETY: mallopt with a valid parameter, before other threads exist.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let started = std::time::Instant::now();
    // The run's sandbox, kept until its exit code is known and handed on
    // at the exit (see `early_exit`).
    let mut kept = None;
    let (stats, result) = match cli.command {
        Cmd::Run(args) => match server_of(&args) {
            Some(socket) => (false, client::run(&socket, &args)),
            None => (args.stats, run(args, &mut kept)),
        },
        Cmd::Snapshot(args) => (false, snapshot(args)),
        Cmd::Serve(args) => (false, serve::serve(args)),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            // A failed run's --stats line: what is known of it, and why.
            if stats {
                eprintln!("{}", failure_stats_json(&e, started.elapsed()));
            }
            eprintln!("hvsandbox: {e}");
            exit_code_for(e.kind())
        }
    };
    match kept {
        Some(sandbox) => early_exit::exit(code, sandbox),
        None => ExitCode::from(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
