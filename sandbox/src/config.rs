//! A sandbox's settings: the builder, its defaults, and the checks of
//! everything the caller gives (settings when the sandbox is built, a
//! command's files and paths when it runs).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hvsandbox_core::{abi, HugePages};

use crate::command::{GuestFile, DEFAULT_FILE_MODE};
use crate::error::{Error, Result};
use crate::fs::{self, Mount};
use crate::jail::SeccompMode;
use crate::snapshot::{Snapshot, MAX_OPEN_FILES_RANGE, MAX_PROCESSES_RANGE};

/// Default cap on processes alive at once in the guest.
pub const DEFAULT_MAX_PROCESSES: u32 = 64;
/// Default cap on open descriptors per guest process.
pub const DEFAULT_MAX_OPEN_FILES: u32 = 1024;
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Default wall-clock limit of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on each of stdout and stderr.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// Largest program image accepted.
pub const MAX_PROGRAM_SIZE: u64 = 1 << 30;
/// Default cap on the input of one run: stdin plus the files given.
pub const DEFAULT_MAX_INPUT: u64 = 256 << 20;
/// Default cap on the bytes of the files a run sends back.
pub const DEFAULT_MAX_COLLECT_BYTES: u64 = 64 << 20;
/// Default cap on the number of files a run sends back.
pub const DEFAULT_MAX_COLLECT_FILES: usize = 4096;

/// Settings of a sandbox, fixed when it is built.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) memory: u64,
    pub(crate) timeout: Duration,
    pub(crate) max_output: usize,
    pub(crate) env: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) files: Vec<GuestFile>,
    pub(crate) cwd: Option<String>,
    pub(crate) max_input: u64,
    pub(crate) max_collect_bytes: u64,
    pub(crate) max_collect_files: usize,
    pub(crate) max_processes: u32,
    pub(crate) max_open_files: u32,
    pub(crate) seccomp: SeccompMode,
    pub(crate) cpu_time: Option<Duration>,
    pub(crate) output_limit_error: bool,
    /// Where a fresh VM's RAM comes from ([`HugePages`]).
    pub(crate) huge_pages: HugePages,
    /// Make the first run's VM as soon as the sandbox is built.
    pub(crate) boot_ahead: bool,
    /// After a run from a snapshot, put its VM back at once.
    pub(crate) reset_ahead: bool,
}

/// Builds a [`Sandbox`](crate::Sandbox); every setting has a sensible default.
#[derive(Clone, Debug)]
pub struct SandboxBuilder {
    pub(crate) config: Config,
    chosen: Chosen,
}

/// Which of the settings a snapshot's guest fixes the caller set: building
/// from a snapshot checks those against it (see
/// [`SandboxBuilder::build_from`]).
#[derive(Clone, Copy, Debug, Default)]
struct Chosen {
    memory: bool,
    max_processes: bool,
    max_open_files: bool,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            config: Config {
                memory: DEFAULT_MEMORY_MIB << 20,
                timeout: DEFAULT_TIMEOUT,
                max_output: DEFAULT_MAX_OUTPUT,
                env: Vec::new(),
                mounts: Vec::new(),
                files: Vec::new(),
                cwd: None,
                max_input: DEFAULT_MAX_INPUT,
                max_collect_bytes: DEFAULT_MAX_COLLECT_BYTES,
                max_collect_files: DEFAULT_MAX_COLLECT_FILES,
                max_processes: DEFAULT_MAX_PROCESSES,
                max_open_files: DEFAULT_MAX_OPEN_FILES,
                seccomp: SeccompMode::Enforce,
                cpu_time: None,
                output_limit_error: false,
                huge_pages: HugePages::Off,
                boot_ahead: false,
                reset_ahead: true,
            },
            chosen: Chosen::default(),
        }
    }
}

impl SandboxBuilder {
    /// Guest memory in MiB (a multiple of 2, 16 ..= 16384). Default 64.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.config.memory = mib.saturating_mul(1 << 20);
        self.chosen.memory = true;
        self
    }
    /// Guest memory in bytes (a multiple of 2 MiB).
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.config.memory = bytes;
        self.chosen.memory = true;
        self
    }
    /// Limit on the guest CPU time of each run (the vCPU thread's CPU
    /// time, host work for the guest included); over it the run fails with
    /// `Timeout` (`cpu: true`). Default: none (the wall-clock timeout
    /// still applies).
    pub fn cpu_time(mut self, limit: Duration) -> Self {
        self.config.cpu_time = Some(limit);
        self
    }
    /// Wall-clock limit of each run (boot included). Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }
    /// Cap on each of stdout and stderr; output past it is dropped and
    /// flagged as truncated. Default 1 MiB.
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.config.max_output = bytes;
        self
    }
    /// Makes output past `max_output` an error (`OutputLimitExceeded`)
    /// instead of being cut off and flagged. Default: truncate.
    pub fn fail_on_output_limit(mut self, fail: bool) -> Self {
        self.config.output_limit_error = fail;
        self
    }
    /// Makes the first run's VM as soon as the sandbox is built (on a
    /// thread of its own, while the vCPU thread starts and enters its
    /// jail) and boots it on the vCPU thread as far as it goes without a
    /// program, while the caller's thread prepares the run: for a sandbox built to
    /// run at once, as the `hvsandbox` command's is (its VM is then made
    /// while the program file is opened and checked, not after). While
    /// that VM lives, its thread faults in the host memory of the next
    /// 2 MiB of RAM the guest is about to take. A sandbox
    /// that never runs wastes that VM; one built from a snapshot ignores
    /// this. Default: off (new sandboxes take VMs from the process-wide
    /// pool; see [`set_blank_vms`](crate::set_blank_vms)).
    pub fn boot_ahead(mut self, on: bool) -> Self {
        self.config.boot_ahead = on;
        self
    }
    /// For a sandbox built from a snapshot: after each run, puts its VM
    /// back in the snapshot's state right away, while the caller reads the
    /// output, so that the next run starts at once (default: on). Off for a
    /// sandbox that runs once, as the `hvsandbox` command's does: dropping
    /// it would wait for that work (measured: ~4 ms after a run whose VM
    /// copied the snapshot's memory; see
    /// [`Snapshot::copy_memory`](crate::Snapshot::copy_memory)). A later run
    /// then makes a new VM.
    pub fn reset_ahead(mut self, on: bool) -> Self {
        self.config.reset_ahead = on;
        self
    }
    /// An environment variable every run of this sandbox sees.
    pub fn env(mut self, key: impl AsRef<std::ffi::OsStr>, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.config.env.push((key.as_ref().as_bytes().to_vec(), value.as_ref().as_bytes().to_vec()));
        self
    }

    /// Shows host directory `host_dir` read-only at `guest_path` (absolute,
    /// normalised, not `/`) in every run. The guest sees only what is
    /// inside: its `..` and the symlinks in it resolve in the guest's tree.
    /// The mount is the directory `host_dir` names when the sandbox is
    /// built; a run after the name was given to another directory fails
    /// with `InvalidConfig`.
    ///
    /// The guest reads what a host user who is neither a file's owner nor
    /// in its group could: it enters a directory if its "other" permission
    /// bits allow search (`x`), lists it if they allow read, and reads a
    /// file if they allow read (`EACCES` otherwise) — checked by the host,
    /// whoever runs it. So `/etc/shadow` stays unreadable, and a directory
    /// made with mode 0700 (as temporary directories often are) can be
    /// neither entered nor listed until it is made 0755 (or 0711: entered,
    /// not listed). The mount's root is no exception.
    ///
    /// Kernel filesystems — procfs, sysfs, cgroupfs, devtmpfs, debugfs,
    /// tracefs, securityfs, bpf and the like — are not entered below
    /// `host_dir` (`EACCES` for their mount points), and `host_dir` may not
    /// be one (`InvalidConfig`): see [`mount_with_kernel_fs`](Self::mount_with_kernel_fs).
    ///
    /// ```no_run
    /// use hvsandbox::{Command, Sandbox};
    /// let mut sb = Sandbox::builder().mount("/usr/share/dict", "/dict").build()?;
    /// let out = sb.run(&Command::new("/bin/busybox").args(["ls", "/dict"]))?;
    /// # Ok::<(), hvsandbox::Error>(())
    /// ```
    pub fn mount(mut self, host_dir: impl AsRef<Path>, guest_path: impl AsRef<str>) -> Self {
        let (host, guest) = (host_dir.as_ref().to_path_buf(), guest_path.as_ref().to_string());
        self.config.mounts.push(Mount { host, guest, kernel_fs: false });
        self
    }
    /// Like [`mount`](Self::mount), but kernel filesystems below
    /// `host_dir` (procfs, sysfs, cgroupfs, devtmpfs, debugfs, ...) are
    /// entered too, and `host_dir` may be one: for showing the guest e.g.
    /// `/sys/devices/system/cpu`. (The guest runtime reads a host file up
    /// to the size the host reports, and procfs reports 0: procfs files
    /// read as empty for now, though they can be listed.) Their files are the
    /// host kernel's and other processes' state (with `/proc` mounted, a
    /// file the permission bits let through, such as another process's
    /// command line, is readable), so mount the narrowest directory that
    /// holds what the program needs. The permission rule of
    /// [`mount`](Self::mount) still applies.
    pub fn mount_with_kernel_fs(mut self, host_dir: impl AsRef<Path>, guest_path: impl AsRef<str>) -> Self {
        let (host, guest) = (host_dir.as_ref().to_path_buf(), guest_path.as_ref().to_string());
        self.config.mounts.push(Mount { host, guest, kernel_fs: true });
        self
    }
    /// A file every run starts with, mode 0644 (see [`Command::file`](crate::Command::file)).
    pub fn file(self, guest_path: impl AsRef<str>, contents: impl AsRef<[u8]>) -> Self {
        self.file_with_mode(guest_path, contents, DEFAULT_FILE_MODE)
    }
    /// A file every run starts with, with permission bits `mode`.
    pub fn file_with_mode(mut self, guest_path: impl AsRef<str>, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.config.files.push(GuestFile {
            path: guest_path.as_ref().to_string(),
            data: Arc::from(contents.as_ref()),
            mode,
        });
        self
    }
    /// The working directory of every run (absolute guest path; created if
    /// missing); a command's own [`Command::cwd`](crate::Command::cwd) wins. Default `/`.
    pub fn cwd(mut self, guest_path: impl AsRef<str>) -> Self {
        self.config.cwd = Some(guest_path.as_ref().to_string());
        self
    }
    /// What the vCPU thread's seccomp filter does with a system call not on
    /// its allow-list (see [`crate::jail`]): stop the thread (the default),
    /// log it, or no filter at all. The environment variable
    /// `HVSANDBOX_SECCOMP=enforce|log|off` can only make it stricter
    /// (`enforce` turns `Log` into `Enforce`); a weaker value is ignored
    /// with a warning.
    pub fn seccomp(mut self, mode: SeccompMode) -> Self {
        self.config.seccomp = mode;
        self
    }
    /// Whether a fresh VM's RAM comes from the host's hugetlb pool
    /// (`vm.nr_hugepages`, reserved by the host's administrator): `Off`
    /// (the default), `Prefer` (the pool when it can hold the VM's RAM,
    /// else ordinary memory) or `Require` (else the run fails with
    /// `InvalidConfig`). The pool's pages stay backed by the host, so
    /// a guest's first touch of its memory costs the zeroing of a page
    /// and nothing more: on hosts that are themselves VMs, fresh ordinary
    /// memory costs several times that, and varies from run to run. Each
    /// VM reserves pages for its whole RAM but the first 2 MiB and the
    /// page-table pool. A run from a snapshot whose memory is copied
    /// ([`Snapshot::copy_memory`](crate::Snapshot::copy_memory), the CLI's
    /// `--from-snapshot`) takes its copy's RAM from the pool too; one that
    /// maps the snapshot shares the snapshot's pages instead.
    pub fn huge_pages(mut self, mode: HugePages) -> Self {
        self.config.huge_pages = mode;
        self
    }
    /// Most processes alive at once inside the guest (fork fails with
    /// EAGAIN beyond, as with RLIMIT_NPROC). Default 64.
    pub fn max_processes(mut self, n: u32) -> Self {
        self.config.max_processes = n;
        self.chosen.max_processes = true;
        self
    }
    /// Most open descriptors per guest process (RLIMIT_NOFILE). Default 1024.
    pub fn max_open_files(mut self, n: u32) -> Self {
        self.config.max_open_files = n;
        self.chosen.max_open_files = true;
        self
    }
    /// Cap on the input of one run: stdin plus all files given. A run
    /// over it fails with [`Error::InvalidConfig`]. Default 256 MiB.
    pub fn max_input(mut self, bytes: u64) -> Self {
        self.config.max_input = bytes;
        self
    }
    /// Cap on the total bytes of the files a run sends back; files past it
    /// are dropped or cut short and `Output::files_truncated` is set.
    /// Default 64 MiB.
    pub fn max_collect_bytes(mut self, bytes: u64) -> Self {
        self.config.max_collect_bytes = bytes;
        self
    }
    /// Cap on the number of files a run sends back. Default 4096.
    pub fn max_collect_files(mut self, files: usize) -> Self {
        self.config.max_collect_files = files;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let c = &self.config;
        let mib = c.memory >> 20;
        if !c.memory.is_multiple_of(2 << 20) || !(abi::MIN_MEMORY..=abi::MAX_MEMORY).contains(&c.memory) {
            return Err(Error::InvalidConfig(format!(
                "memory must be a multiple of 2 MiB between 16 MiB and 16 GiB, got {} bytes ({mib} MiB)",
                c.memory
            )));
        }
        if c.timeout.is_zero() {
            return Err(Error::InvalidConfig("timeout must be greater than zero".into()));
        }
        if c.cpu_time.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidConfig("cpu_time must be greater than zero".into()));
        }
        if !MAX_PROCESSES_RANGE.contains(&c.max_processes) {
            return Err(Error::InvalidConfig(format!("max_processes must be 1..=4096, got {}", c.max_processes)));
        }
        if !MAX_OPEN_FILES_RANGE.contains(&c.max_open_files) {
            return Err(Error::InvalidConfig(format!("max_open_files must be 3..=65536, got {}", c.max_open_files)));
        }
        for (k, _) in &c.env {
            if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
                return Err(Error::InvalidConfig(format!(
                    "invalid environment variable name {:?}",
                    String::from_utf8_lossy(k)
                )));
            }
        }
        for (i, m) in c.mounts.iter().enumerate() {
            guest_path("mount point", &m.guest, false)?;
            match std::fs::metadata(&m.host) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Error::InvalidConfig(format!("mount source {} is not a directory", m.host.display())))
                }
                Err(e) => {
                    return Err(Error::InvalidConfig(format!("mount source {}: {e}", m.host.display())));
                }
            }
            fs::open_mount_root(&m.host, m.kernel_fs)
                .map_err(|e| Error::InvalidConfig(format!("mount source {}: {e}", m.host.display())))?;
            if c.mounts[..i].iter().any(|other| other.guest == m.guest) {
                return Err(Error::InvalidConfig(format!("two mounts at {}", m.guest)));
            }
        }
        check_files(c, &c.files)?;
        if let Some(cwd) = &c.cwd {
            guest_path("working directory", cwd, true)?;
        }
        let input: u64 = c.files.iter().map(|f| f.data.len() as u64).sum();
        check_input_size(c, input)?;
        Ok(())
    }
}

impl SandboxBuilder {
    /// Takes what `snapshot`'s guest fixed, checking what the caller set
    /// against it (see [`SandboxBuilder::build_from`]).
    pub(crate) fn adopt(&mut self, snapshot: &Snapshot) -> Result<()> {
        let c = &mut self.config;
        let fixed = [
            ("memory (bytes)", self.chosen.memory, c.memory, snapshot.memory_bytes()),
            ("max_processes", self.chosen.max_processes, c.max_processes.into(), snapshot.max_processes().into()),
            ("max_open_files", self.chosen.max_open_files, c.max_open_files.into(), snapshot.max_open_files().into()),
        ];
        for (what, chosen, mine, theirs) in fixed {
            if chosen && mine != theirs {
                return Err(Error::InvalidConfig(format!(
                    "{what} is {theirs} in the snapshot (its guest was booted with it), not {mine}"
                )));
            }
        }
        c.memory = snapshot.memory_bytes();
        c.max_processes = snapshot.max_processes();
        c.max_open_files = snapshot.max_open_files();
        let recorded = &snapshot.0.mounts;
        if c.mounts.is_empty() && !snapshot.0.from_file {
            c.mounts = recorded.clone();
            return Ok(());
        }
        if let Some(m) = c.mounts.iter().find(|m| !recorded.iter().any(|r| r.guest == m.guest)) {
            return Err(Error::InvalidConfig(format!(
                "mount at {}: the snapshot's guest has no mount there (mounts are fixed when a snapshot is taken)",
                m.guest
            )));
        }
        // In the snapshot's order: its file handles refer to mounts by index.
        let mut mounts = Vec::with_capacity(recorded.len());
        for Mount { host, guest, .. } in recorded {
            let mut given = c.mounts.iter().filter(|m| m.guest == *guest);
            let m = given.next().ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "the snapshot's guest has a mount at {guest} ({} when it was taken): \
                     give the host directory to mount there",
                    host.display()
                ))
            })?;
            if given.next().is_some() {
                return Err(Error::InvalidConfig(format!("two mounts at {guest}")));
            }
            mounts.push(m.clone());
        }
        c.mounts = mounts;
        Ok(())
    }
}

/// Checks a guest path given in the configuration.
pub(crate) fn guest_path(what: &str, path: &str, root_ok: bool) -> Result<()> {
    fs::check_guest_path(path).map_err(|why| Error::InvalidConfig(format!("{what} {path:?} {why}")))?;
    if path == "/" && !root_ok {
        return Err(Error::InvalidConfig(format!("{what} cannot be /")));
    }
    Ok(())
}

/// Checks files to place in the guest: paths, modes, and that none is
/// inside a (read-only) mount.
pub(crate) fn check_files(config: &Config, files: &[GuestFile]) -> Result<()> {
    for f in files {
        guest_path("file", &f.path, false)?;
        if f.mode & !0o7777 != 0 {
            return Err(Error::InvalidConfig(format!("file {}: mode {:#o} is not permission bits", f.path, f.mode)));
        }
        if let Some(m) = config.mounts.iter().find(|m| fs::path_is_within(&f.path, &m.guest)) {
            return Err(Error::InvalidConfig(format!("file {} is inside the read-only mount {}", f.path, m.guest)));
        }
    }
    Ok(())
}

pub(crate) fn check_input_size(config: &Config, bytes: u64) -> Result<()> {
    if bytes > config.max_input {
        return Err(Error::InvalidConfig(format!(
            "the input (stdin and files) takes {bytes} bytes; max_input is {}",
            config.max_input
        )));
    }
    Ok(())
}
