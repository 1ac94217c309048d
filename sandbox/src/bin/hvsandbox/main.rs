//! The `hvsandbox` command: run a program in a KVM micro-VM.
//!
//! ```text
//! hvsandbox run [--memory 64M] [--timeout 2s] [--max-output 1M] [--max-input 256M] [--env K=V]...
//!               [--stats] [--mount HOST:GUEST]... [--file GUEST=HOSTPATH]... [--cwd PATH]
//!               [--collect GUEST_PATH... --collect-dir HOSTDIR] -- PROGRAM [ARGS...]
//! hvsandbox run --from-snapshot FILE [--mount HOST:GUEST]... [options] [-- ARGS...]
//! hvsandbox snapshot -o FILE [--at checkpoint|entry] [options] -- PROGRAM [ARGS...]
//! hvsandbox serve --socket PATH [--warm 2] [--jobs 4] [options]
//! hvsandbox run --server PATH [--timeout 2s] [--env K=V]... [--stats] -- PROGRAM [ARGS...]
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
//! `hvsandbox serve` keeps VMs ready for `run --server` clients (see
//! `serve`): a client's run skips making a VM and, from a program's second
//! run on, booting and loading it.
//!
//! Here: the command line's top (`Cli`), `run` and `snapshot`. Beside
//! it: `options` (the options, the sandbox they describe: one builder
//! for `run`, `snapshot` and `serve`; exit codes), `signals` (SIGINT and
//! SIGTERM), `inputs` (reading stdin and the --file sources), `live_io`
//! (a live run's stdio), `stats` (the --stats JSON line), `collect`
//! (writing collected files), `units` (sizes and durations), `early_exit`
//! (a run's status reaches the caller before its VM's teardown); `serve`,
//! `warm` (its programs' snapshots and pools), `watch` (its thread that
//! ends runs whose client left or whose time is up), `client` (`run
//! --server`) and `wire` (what the two say to each other).

mod client;
mod collect;
mod early_exit;
mod inputs;
mod live_io;
mod options;
mod serve;
mod signals;
mod stats;
mod units;
mod warm;
mod watch;
mod wire;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hvsandbox::{Command, Error, ErrorKind, Sandbox, SnapshotPoint};

use collect::write_collected;
use inputs::{stdin_is_dev_null, with_inputs};
use options::{exit_code_for, sandbox_builder, At, GuestArgs, RunArgs, SnapshotArgs, EXIT_USAGE};
use signals::on_termination_signals;
use stats::{failure_stats_json, stats_json};

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

/// Turns SIGINT and SIGTERM into a kill of the run (see
/// [`on_termination_signals`]).
fn forward_termination_signals() -> std::io::Result<std::sync::Arc<Termination>> {
    let term = std::sync::Arc::new(Termination::default());
    let t = term.clone();
    on_termination_signals(move || t.request())?;
    Ok(term)
}

/// `kept`: where the run's sandbox is left, for the caller to drop.
fn run(args: RunArgs, kept: &mut Option<Sandbox>) -> Result<u8, Error> {
    let started = std::time::Instant::now();
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
    let (out, reader_gone) = if termination.requested() {
        (Err(Error::Cancelled { partial: Box::default() }), false)
    } else {
        run_live(&mut sandbox, &command, live_stdin, args.guest.max_input.0)
    };
    // The run has ended: its VM is torn down after the process has exited
    // (`early_exit`), not before its output and status are given.
    *kept = Some(sandbox);
    let out = out.map_err(|e| timeout_as_given(e, &args.guest));
    if let (Some(code), Err(e)) = (live_io::reader_gone_code(&out, reader_gone), &out) {
        if args.stats {
            eprintln!("{}", failure_stats_json(e, started.elapsed()));
        }
        return Ok(code);
    }
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
/// Returns the run's result, and whether a reader of its output went
/// away (see `live_io::pass_output`).
fn run_live(
    sandbox: &mut hvsandbox::Sandbox,
    command: &Command,
    live_stdin: bool,
    max_input: u64,
) -> (Result<hvsandbox::Output, Error>, bool) {
    let mut process = match sandbox.spawn(command) {
        Ok(p) => p,
        Err(e) => return (Err(e), false),
    };
    if let Some(stdin) = process.take_stdin().filter(|_| live_stdin) {
        let chunk = live_io::stdin_chunk(max_input);
        // Detached: it may wait in read(2) on our stdin after the run; the
        // command exits then anyway.
        let _ = std::thread::Builder::new()
            .name("hvsandbox-stdin".into())
            .spawn(move || live_io::pump_stdin(0, stdin, chunk, None));
    }
    // What the program wrote passes through, also when it was stopped.
    // A closed pipe ends the run (as SIGPIPE would); other errors writing
    // are not its fault. Locked per write, not held: the vCPU thread
    // writes to stderr too (HVSANDBOX_TRACE lines), and would wait for
    // the lock forever.
    let pass = |to: &mut dyn Write, bytes: &[u8]| {
        let written = to.write_all(bytes).and_then(|()| to.flush());
        !written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
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
    args.server.clone().or_else(client::server_from_env)
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // A server run in its usual few words starts sooner without the
    // full parser (see `QuickRun`).
    if let Some(quick) = client::QuickRun::parse(&argv) {
        let started = std::time::Instant::now();
        return match quick.run() {
            Ok(code) => ExitCode::from(code),
            // Not run (the server cannot be reached, or refused us): the
            // --stats line says so here, as the server would have.
            Err(e) => {
                if quick.stats() {
                    eprintln!("{}", failure_stats_json(&e, started.elapsed()));
                }
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
    // `serve` keeps the library's defaults: VMs made ahead, a background
    // thread for them, prefault passes for the clones of its pools.
    if !matches!(cli.command, Cmd::Serve(_)) {
        // One sandbox, one run: VMs made ahead for later sandboxes would
        // only compete with it, and the process's exit destroys its VM
        // (no background thread for VMs, and its jail, to start).
        hvsandbox::set_blank_vms(0);
        hvsandbox::set_background_vm_thread(false);
        // Nor clones made ahead: a snapshot's run need not measure the
        // pages it touches for their prefault passes.
        hvsandbox::set_prefault_limit(std::time::Duration::ZERO);
        // One malloc arena: the signal and vCPU threads would each reserve
        // their own (a 128 MiB mapping, trimmed) while the vCPU thread maps
        // guest memory; the threads here seldom allocate at the same time.
        // SAFETY: mallopt with a valid parameter, before other threads exist.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
    let started = std::time::Instant::now();
    // The run's sandbox, kept until its exit code is known and handed on
    // at the exit (see `early_exit`).
    let mut kept = None;
    let (stats, result) = match cli.command {
        Cmd::Run(args) => match server_of(&args) {
            // (A failed server run's --stats line comes from the server;
            // one that never reached it, from main below.)
            Some(socket) => (args.stats, client::run(&socket, &args)),
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
