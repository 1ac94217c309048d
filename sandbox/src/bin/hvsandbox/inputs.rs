//! The program's inputs: environment, working directory, `--file`
//! sources and stdin, read within the timeout and the input cap.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use hvsandbox::{Command, Error};

use super::options::{split_arg, utf8_guest_path, RunArgs};

fn timed_out(limit: Duration) -> Error {
    Error::Timeout { limit, cpu: false, partial: Box::default() }
}

/// Adds the run's environment, working directory and input to `command`:
/// the --file sources, then (with `stdin`) stdin unless it is a terminal,
/// read within --timeout and at most --max-input bytes in all. Returns it
/// with what is left of --timeout for the run.
pub(crate) fn with_inputs(mut command: Command, args: &RunArgs, stdin: bool) -> Result<(Command, Duration), Error> {
    let deadline = Instant::now() + args.guest.timeout.0;
    for (k, v) in env_pairs(&args.env) {
        command = command.env(k, v);
    }
    let mut budget =
        Budget { left: args.guest.max_input.0, max: args.guest.max_input.0, deadline, timeout: args.guest.timeout.0 };
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
        return Err(timed_out(args.guest.timeout.0));
    }
    Ok((command, left))
}

/// The `--env` options as the run takes them: `K=V` as given, a bare `K`
/// with this process's value (left out when it has none).
pub(crate) fn env_pairs(env: &[std::ffi::OsString]) -> impl Iterator<Item = (&std::ffi::OsStr, std::ffi::OsString)> {
    env.iter().filter_map(|kv| match split_arg(kv, b'=', false) {
        Some((k, v)) => Some((std::ffi::OsStr::from_bytes(k), std::ffi::OsStr::from_bytes(v).to_os_string())),
        None => std::env::var_os(kv).map(|v| (kv.as_os_str(), v)),
    })
}

/// Whether our stdin is /dev/null: its end is known before the run, so
/// the program is given an empty stdin rather than a thread passing ours
/// through.
pub(crate) fn stdin_is_dev_null() -> bool {
    is_dev_null(0)
}

/// Whether `fd` is /dev/null.
pub(crate) fn is_dev_null(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is only looked at; `st` is a writable stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
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
                match std::io::Error::last_os_error() {
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
                match std::io::Error::last_os_error() {
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
