//! What to run: a program, its arguments, environment additions and stdin.

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
}

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
}

impl Command {
    /// A program read from `path` on the host when the run starts; `path`
    /// is also the program's `argv[0]`.
    pub fn new(path: impl AsRef<OsStr>) -> Command {
        let path = path.as_ref();
        Command {
            source: ProgramSource::Path(PathBuf::from(path)),
            argv0: path.as_bytes().to_vec(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            stdin: Arc::from(&[][..]),
        }
    }

    /// A program given as an ELF image in memory; `name` is its `argv[0]`.
    pub fn from_image(name: impl AsRef<OsStr>, image: impl Into<Arc<[u8]>>) -> Command {
        let mut cmd = Command::new(name);
        cmd.source = ProgramSource::Bytes(image.into());
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

    /// The bytes the program reads on stdin (empty by default).
    pub fn stdin(mut self, input: impl AsRef<[u8]>) -> Command {
        self.stdin = Arc::from(input.as_ref());
        self
    }

    /// The program's argv[0] as given.
    pub fn program_name(&self) -> String {
        String::from_utf8_lossy(&self.argv0).into_owned()
    }
}
