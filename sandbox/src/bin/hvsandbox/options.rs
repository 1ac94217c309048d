//! The command line's options and what they make: the sandbox options
//! `run`, `snapshot` and `serve` share (`GuestArgs`, `sandbox_builder`),
//! `run`'s and `snapshot`'s own, and the exit code of each kind of
//! failure.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use hvsandbox::{Error, ErrorKind, HugePages, Sandbox, SandboxBuilder, SeccompMode};

use super::units::{Size, Time};

/// Exit code for a run that hit its timeout (as timeout(1)).
pub(crate) const EXIT_TIMEOUT: u8 = 124;

/// Exit code for bad usage, a bad configuration or KVM unavailable.
pub(crate) const EXIT_USAGE: u8 = 125;

/// Exit code for a program that cannot be run (as the shell's 126).
pub(crate) const EXIT_INVALID_PROGRAM: u8 = 126;

/// Exit code for a run cancelled by SIGINT/SIGTERM (as the shell's 130).
pub(crate) const EXIT_CANCELLED: u8 = 130;

/// Exit code when the program ran out of the sandbox's memory (as a shell
/// reports a process the OOM killer ended: 128 + SIGKILL).
pub(crate) const EXIT_MEMORY: u8 = 137;

/// Exit code when the output limit was exceeded with --fail-on-output-limit.
pub(crate) const EXIT_OUTPUT_LIMIT: u8 = 122;

/// Exit code when the vCPU thread's jail refused a system call.
pub(crate) const EXIT_JAIL: u8 = 123;

/// Exit code for a crash of the guest runtime or an internal error
/// (EX_SOFTWARE).
pub(crate) const EXIT_INTERNAL: u8 = 70;

#[derive(Args, Debug)]
pub(crate) struct SnapshotArgs {
    /// Where to write the snapshot.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// Where to stop: checkpoint (falling back to entry if the program
    /// never reads the checkpoint) or entry.
    #[arg(long, value_enum, default_value_t = At::Checkpoint)]
    pub(crate) at: At,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Where `hvsandbox snapshot` stops (see [`SnapshotArgs::at`]).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum At {
    Checkpoint,
    Entry,
}

/// `--seccomp`: the names of [`SeccompMode`] on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Seccomp {
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
pub(crate) enum Huge {
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
pub(crate) fn guest_setting_help(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}; with --from-snapshot: the snapshot's]")
}

/// The options of `run`; `snapshot` takes them too, and those that
/// describe the sandbox or the program's inputs mean the same there (see
/// [`sandbox_builder`] and [`with_inputs`]).
/// The options that describe the sandbox and its limits: `run` and
/// `snapshot` take them for their one run, `serve` for all of its runs.
#[derive(Args, Debug)]
pub(crate) struct GuestArgs {
    #[arg(long, help = guest_setting_help(
        "Guest memory (e.g. 64M, 1G; a multiple of 2M)",
        Size(hvsandbox::DEFAULT_MEMORY_MIB << 20),
    ))]
    pub(crate) memory: Option<Size>,
    /// Wall-clock limit (e.g. 500ms, 2s, 1m), reading stdin and --file
    /// sources included.
    #[arg(long, default_value_t = Time(hvsandbox::DEFAULT_TIMEOUT))]
    pub(crate) timeout: Time,
    /// Cap on the input: stdin plus the --file contents (e.g. 256M).
    #[arg(long, default_value_t = Size(hvsandbox::DEFAULT_MAX_INPUT))]
    pub(crate) max_input: Size,
    /// Cap on each of stdout and stderr (e.g. 1M); the rest is dropped.
    #[arg(long, default_value_t = Size(hvsandbox::DEFAULT_MAX_OUTPUT as u64))]
    pub(crate) max_output: Size,
    /// Limit on the guest's CPU time (e.g. 500ms); default: none.
    #[arg(long)]
    pub(crate) cpu_time: Option<Time>,
    /// Fail (exit 122) instead of truncating output past --max-output.
    #[arg(long)]
    pub(crate) fail_on_output_limit: bool,
    #[arg(long, help = guest_setting_help("Most processes alive at once in the guest", hvsandbox::DEFAULT_MAX_PROCESSES))]
    pub(crate) max_processes: Option<u32>,
    #[arg(long, help = guest_setting_help("Most open files per guest process", hvsandbox::DEFAULT_MAX_OPEN_FILES))]
    pub(crate) max_open_files: Option<u32>,
    /// The vCPU thread's seccomp filter.
    #[arg(long, value_enum, default_value_t = Seccomp::from(SeccompMode::default()))]
    pub(crate) seccomp: Seccomp,
    /// Guest RAM from the host's hugetlb pool (vm.nr_hugepages): steadier and
    /// faster fresh memory on hosts that are VMs themselves; prefer falls back
    /// to ordinary memory when the pool is short, require fails (exit 125).
    #[arg(long, value_enum, default_value_t = Huge::Off)]
    pub(crate) huge_pages: Huge,
    /// Show a host directory read-only in the guest at GUEST (repeatable).
    #[arg(long = "mount", value_name = "HOST:GUEST")]
    pub(crate) mounts: Vec<OsString>,
    /// The host system as the guest's root: /usr, /bin, /sbin, /lib* read-only, a curated /etc
    /// (no accounts or keys), PATH/HOME/USER set (see the README).
    #[arg(long)]
    pub(crate) system: bool,
    /// As --mount, but kernel filesystems (procfs, sysfs, ...) at or below HOST are shown too (repeatable).
    #[arg(long = "mount-kernel-fs", value_name = "HOST:GUEST")]
    pub(crate) kernel_fs_mounts: Vec<OsString>,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) guest: GuestArgs,
    /// Environment variable for the program: K=V, or K to pass the host's value.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub(crate) env: Vec<OsString>,
    /// Print the run statistics as one JSON line on stderr, also when the
    /// run fails (then with "error" and "message").
    #[arg(long)]
    pub(crate) stats: bool,
    /// Copy a host file into the guest at GUEST, keeping its permission bits (repeatable).
    #[arg(long = "file", value_name = "GUEST=HOSTPATH")]
    pub(crate) files: Vec<OsString>,
    /// The program's working directory in the guest (created if missing).
    #[arg(long, value_name = "PATH")]
    pub(crate) cwd: Option<String>,
    /// Bring back the files at or under this guest path (repeatable; needs --collect-dir).
    #[arg(long = "collect", value_name = "GUEST_PATH", requires = "collect_dir")]
    pub(crate) collect: Vec<String>,
    /// Where collected files are written: guest path /a/b.txt becomes HOSTDIR/a/b.txt.
    #[arg(long = "collect-dir", value_name = "HOSTDIR", requires = "collect")]
    pub(crate) collect_dir: Option<PathBuf>,
    /// Run in the `hvsandbox serve` listening at this socket (default:
    /// $HVSANDBOX_SERVER when set): its options set the sandbox; only
    /// --timeout (up to the server's), --env and --stats are taken here.
    #[arg(long, value_name = "SOCKET")]
    pub(crate) server: Option<PathBuf>,
    /// Resume this snapshot file (from `hvsandbox snapshot`) instead of
    /// starting a program; the arguments after `--` are this run's (none
    /// given: an entry snapshot's program gets the snapshot's). Give its
    /// mounts again with --mount (same guest paths).
    #[arg(long, value_name = "FILE")]
    pub(crate) from_snapshot: Option<PathBuf>,
    /// The program (a path on the host, or a bare name looked up on the
    /// guest's PATH among the mounts and files) and its arguments.
    #[arg(
        required_unless_present = "from_snapshot",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]"
    )]
    pub(crate) program: Vec<OsString>,
}

pub(crate) fn exit_code_for(kind: ErrorKind) -> u8 {
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

/// Splits `s` at the first `sep` (`last`: the last one).
pub(crate) fn split_arg(s: &OsString, sep: u8, last: bool) -> Option<(&[u8], &[u8])> {
    let b = s.as_bytes();
    let at = if last { b.iter().rposition(|&c| c == sep) } else { b.iter().position(|&c| c == sep) }?;
    Some((&b[..at], &b[at + 1..]))
}

/// The builder with the mounts of --mount and --mount-kernel-fs.
pub(crate) fn add_mounts(mut builder: SandboxBuilder, r: &GuestArgs) -> Result<SandboxBuilder, Error> {
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

pub(crate) fn utf8_guest_path(bytes: &[u8], flag: &str) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidConfig(format!("{flag}: the guest path must be UTF-8")))
}

/// The sandbox the options describe, for `run` and `snapshot` alike. Its
/// timeout is all of --timeout: give it what reading the input left (see
/// [`with_inputs`]). Memory, --max-processes and --max-open-files are set
/// only where given: a snapshot's guest fixes them (see `build_from`).
pub(crate) fn sandbox_builder(args: &GuestArgs) -> Result<SandboxBuilder, Error> {
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
