//! What to run: a program, its arguments, environment additions, stdin,
//! and the files it starts with and sends back.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the program's ELF image comes from.
#[derive(Clone, Debug)]
pub(crate) enum ProgramSource {
    /// A file on the host, read when the run starts.
    Path(PathBuf),
    /// An image held in memory.
    Bytes(Arc<[u8]>),
    /// No program: the run resumes the sandbox's snapshot.
    Resume,
}

/// A file placed in the guest's filesystem when a run starts.
#[derive(Clone, Debug)]
pub(crate) struct GuestFile {
    /// Absolute guest path (checked when the run starts).
    pub(crate) path: String,
    pub(crate) data: Arc<[u8]>,
    /// Permission bits.
    pub(crate) mode: u32,
}

/// Default permissions of a file given with `file`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// A program to run in a sandbox, with `std::process::Command`'s habits.
///
/// ```no_run
/// use hvsandbox::{Command, Sandbox};
/// let mut sb = Sandbox::builder().build()?;
/// let out = sb.run(&Command::new("/bin/busybox").args(["echo", "hi"]))?;
/// assert_eq!(out.stdout, b"hi\n");
/// # Ok::<(), hvsandbox::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Command {
    pub(crate) source: ProgramSource,
    /// argv[0]: the program path as given.
    pub(crate) argv0: Vec<u8>,
    pub(crate) args: Vec<Vec<u8>>,
    pub(crate) env: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) env_clear: bool,
    pub(crate) stdin: Arc<[u8]>,
    /// `stdin` was given: a spawned process reads exactly it.
    pub(crate) stdin_given: bool,
    /// A spawned process's reader may take more than `max_output`.
    pub(crate) unlimited_stream: bool,
    /// Its end makes [`crate::end_event_fd`] readable.
    pub(crate) notify_end: bool,
    pub(crate) files: Vec<GuestFile>,
    pub(crate) cwd: Option<String>,
    pub(crate) collect: Vec<String>,
}

impl Command {
    /// A program read from `path` on the host when the run starts; `path`
    /// is also the program's `argv[0]`.
    ///
    /// A bare name (no `/`, e.g. `"ls"`) is looked up as execvp(3) does,
    /// in the guest's view: on the `PATH` of the run's environment (the
    /// sandbox's, with the command's on top), or else on
    /// `/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin`,
    /// among the sandbox's mounts and the run's files, following symlinks
    /// as the guest would and never out of a mount. The first regular file
    /// the guest may execute wins; its guest path (the `PATH` entry and the
    /// name) is `argv[0]`. Not found: `InvalidProgram` naming it.
    ///
    /// ```no_run
    /// use hvsandbox::{Command, Sandbox};
    /// let mut sb = Sandbox::builder().mount("/bin", "/bin").build()?;
    /// let out = sb.run(&Command::new("busybox").args(["echo", "hi"]))?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # Ok::<(), hvsandbox::Error>(())
    /// ```
    pub fn new(path: impl AsRef<OsStr>) -> Command {
        let path = path.as_ref();
        Command {
            source: ProgramSource::Path(PathBuf::from(path)),
            argv0: path.as_bytes().to_vec(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            stdin: Arc::from(&[][..]),
            stdin_given: false,
            unlimited_stream: false,
            notify_end: false,
            files: Vec::new(),
            cwd: None,
            collect: Vec::new(),
        }
    }

    /// A program given as an ELF image in memory; `name` is its `argv[0]`.
    pub fn from_image(name: impl AsRef<OsStr>, image: impl Into<Arc<[u8]>>) -> Command {
        let mut cmd = Command::new(name);
        cmd.source = ProgramSource::Bytes(image.into());
        cmd
    }

    /// A run of a sandbox built from a snapshot: it resumes the snapshot's
    /// program. For an entry snapshot, `args` follow the program's argv[0]
    /// and `env` forms its environment; for a checkpoint snapshot, reading
    /// `/dev/hvsandbox/checkpoint` returns the args (each ending in NUL).
    /// stdin, files, cwd and collect work as for any run.
    pub fn resume() -> Command {
        let mut cmd = Command::new("");
        cmd.source = ProgramSource::Resume;
        cmd
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command {
        self.args.push(arg.as_ref().as_bytes().to_vec());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().as_bytes().to_vec());
        }
        self
    }

    /// Sets an environment variable for this run (on top of the sandbox's).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.env.push((key.as_ref().as_bytes().to_vec(), value.as_ref().as_bytes().to_vec()));
        self
    }

    /// Starts from an empty environment instead of the sandbox's.
    pub fn env_clear(mut self) -> Command {
        self.env_clear = true;
        self
    }

    /// The bytes the program reads on stdin, then the end of input. By
    /// default `run` gives none, and a spawned process reads what is
    /// written to its [`crate::Process::take_stdin`] writer instead.
    pub fn stdin(mut self, input: impl AsRef<[u8]>) -> Command {
        self.stdin = Arc::from(input.as_ref());
        self.stdin_given = true;
        self
    }

    /// For [`crate::Sandbox::spawn`]: let the process's reader receive more
    /// than the sandbox's `max_output` per stream over the run (output is
    /// still bounded in memory: the guest waits while the reader is behind).
    /// What [`crate::Process::wait`] collects stays capped. `run` ignores it.
    pub fn unlimited_streaming(mut self, unlimited: bool) -> Command {
        self.unlimited_stream = unlimited;
        self
    }

    /// When the process ends, make the process-wide [`crate::end_event_fd`]
    /// readable (for callers that wait in an event loop, not on a thread).
    pub fn notify_on_end(mut self, notify: bool) -> Command {
        self.notify_end = notify;
        self
    }

    /// Places a file with `contents` at `guest_path` (absolute) for this
    /// run, mode 0644, writable in the guest; it replaces a sandbox-wide
    /// file at the same path.
    ///
    /// ```no_run
    /// use hvsandbox::{Command, Sandbox};
    /// let mut sb = Sandbox::builder().build()?;
    /// let out = sb.run(&Command::new("/bin/busybox").args(["cat", "/data/x.txt"]).file("/data/x.txt", "hi\n"))?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # Ok::<(), hvsandbox::Error>(())
    /// ```
    pub fn file(self, guest_path: impl AsRef<str>, contents: impl AsRef<[u8]>) -> Command {
        self.file_with_mode(guest_path, contents, DEFAULT_FILE_MODE)
    }

    /// Like [`Command::file`] with permission bits `mode` (e.g. `0o755`).
    pub fn file_with_mode(mut self, guest_path: impl AsRef<str>, contents: impl AsRef<[u8]>, mode: u32) -> Command {
        self.files.push(GuestFile { path: guest_path.as_ref().to_string(), data: Arc::from(contents.as_ref()), mode });
        self
    }

    /// The program's working directory (absolute guest path; created if
    /// missing). Overrides the sandbox's; the default is `/`.
    pub fn cwd(mut self, guest_path: impl AsRef<str>) -> Command {
        self.cwd = Some(guest_path.as_ref().to_string());
        self
    }

    /// Sends back the files at or under `guest_path` (absolute) when the
    /// program exits, in [`crate::Output::files`], by guest path.
    ///
    /// ```no_run
    /// use hvsandbox::{Command, Sandbox};
    /// let mut sb = Sandbox::builder().build()?;
    /// let cmd = Command::new("/bin/busybox").args(["sh", "-c", "echo hi > /out/o.txt"]).collect("/out");
    /// let out = sb.run(&cmd)?;
    /// assert_eq!(out.files["/out/o.txt"], b"hi\n");
    /// # Ok::<(), hvsandbox::Error>(())
    /// ```
    pub fn collect(mut self, guest_path: impl AsRef<str>) -> Command {
        self.collect.push(guest_path.as_ref().to_string());
        self
    }

    /// The program's argv[0] as given.
    pub fn program_name(&self) -> String {
        String::from_utf8_lossy(&self.argv0).into_owned()
    }
}
