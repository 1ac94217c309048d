//! `hvsandbox serve --socket PATH [options]`: a long-lived process that
//! runs programs for `hvsandbox run --server PATH` clients. It keeps what
//! a one-shot `run` must make each time: VMs made ahead (the library's
//! process-wide blank VMs), and for each program named by a path a pool
//! of warm clones of its entry snapshot (`warm`). A client's run costs
//! the client's own start, a round trip on the socket and a run from a
//! ready VM.
//!
//! The options describe every run's sandbox, as `run`'s do one run's; a
//! client may shorten the timeout and add environment variables. Each
//! client's stdin, stdout and stderr come with its request: the program
//! reads and writes them live, and an error line is written to the
//! client's stderr. A client that goes away (its connection closes) has
//! its run killed; a client that stops reading its output has its run
//! end at the timeout, as any run, and what it left unread dropped a few
//! seconds later. A request the server cannot take (malformed, too
//! large, another version's) is told why on its stderr when it came
//! with one, and answered 125.
//!
//! Who may connect: the socket is made mode 0600, and each connection's
//! peer (SO_PEERCRED) must be this process's user or root; others are
//! closed at once. SIGINT or SIGTERM stops accepting, lets the runs in
//! progress end (each within its timeout), removes the socket and exits 0.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hvsandbox::{Command, Error, Output, PooledSandbox, Process, Sandbox, SandboxBuilder};

use super::inputs::is_dev_null;
use super::live_io::{self, pass_output, pump_stdin, stdin_chunk, write_out};
use super::options::{exit_code_for, sandbox_builder, GuestArgs, EXIT_USAGE};
use super::signals::on_termination_signals;
use super::stats::{failure_stats_json, stats_json};
use super::warm::{Pending, Taken, Warm};
use super::watch::{EventFd, Fate, Watcher, DEADLINE};
use super::wire::{self, Refused, Request, STATS};

/// How long a connected client has to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Where to listen: a unix socket made here (mode 0600); a stale one
    /// left by a server that is gone is replaced.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Warm clones kept per program (named by its path) after its first
    /// run; 0: every run is cold.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
    warm: u16,
    /// Most programs kept warm at once (the one unused longest goes).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    warm_programs: u16,
    /// Runs at once; more clients wait their turn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Print a line per run on stderr: the program, whether it ran in a
    /// warm clone or cold, its exit code and how long it took.
    #[arg(long)]
    log_runs: bool,
    #[command(flatten)]
    pub(crate) guest: GuestArgs,
}

struct Server {
    builder: SandboxBuilder,
    warm: Arc<Warm>,
    watcher: Watcher,
    /// The longest run a client may ask for: the server's --timeout.
    timeout: Duration,
    max_input: u64,
    max_output: u64,
    log_runs: bool,
}

/// `hvsandbox serve`: serves until SIGINT or SIGTERM. The socket is
/// removed when it stops, also when it could not start.
pub(crate) fn serve(args: ServeArgs) -> Result<u8, Error> {
    let listener = Arc::new(bind(&args.socket)?);
    let served = serve_on(&listener, &args);
    let _ = std::fs::remove_file(&args.socket);
    served
}

fn serve_on(listener: &Arc<UnixListener>, args: &ServeArgs) -> Result<u8, Error> {
    let stopping = Arc::new(AtomicBool::new(false));
    let (stop, shut) = (stopping.clone(), listener.clone());
    // Every thread made from here on (the library's among them) leaves
    // the two signals to this one.
    on_termination_signals(move || {
        stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) of the listener this closure holds open:
        // every accept(2) in it returns.
        unsafe { libc::shutdown(shut.as_raw_fd(), libc::SHUT_RDWR) };
    })
    .map_err(|e| internal("cannot set up signal handling", e))?;
    // A client's terminal may be ours too (a server started in the
    // background of the same shell): reading or writing it must not stop
    // the whole server (the read fails instead, the write goes through).
    // SAFETY: signal(2) setting two job-control signals to be ignored.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
    }
    let builder = sandbox_builder(&args.guest)?;
    // A bad configuration (no KVM, a mount that is not there) fails now,
    // not at the first client.
    drop(builder.clone().build()?);
    let server = Arc::new(Server {
        warm: Warm::new(builder.clone(), usize::from(args.warm), usize::from(args.warm_programs)),
        builder,
        watcher: Watcher::start().map_err(|e| internal("cannot start the server's watcher", e))?,
        timeout: args.guest.timeout.0,
        max_input: args.guest.max_input.0,
        max_output: args.guest.max_output.0,
        log_runs: args.log_runs,
    });
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
    // Each worker accepts its own clients: no handoff between threads
    // before a run starts.
    let workers: Vec<_> = (0..args.jobs)
        .map(|i| {
            let (server, listener, stopping) = (server.clone(), listener.clone(), stopping.clone());
            std::thread::Builder::new()
                .name(format!("hvsandbox-serve-{i}"))
                .spawn(move || serve_clients(&server, &listener, &stopping, me))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| internal("cannot start the server's threads", e))?;
    eprintln!("hvsandbox: serving on {}", args.socket.display());
    for w in workers {
        let _ = w.join();
    }
    Ok(0)
}

/// A worker: takes a client, serves it, and the next, until the server
/// stops (the signal thread shuts the listener down, which ends accept).
fn serve_clients(server: &Server, listener: &UnixListener, stopping: &AtomicBool, me: libc::uid_t) {
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                if peer_allowed(&conn, me) {
                    // A bug must not take a worker away for good: the
                    // client's connection closes and the worker goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.handle(conn)));
                }
            }
            // Out of descriptors, or stopping: look again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn internal(what: &str, e: std::io::Error) -> Error {
    Error::Internal { context: what.into(), source: Some(Arc::new(e)) }
}

/// Listens at `path`, made with mode 0600 (no other user may connect).
/// A socket there that nobody listens on is replaced; anything else there
/// is an error.
fn bind(path: &Path) -> Result<UnixListener, Error> {
    let taken = |why: &str| Error::InvalidConfig(format!("--socket {}: {why}", path.display()));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(taken("exists and is not a socket"));
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(taken("another server is listening there")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| taken(&format!("cannot replace a stale socket: {e}")))?;
            }
            Err(e) => return Err(taken(&e.to_string())),
        }
    }
    // SAFETY: umask(2) has no preconditions; no other thread exists yet
    // to make files meanwhile.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, putting the mask back.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| taken(&e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| taken(&e.to_string()))?;
    Ok(listener)
}

/// Whether the process at the other end runs as `me` or as root.
fn peer_allowed(conn: &UnixStream, me: libc::uid_t) -> bool {
    // SAFETY: an all-zero ucred is a valid value of this plain C struct.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    rc == 0 && (cred.uid == me || cred.uid == 0)
}

/// The sandbox a run used, dropped only after the client has its exit
/// code: putting a clone back or tearing a VM down is not the client's
/// wait.
#[derive(Default)]
struct Used {
    warm: Option<PooledSandbox>,
    cold: Option<Sandbox>,
    /// The program to snapshot once the client has its answer.
    pending: Option<Box<Pending>>,
}

impl Server {
    /// One client: its request, its run, its exit code back.
    fn handle(&self, conn: UnixStream) {
        let (request, [stdin, stdout, stderr]) = match wire::receive(&conn, REQUEST_WAIT) {
            Ok(taken) => taken,
            // Not a client of ours, or one too slow or of another version:
            // told why when its request came with its stderr.
            Err(Refused { why, stderr }) => {
                if let Some(fd) = stderr {
                    let line = format!("hvsandbox: the server refused the request: {why}\n");
                    let until = Instant::now() + REQUEST_WAIT;
                    write_out(fd.as_raw_fd(), line.as_bytes(), &|| Instant::now() > until);
                    let _ = (&conn).write_all(&[EXIT_USAGE]);
                }
                return;
            }
        };
        let _ = conn.set_read_timeout(None);
        // Our own non-blocking descriptions of the client's pipes and
        // terminals (see `nonblocking_copy`), where they can be had.
        let own = [(&stdin, false), (&stdout, true), (&stderr, true)]
            .map(|(fd, write)| live_io::nonblocking_copy(fd.as_raw_fd(), write));
        let pick = |i: usize, fd: &OwnedFd| own[i].as_ref().map_or(fd.as_raw_fd(), |o| o.as_raw_fd());
        let (stdin_fd, stdout_fd, stderr_fd) = (pick(0, &stdin), pick(1, &stdout), pick(2, &stderr));
        let started = Instant::now();
        let timeout = request.timeout.min(self.timeout);
        let fate = Arc::new(Fate::new(started + timeout));
        let mut used = Used::default();
        let result = self.run(&conn, &request, timeout, [stdin_fd, stdout_fd, stderr_fd], &fate, &mut used);
        let say_raw = |line: String| write_out(stderr_fd, format!("{line}\n").as_bytes(), &|| fate.stop_writing());
        let say = |line: String| say_raw(format!("hvsandbox: {line}"));
        let stats = request.flags & STATS != 0;
        let gone = live_io::reader_gone_code(&result, fate.is_reader_gone());
        let code = match (result, gone) {
            // Ended for a reader that went away: as SIGPIPE ends a program.
            (Err(e), Some(code)) => {
                if stats {
                    say_raw(failure_stats_json(&e, started.elapsed()));
                }
                code
            }
            (Ok(out), _) => {
                if stats {
                    say_raw(stats_json(&out));
                }
                if out.truncated() {
                    say(format!("output truncated at {} bytes per stream", self.max_output));
                }
                u8::try_from(out.status.shell_code().clamp(0, 255)).unwrap_or(u8::MAX)
            }
            (Err(e), None) => {
                if stats {
                    say_raw(failure_stats_json(&e, started.elapsed()));
                }
                say(e.to_string());
                exit_code_for(e.kind())
            }
        };
        // The client's stdio is let go first: a reader of its pipes sees
        // their end when the client exits, not when the sandbox is put back.
        drop((own, stdin, stdout, stderr));
        let _ = (&conn).write_all(&[code]);
        drop(conn);
        if self.log_runs {
            let program = request.argv.first().map(|p| String::from_utf8_lossy(p)).unwrap_or_default();
            let how = if used.warm.is_some() { "warm" } else { "cold" };
            let ms = started.elapsed().as_secs_f64() * 1e3;
            // Quoted and escaped: a name is the client's to choose.
            eprintln!("hvsandbox serve: {program:?} {how} exit {code} in {ms:.2} ms");
        }
        let pending = used.pending.take();
        drop(used);
        if let Some(pending) = pending {
            self.warm.prepare(pending);
        }
    }

    /// Runs `request` with the client's descriptors as its stdio, in a
    /// warm clone of its program when there is one, else in a new
    /// sandbox (left in `used`).
    fn run(
        &self,
        conn: &UnixStream,
        request: &Request,
        timeout: Duration,
        stdio: [RawFd; 3],
        fate: &Arc<Fate>,
        used: &mut Used,
    ) -> Result<Output, Error> {
        // As a one-shot run's: no time at all is a timeout, not a run.
        if timeout.is_zero() {
            return Err(Error::Timeout { limit: timeout, cpu: false, partial: Box::default() });
        }
        let deadline = Instant::now() + timeout;
        let (program, args) =
            request.argv.split_first().ok_or_else(|| Error::InvalidConfig("no program given".into()))?;
        let args = args.iter().map(|a| OsStr::from_bytes(a));
        match self.warm.take(program, &request.env) {
            Taken::Warm(sb) => used.warm = Some(*sb),
            Taken::Cold(pending) => used.pending = pending,
        }
        let (sandbox, mut command): (&mut Sandbox, Command) = match &mut used.warm {
            Some(p) => (p, Command::resume().args(args)),
            None => {
                let cold = self.builder.clone().timeout(timeout).reset_ahead(false).build()?;
                (used.cold.insert(cold), Command::new(OsStr::from_bytes(program)).args(args))
            }
        };
        for kv in &request.env {
            if let Some(eq) = kv.iter().position(|&b| b == b'=') {
                command = command.env(OsStr::from_bytes(&kv[..eq]), OsStr::from_bytes(&kv[eq + 1..]));
            }
        }
        let live_stdin = !is_dev_null(stdio[0]);
        if !live_stdin {
            command = command.stdin([]);
        }
        let mut process = sandbox.spawn(&command)?;
        let watch = self.watcher.watch(conn.as_raw_fd(), deadline, process.kill_handle(), fate.clone());
        let (result, reader_gone) = match process.take_stdin().filter(|_| live_stdin) {
            None => pass_client_output(&mut process, stdio, fate),
            Some(to) => {
                // The copy of stdin stops when told (`done`), not only at
                // the end of the client's input.
                let done = EventFd::new().map_err(|e| internal("cannot make an eventfd", e))?;
                let chunk = stdin_chunk(self.max_input);
                std::thread::scope(|s| {
                    // (No thread to be had: the program's input ends.)
                    let _ = std::thread::Builder::new()
                        .name("hvsandbox-stdin".into())
                        .spawn_scoped(s, || pump_stdin(stdio[0], to, chunk, Some(done.fd())));
                    let result = pass_client_output(&mut process, stdio, fate);
                    done.signal();
                    result
                })
            }
        };
        drop(watch);
        if reader_gone {
            fate.reader_gone();
        }
        match result {
            // The watcher's deadline: this client's (shorter) timeout.
            Err(Error::Cancelled { partial }) if fate.why() == DEADLINE => {
                Err(Error::Timeout { limit: timeout, cpu: false, partial })
            }
            r => r,
        }
    }
}

/// The run's output, written to the client's stdout and stderr; a reader
/// of them that goes away ends the run (see `live_io::pass_output`).
fn pass_client_output(process: &mut Process, stdio: [RawFd; 3], fate: &Fate) -> (Result<Output, Error>, bool) {
    let stop = || fate.stop_writing();
    pass_output(process, |b| write_out(stdio[1], b, &stop), |b| write_out(stdio[2], b, &stop))
}
