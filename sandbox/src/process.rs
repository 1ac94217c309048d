//! [`Process`]: a program running in a sandbox, watched and fed while it
//! runs ([`crate::Sandbox::spawn`]).

use std::io;
use std::sync::Arc;

use crate::control::RunControl;
use crate::error::Result;
use crate::live::Live;
use crate::output::{ExitStatus, Output};

/// What a running [`Process`] produced next.
// Events are handed out one at a time, never stored in bulk: the size of
// the last one does not matter, and boxing it would make it clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ProcessEvent {
    /// Bytes the program wrote to stdout (in the order written).
    Stdout(Vec<u8>),
    /// Bytes the program wrote to stderr (in the order written).
    Stderr(Vec<u8>),
    /// The run ended: its output (holding only what was not taken through
    /// events or readers) or why it did not complete. The last event; a
    /// later `wait` returns the same without the bytes handed out here.
    Exited(Result<Output>),
}

/// A program running in a sandbox, from [`crate::Sandbox::spawn`]: its
/// output as it is produced, its stdin while it runs, and its end.
///
/// Owned and `Send`. The sandbox runs nothing else until the process
/// ends (its other calls fail with `SandboxBusy`); dropping the process or
/// the sandbox before the end kills it.
///
/// ```no_run
/// use hvsandbox::{Command, ProcessEvent, Sandbox};
/// use std::io::Write;
/// let mut sb = Sandbox::builder().build()?;
/// let mut p = sb.spawn(&Command::new("/bin/busybox").args(["sh", "-c", "read x; echo got $x"]))?;
/// let mut stdin = p.take_stdin().expect("stdin");
/// stdin.write_all(b"hello\n").unwrap();
/// drop(stdin); // end of input
/// while let Some(ev) = p.next_event() {
///     match ev {
///         ProcessEvent::Stdout(b) => print!("{}", String::from_utf8_lossy(&b)),
///         ProcessEvent::Stderr(b) => eprint!("{}", String::from_utf8_lossy(&b)),
///         ProcessEvent::Exited(r) => println!("status {}", r?.status),
///     }
/// }
/// # Ok::<(), hvsandbox::Error>(())
/// ```
pub struct Process {
    live: Arc<Live>,
    control: Arc<RunControl>,
    stdin: Option<ProcessStdin>,
    /// Output collected by `wait` keeps at most this much per stream.
    max_output: usize,
    /// The run's result, once taken from the run.
    result: Option<Result<Output>>,
    exited_reported: bool,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("ended", &self.live.ended()).finish()
    }
}

impl Process {
    pub(crate) fn new(live: Arc<Live>, control: Arc<RunControl>, max_output: usize) -> Process {
        let stdin = ProcessStdin { live: live.clone() };
        Process { live, control, stdin: Some(stdin), max_output, result: None, exited_reported: false }
    }

    /// The next thing the program produced, waiting for it: output
    /// chunks, then [`ProcessEvent::Exited`] once; None after that.
    pub fn next_event(&mut self) -> Option<ProcessEvent> {
        if self.exited_reported {
            return None;
        }
        if let Some((fd, bytes)) = self.live.next_chunk(true).flatten() {
            return Some(if fd == 1 { ProcessEvent::Stdout(bytes) } else { ProcessEvent::Stderr(bytes) });
        }
        self.exited_reported = true;
        Some(ProcessEvent::Exited(self.final_result()))
    }

    /// Like [`next_event`](Self::next_event) but never waits: None when
    /// nothing is there yet (or after the end).
    pub fn try_next_event(&mut self) -> Option<ProcessEvent> {
        if self.exited_reported {
            return None;
        }
        match self.live.next_chunk(false) {
            Some(Some((1, bytes))) => Some(ProcessEvent::Stdout(bytes)),
            Some(Some((_, bytes))) => Some(ProcessEvent::Stderr(bytes)),
            Some(None) => None,
            None => {
                self.exited_reported = true;
                Some(ProcessEvent::Exited(self.final_result()))
            }
        }
    }

    /// The process's stdin, to write to while it runs (once; None after).
    /// Dropping it (or [`close_stdin`](Self::close_stdin)) ends the input.
    pub fn take_stdin(&mut self) -> Option<ProcessStdin> {
        self.stdin.take()
    }

    /// Ends the program's input (its reads return 0 once it has read what
    /// was written).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
        self.live.close_input();
    }

    /// A reader of the program's stdout as it is produced (`read` waits
    /// for bytes and returns 0 at the end). Bytes read here are not in
    /// events nor in [`wait`](Self::wait)'s output.
    pub fn stdout(&self) -> OutputReader {
        OutputReader { live: self.live.clone(), fd: 1 }
    }

    /// A reader of the program's stderr; see [`stdout`](Self::stdout).
    pub fn stderr(&self) -> OutputReader {
        OutputReader { live: self.live.clone(), fd: 2 }
    }

    /// Stops the program now; its run ends with `Cancelled`. Does nothing
    /// once the run has ended (never affects a later run).
    pub fn kill(&self) {
        self.kill_handle().kill();
    }

    /// A handle that stops this process from another thread (while
    /// another thread waits for it or reads its events): like
    /// [`kill`](Self::kill), it never affects a later run of the sandbox.
    pub fn kill_handle(&self) -> ProcessKillHandle {
        ProcessKillHandle { live: self.live.clone(), control: self.control.clone() }
    }

    /// Output waiting for the reader (test hook: it stays bounded).
    #[doc(hidden)]
    pub fn queued_output_bytes(&self) -> usize {
        self.live.queued_output_bytes()
    }

    /// Whether the run has ended.
    pub fn has_ended(&self) -> bool {
        self.live.ended()
    }

    /// The exit status if the run has ended (without waiting), the run's
    /// error if it did not complete, or None while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if !self.live.ended() {
            return Ok(None);
        }
        self.final_result().map(|o| Some(o.status))
    }

    /// Waits for the end and returns the run's output: what was not taken
    /// through events or readers (up to the sandbox's `max_output` per
    /// stream). Closes stdin first unless it was taken, so a program
    /// reading to the end of its input finishes. Can be called again: the
    /// same status, stats or error, without the bytes handed out before.
    pub fn wait(&mut self) -> Result<Output> {
        if self.stdin.take().is_some() {
            self.live.close_input();
        }
        self.final_result()
    }

    fn final_result(&mut self) -> Result<Output> {
        if self.result.is_none() {
            let taken = self.live.wait_result(true).flatten();
            let mut result = taken.unwrap_or_else(|| {
                Err(crate::error::Error::Internal { context: "the run's result is gone".into(), source: None })
            });
            let (out, err) = (self.live.drain_stream(1), self.live.drain_stream(2));
            let cap = self.max_output;
            let keep = |dst: &mut Vec<u8>, src: Vec<u8>, truncated: Option<&mut bool>| {
                let room = cap.saturating_sub(dst.len());
                if src.len() > room {
                    if let Some(t) = truncated {
                        *t = true;
                    }
                }
                dst.extend_from_slice(&src[..src.len().min(room)]);
            };
            match &mut result {
                Ok(o) => {
                    keep(&mut o.stdout, out, Some(&mut o.stdout_truncated));
                    keep(&mut o.stderr, err, Some(&mut o.stderr_truncated));
                }
                Err(e) => {
                    if let Some(p) = e.partial_output_mut() {
                        keep(&mut p.stdout, out, None);
                        keep(&mut p.stderr, err, None);
                    }
                }
            }
            self.result = Some(result);
        }
        // The bytes are handed out once (moved, not copied: they may be
        // large); what is kept for a later call is the rest.
        match self.result.as_mut() {
            Some(Ok(kept)) => {
                let (stdout, stderr) = (std::mem::take(&mut kept.stdout), std::mem::take(&mut kept.stderr));
                let files = std::mem::take(&mut kept.files);
                Ok(Output { stdout, stderr, files, ..kept.clone() })
            }
            Some(Err(kept)) => {
                let bytes = kept.partial_output_mut().map(std::mem::take);
                let mut e = kept.clone();
                if let (Some(bytes), Some(p)) = (bytes, e.partial_output_mut()) {
                    *p = bytes;
                }
                Err(e)
            }
            None => unreachable!("set above"),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.live.ended() {
            self.kill();
        }
        self.live.abandon();
    }
}

/// Stops one [`Process`] from any thread ([`Process::kill_handle`]).
#[derive(Clone)]
pub struct ProcessKillHandle {
    live: Arc<Live>,
    control: Arc<RunControl>,
}

impl std::fmt::Debug for ProcessKillHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessKillHandle").field("ended", &self.live.ended()).finish()
    }
}

impl ProcessKillHandle {
    /// Stops the process's run now (it ends with `Cancelled`); does
    /// nothing once that run has ended.
    pub fn kill(&self) {
        self.control.kill_process(&self.live);
    }
}

/// A spawned process's stdin: bytes written reach a guest waiting in
/// `read` at once. Bounded: `write` waits while the guest has not read
/// what was written before. Dropping it ends the input.
pub struct ProcessStdin {
    live: Arc<Live>,
}

impl std::fmt::Debug for ProcessStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessStdin")
    }
}

impl io::Write for ProcessStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.live
            .write_input(buf)
            .map_err(|()| io::Error::new(io::ErrorKind::BrokenPipe, "the sandboxed process has ended"))
    }

    /// Bytes written are already queued for the guest: nothing to do.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ProcessStdin {
    fn drop(&mut self) {
        self.live.close_input();
    }
}

/// A reader of one output stream of a spawned process.
pub struct OutputReader {
    live: Arc<Live>,
    fd: u64,
}

impl std::fmt::Debug for OutputReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputReader").field("stream", &if self.fd == 1 { "stdout" } else { "stderr" }).finish()
    }
}

impl io::Read for OutputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.live.read_stream(self.fd, buf))
    }
}
