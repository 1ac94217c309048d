//! `hvsandbox run --server SOCKET` (or `HVSANDBOX_SERVER=SOCKET`): the run
//! happens in an `hvsandbox serve` process, which keeps VMs ready; this
//! process only connects, sends the program, its arguments and
//! environment with its own stdin, stdout and stderr, and exits with the
//! code the server sends back. It makes no VM, so it starts as fast as
//! any small program.
//!
//! The server's options fix the sandbox (memory, mounts, limits); of
//! `run`'s options only `--timeout` (at most the server's), `--env` and
//! `--stats` apply, and any other is refused. A relative program path is
//! ours, sent made absolute. If this process dies (a signal, a closed
//! terminal), the server sees its connection close and kills the run.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use hvsandbox::Error;

use super::inputs::env_pairs;
use super::options::{Huge, RunArgs, Seccomp};
use super::wire::{send_with_stdio, Request, STATS};

/// The environment variable that names a server when `--server` does not.
pub(crate) const SERVER_ENV: &str = "HVSANDBOX_SERVER";

/// The `run` options a server run refuses, by the flag's name: the
/// server's own options describe its sandbox.
fn refused_option(r: &RunArgs) -> Option<&'static str> {
    let g = &r.guest;
    let given = [
        (g.memory.is_some(), "--memory"),
        (g.max_input.0 != hvsandbox::DEFAULT_MAX_INPUT, "--max-input"),
        (g.max_output.0 != hvsandbox::DEFAULT_MAX_OUTPUT as u64, "--max-output"),
        (g.cpu_time.is_some(), "--cpu-time"),
        (g.fail_on_output_limit, "--fail-on-output-limit"),
        (g.max_processes.is_some(), "--max-processes"),
        (g.max_open_files.is_some(), "--max-open-files"),
        (!matches!(g.seccomp, Seccomp::Enforce), "--seccomp"),
        (!matches!(g.huge_pages, Huge::Off), "--huge-pages"),
        (!g.mounts.is_empty(), "--mount"),
        (g.system, "--system"),
        (!g.kernel_fs_mounts.is_empty(), "--mount-kernel-fs"),
        (!r.files.is_empty(), "--file"),
        (r.cwd.is_some(), "--cwd"),
        (!r.collect.is_empty() || r.collect_dir.is_some(), "--collect"),
        (r.from_snapshot.is_some(), "--from-snapshot"),
    ];
    given.iter().find(|(on, _)| *on).map(|(_, flag)| *flag)
}

/// The run's environment from `--env` (as `run` takes it), `K=V` each.
fn environment(env: &[OsString]) -> Vec<Vec<u8>> {
    env_pairs(env).map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat()).collect()
}

/// The server named by `HVSANDBOX_SERVER`, when set and not empty.
pub(crate) fn server_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os(SERVER_ENV).filter(|s| !s.is_empty()).map(Into::into)
}

/// Runs `args` in the server at `socket`; returns the exit code. Output
/// and error lines reach our stdout and stderr from the server.
pub(crate) fn run(socket: &Path, args: &RunArgs) -> Result<u8, Error> {
    if let Some(flag) = refused_option(args) {
        return Err(Error::InvalidConfig(format!(
            "{flag} is not taken with --server ({SERVER_ENV}): give it to `hvsandbox serve`"
        )));
    }
    if args.program.is_empty() {
        return Err(Error::InvalidConfig("no program given".into()));
    }
    let request = Request {
        timeout: args.guest.timeout.0,
        flags: if args.stats { STATS } else { 0 },
        argv: with_absolute_program(args.program.iter().map(|a| a.as_bytes().to_vec()).collect())?,
        env: environment(&args.env),
    };
    send(socket, &request)
}

/// A server run asked for in the few words such a run takes (`run`,
/// then `--server S`, `--timeout T`, `--env`/`-e K=V` in either of their
/// forms and `--stats`, then `--` and the program), read without building the
/// whole command line's parser: that costs a client about a third of
/// its start here. Anything else (another option, a bad value, help)
/// is None, and the full parser reads the line instead.
pub(crate) struct QuickRun {
    socket: std::path::PathBuf,
    request: Request,
}

impl QuickRun {
    pub(crate) fn parse(argv: &[OsString]) -> Option<QuickRun> {
        let mut words = argv.get(1..)?.iter();
        if words.next()?.as_bytes() != b"run" {
            return None;
        }
        let (mut socket, mut timeout, mut env, mut flags) = (None, None, Vec::new(), 0);
        loop {
            let word = words.next()?.as_bytes();
            if word == b"--" {
                break;
            }
            if word == b"--stats" {
                flags |= STATS;
                continue;
            }
            let (flag, inline) = match word.iter().position(|&b| b == b'=') {
                Some(eq) if word.starts_with(b"--") => (&word[..eq], Some(&word[eq + 1..])),
                _ => (word, None),
            };
            let value = match inline {
                Some(v) => v,
                None => words.next()?.as_bytes(),
            };
            match flag {
                b"--server" => socket = Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(value))),
                b"--timeout" => timeout = Some(std::str::from_utf8(value).ok()?.parse::<super::units::Time>().ok()?.0),
                b"--env" | b"-e" => env.push(OsString::from(std::ffi::OsStr::from_bytes(value))),
                _ => return None,
            }
        }
        // (A path that cannot be made absolute: the full parser's run says why.)
        let argv = with_absolute_program(words.map(|w| w.as_bytes().to_vec()).collect()).ok()?;
        if argv.is_empty() {
            return None;
        }
        let socket = socket.or_else(server_from_env)?;
        let timeout = timeout.unwrap_or(hvsandbox::DEFAULT_TIMEOUT);
        Some(QuickRun { socket, request: Request { timeout, flags, argv, env: environment(&env) } })
    }

    pub(crate) fn run(&self) -> Result<u8, Error> {
        send(&self.socket, &self.request)
    }

    /// Whether `--stats` was asked for.
    pub(crate) fn stats(&self) -> bool {
        self.request.flags & STATS != 0
    }
}

/// `argv` with a relative program path (`./prog`, `bin/prog`) made
/// absolute from our working directory: the server's is another. Bare
/// names are the guest's to look up and stay as they are.
fn with_absolute_program(mut argv: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, Error> {
    if let Some(program) = argv.first_mut() {
        if program.contains(&b'/') && program.first() != Some(&b'/') {
            // (`.` components dropped; `..` kept, as the kernel resolves it.)
            let path = std::path::absolute(std::ffi::OsStr::from_bytes(program)).map_err(|e| {
                Error::InvalidConfig(format!(
                    "{}: a relative program path needs our working directory: {e}",
                    String::from_utf8_lossy(program)
                ))
            })?;
            *program = path.into_os_string().into_vec();
        }
    }
    Ok(argv)
}

/// Sends `request` with our stdio to the server at `socket` and waits for
/// the exit code.
fn send(socket: &Path, request: &Request) -> Result<u8, Error> {
    let frame = request.encode();
    if frame.len() - 4 > super::wire::MAX_REQUEST {
        return Err(Error::InvalidConfig("the arguments and environment are too large for a server run".into()));
    }
    let unreachable =
        |e: std::io::Error| Error::InvalidConfig(format!("cannot reach the server at {}: {e}", socket.display()));
    let sock = UnixStream::connect(socket).map_err(unreachable)?;
    send_with_stdio(&sock, &frame).map_err(unreachable)?;
    // The one byte of the reply comes when the run has ended; the server
    // closes without it only when it refused us or went away.
    let mut code = [0u8; 1];
    let closed = || {
        Error::InvalidConfig(format!("the server at {} closed the connection without an exit status", socket.display()))
    };
    loop {
        match (&sock).read(&mut code) {
            Ok(1) => return Ok(code[0]),
            // Refused (another user), or the server stopped. A refused
            // client may see its unread request reset the connection.
            Ok(_) => return Err(closed()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(closed()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Internal {
                    context: "lost the connection to the server".into(),
                    source: Some(std::sync::Arc::new(e)),
                })
            }
        }
    }
}
