//! `Sandbox`: configuration, the vCPU worker thread, and one run.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hvsandbox_core::{abi, thread_cpu_time, BootParams, DeadlineTimer, ThreadKicker, VcpuState, Vm, VmError, VmExit};

use crate::command::{Command, GuestFile, ProgramSource, DEFAULT_FILE_MODE};
use crate::error::{Error, ErrorKind, PartialOutput, Result};
use crate::fs::{self, errno_result, FileCollector, HostFs, ManifestRecord, Mount};
use crate::jail::{self, SeccompMode};
use crate::output::{ExitStatus, FaultInfo, Output, Stats};
use crate::snapshot::{GuestLimits, Snapshot, SnapshotPoint, MAX_OPEN_FILES_RANGE, MAX_PROCESSES_RANGE};
use crate::{blank_pool, image_cache, program, vcpu_thread};

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
struct Config {
    memory: u64,
    timeout: Duration,
    max_output: usize,
    env: Vec<(Vec<u8>, Vec<u8>)>,
    mounts: Vec<Mount>,
    files: Vec<GuestFile>,
    cwd: Option<String>,
    max_input: u64,
    max_collect_bytes: u64,
    max_collect_files: usize,
    max_processes: u32,
    max_open_files: u32,
    seccomp: SeccompMode,
    cpu_time: Option<Duration>,
    output_limit_error: bool,
}

/// Builds a [`Sandbox`]; every setting has a sensible default.
#[derive(Clone, Debug)]
pub struct SandboxBuilder {
    config: Config,
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
    /// A file every run starts with, mode 0644 (see [`Command::file`]).
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
    /// missing); a command's own [`Command::cwd`] wins. Default `/`.
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

    fn validate(&self) -> Result<()> {
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

    /// Checks the settings, makes sure KVM is usable and starts the
    /// sandbox's vCPU thread.
    pub fn build(self) -> Result<Sandbox> {
        self.validate()?;
        // Its first run takes a VM made ahead for sandboxes of its size.
        blank_pool::prime_blank(self.config.memory);
        Sandbox::start(self.config, None)
    }

    /// A sandbox whose runs start from `snapshot` instead of booting a
    /// program. Run it with [`Command::resume`].
    ///
    /// Which settings are whose:
    /// - Limits the host enforces (timeout, CPU time, output, input and
    ///   collection caps, seccomp), environment, files and working
    ///   directory are this builder's: a snapshot holds none of them.
    /// - Memory size, [`max_processes`](Self::max_processes) and
    ///   [`max_open_files`](Self::max_open_files) live in the snapshot's
    ///   guest, fixed when it booted: they are the snapshot's. Setting one
    ///   of them on this builder to another value fails with
    ///   `InvalidConfig` (it is never silently replaced).
    /// - Mounts: the guest paths are the snapshot's (the guest's file tree
    ///   is in its memory), the host directories behind them this
    ///   builder's. [`mount`](Self::mount) a host directory at each of the
    ///   snapshot's guest paths ([`Snapshot::mounts`]) and at no other
    ///   path, or fail with `InvalidConfig`; the host directory may differ
    ///   from the one the snapshot was taken with (say, on another host).
    ///   With no mounts given, a snapshot taken in this process mounts the
    ///   host directories it was taken with; one loaded from a file never
    ///   makes the host open a path the caller did not give (the file is
    ///   untrusted input), so its mounts must be given.
    pub fn build_from(mut self, snapshot: &Snapshot) -> Result<Sandbox> {
        self.adopt(snapshot)?;
        self.validate()?;
        // Its first run takes a clone made ahead.
        blank_pool::prime_clone(snapshot);
        Sandbox::start(self.config, Some(snapshot.clone()))
    }
}

impl SandboxBuilder {
    /// Takes what `snapshot`'s guest fixed, checking what the caller set
    /// against it (see [`SandboxBuilder::build_from`]).
    fn adopt(&mut self, snapshot: &Snapshot) -> Result<()> {
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
fn guest_path(what: &str, path: &str, root_ok: bool) -> Result<()> {
    fs::check_guest_path(path).map_err(|why| Error::InvalidConfig(format!("{what} {path:?} {why}")))?;
    if path == "/" && !root_ok {
        return Err(Error::InvalidConfig(format!("{what} cannot be /")));
    }
    Ok(())
}

/// Checks files to place in the guest: paths, modes, and that none is
/// inside a (read-only) mount.
fn check_files(config: &Config, files: &[GuestFile]) -> Result<()> {
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

fn check_input_size(config: &Config, bytes: u64) -> Result<()> {
    if bytes > config.max_input {
        return Err(Error::InvalidConfig(format!(
            "the input (stdin and files) takes {bytes} bytes; max_input is {}",
            config.max_input
        )));
    }
    Ok(())
}

/// Shared between a sandbox's worker and its interrupt handles.
#[derive(Debug)]
struct RunControl {
    /// Odd while a run is in progress; each run has its own number.
    generation: AtomicU64,
    /// The generation a kill was aimed at.
    cancelled: AtomicU64,
    kicker: OnceLock<ThreadKicker>,
    /// The system call the vCPU thread's jail refused (-1: none).
    violation: AtomicI64,
    /// The vCPU thread's kernel thread id.
    vcpu_tid: AtomicI64,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            generation: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            kicker: OnceLock::new(),
            violation: AtomicI64::new(-1),
            vcpu_tid: AtomicI64::new(0),
        }
    }
}

/// Stops the sandbox's current run from any thread. It never affects a
/// run that starts after the call.
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    control: Arc<RunControl>,
}

impl InterruptHandle {
    /// Stops the run in progress, if any; that run returns
    /// [`Error::Cancelled`]. Does nothing when the sandbox is idle.
    pub fn kill(&self) {
        let c = &self.control;
        let generation = c.generation.load(Ordering::SeqCst);
        if generation % 2 == 1 {
            c.cancelled.store(generation, Ordering::SeqCst);
            if let Some(k) = c.kicker.get() {
                k.kick();
            }
        }
    }
}

enum Reply {
    Run(Box<Output>),
    Syscall(i64),
    /// A run stopped at its snapshot point: the VM (for the caller to copy
    /// its memory) and the vCPU's registers.
    Snapshot(Box<(Vm, VcpuState, Vec<crate::fs::FsEntry>)>),
}

enum Job {
    Run {
        command: Command,
        prepared: Box<Prepared>,
        /// Stop at this snapshot point and hand the VM back.
        take: Option<SnapshotPoint>,
    },
    /// Test hook: make this system call on the vCPU thread.
    Syscall(i64, [u64; 6]),
    /// Make the VM of a snapshot sandbox now, so its next run does not.
    Warm,
}

/// Everything a run needs that the caller's thread can work out before
/// the vCPU thread (which runs under the seccomp filter and touches no
/// host files but the mounts' through their handles) takes over.
struct Prepared {
    /// The program, or None when resuming the sandbox's snapshot.
    image: Option<Arc<[u8]>>,
    argv: Vec<Vec<u8>>,
    envp: Vec<Vec<u8>>,
    seed: [u8; 32],
    manifest: Vec<u8>,
    fs: HostFs,
    collector: FileCollector,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Result<Reply>>,
    /// The vCPU thread serving this sandbox.
    thread: Option<vcpu_thread::VcpuThread>,
}

/// A sandbox: runs programs, one at a time, each in a fresh micro-VM.
///
/// ```no_run
/// use hvsandbox::{Command, Sandbox};
/// use std::time::Duration;
/// let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(2)).build()?;
/// let out = sb.run(&Command::new("/bin/busybox").args(["echo", "hi"]))?;
/// assert_eq!(out.status.code(), Some(0));
/// # Ok::<(), hvsandbox::Error>(())
/// ```
pub struct Sandbox {
    config: Config,
    control: Arc<RunControl>,
    worker: Mutex<Worker>,
    poisoned: Option<String>,
    /// The snapshot every run starts from, for a sandbox built from one.
    snapshot: Option<Snapshot>,
    /// Who the mount roots were when the sandbox was built (its vCPU
    /// thread may read below those directories only).
    roots: jail::RootIds,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("config", &self.config).field("poisoned", &self.poisoned).finish()
    }
}

impl Sandbox {
    /// A builder with the default settings.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    fn start(config: Config, snapshot: Option<Snapshot>) -> Result<Sandbox> {
        hvsandbox_core::probe_kvm().map_err(map_vm_error)?;
        let _ = reaper();
        let control = Arc::new(RunControl::default());
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_config = config.clone();
        let worker_control = control.clone();
        let worker_snapshot = snapshot.clone();
        let mode = jail::effective_mode(config.seccomp);
        let roots = jail::MountRoots::open(config.mounts.iter().map(|m| m.host.as_path()))?;
        let root_ids = roots.ids().clone();
        if snapshot.is_some() {
            // Opened here: the vCPU thread may not open it.
            let _ = pagemap();
        }
        let body: vcpu_thread::Body = Box::new(move |kit: &vcpu_thread::Kit| {
            let (timer, cpu_timer) = (&kit.timer, &kit.cpu_timer);
            let _ = worker_control.kicker.set(ThreadKicker::current());
            // SAFETY: gettid has no arguments and cannot fail.
            worker_control.vcpu_tid.store(unsafe { libc::gettid() } as i64, Ordering::SeqCst);
            // Refused calls from now on are this sandbox's.
            jail::rebind(&worker_control.violation);
            // What resetting to the snapshot in place needs (a read-only
            // mapping of the snapshot; the page map opened above).
            let reset_aid = worker_snapshot.as_ref().and_then(ResetAid::new);
            let _ = ready_tx.send(Ok(()));
            // A sandbox built from a snapshot keeps its VM between runs
            // (reset to the snapshot at the start of each).
            let mut kept: Option<Vm> = None;
            // The kept VM is in the snapshot's state already: made from
            // it, or reset right after its last run (off the next
            // caller's path).
            let mut ready = false;
            // A cold sandbox that runs again makes the next run's blank
            // VM while it waits for that run, off the caller's path, and
            // boots the runtime in it as far as it goes without a program.
            let make_spare = || {
                if worker_snapshot.is_some() {
                    return None;
                }
                one_at_a_time(|| {
                    let mut vm = Vm::new(worker_config.memory).ok()?;
                    match vm.preboot() {
                        Ok(()) => Some(vm),
                        Err(_) => {
                            drop(vm);
                            None
                        }
                    }
                })
            };
            let mut spare: Option<Vm> = None;
            // Whether a run happened: a cold sandbox that runs again gets
            // its next VM made once it has been idle a moment.
            let mut ran = false;
            // A cold run's VM, torn down on this thread once the sandbox
            // is idle (on the reaper, concurrently with this thread
            // making the next VM or running, both stalled for ~20 ms at
            // times: measured, likely KVM's MMU-notifier registration
            // taking all of the process's memory locks while a teardown
            // holds some); on the reaper if the sandbox is dropped or
            // the next run comes first.
            let mut retired: Option<Vm> = None;
            loop {
                let idle_work = worker_snapshot.is_none() && (retired.is_some() || (ran && spare.is_none()));
                let job = if idle_work {
                    match job_rx.recv_timeout(SPARE_AFTER_IDLE) {
                        Ok(job) => {
                            if let Some(vm) = retired.take() {
                                reap(vm);
                            }
                            job
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // Idle: the last VM's teardown, then (unless a
                            // run came meanwhile) the next one's making.
                            if let Some(vm) = retired.take() {
                                one_at_a_time(|| drop(vm));
                                match job_rx.try_recv() {
                                    Ok(job) => job,
                                    Err(mpsc::TryRecvError::Empty) => {
                                        spare = make_spare();
                                        continue;
                                    }
                                    Err(mpsc::TryRecvError::Disconnected) => break,
                                }
                            } else {
                                spare = make_spare();
                                continue;
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                } else {
                    match job_rx.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                let (command, prepared, take) = match job {
                    Job::Run { command, prepared, take } => (command, *prepared, take),
                    Job::Warm => {
                        let reply = match (&worker_snapshot, &kept) {
                            (Some(snap), None) => match clone_vm(snap, reset_aid.as_ref()) {
                                Ok(vm) => {
                                    kept = Some(vm);
                                    ready = true;
                                    Ok(Reply::Syscall(0))
                                }
                                Err(e) => Err(e),
                            },
                            _ => Ok(Reply::Syscall(0)),
                        };
                        if result_tx.send(reply).is_err() {
                            break;
                        }
                        continue;
                    }
                    Job::Syscall(nr, a) => {
                        // SAFETY: a test hook making one system call as a VMM bug would.
                        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) } as i64;
                        let r = if r == -1 {
                            -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
                        } else {
                            r
                        };
                        let reply = match jail_violation(&worker_control) {
                            Some(e) => Err(e),
                            None => Ok(Reply::Syscall(r)),
                        };
                        let stop = reply.is_err();
                        if result_tx.send(reply).is_err() || stop {
                            break;
                        }
                        continue;
                    }
                };
                let mut runner = Runner::new(&worker_config, &worker_control, timer, cpu_timer);
                runner.fs = prepared.fs;
                runner.collector = prepared.collector;
                runner.take = take;
                runner.restore = worker_snapshot.clone();
                runner.kept = kept.take();
                runner.kept_ready = std::mem::take(&mut ready);
                runner.spare = spare.take();
                runner.reset_aid = reset_aid.as_ref();
                let boot = Boot {
                    image: prepared.image,
                    argv: prepared.argv,
                    envp: prepared.envp,
                    seed: prepared.seed,
                    manifest: prepared.manifest,
                };
                let (result, mut vm) = runner.run(&command, &boot);
                // A refused system call anywhere in the run wins.
                let violation = jail_violation(&worker_control);
                let stop = violation.is_some();
                let reply = match violation {
                    Some(e) => Err(e),
                    None => match result {
                        Ok(Ended::Output(o)) => Ok(Reply::Run(o)),
                        Ok(Ended::Snapshot(state, fs)) => match vm.take() {
                            Some(v) => Ok(Reply::Snapshot(Box::new((v, *state, fs)))),
                            None => Err(Error::Internal { context: "snapshot without a VM".into(), source: None }),
                        },
                        Err(e) => Err(e),
                    },
                };
                // A VM whose run ended in a way no sound guest ends
                // (a crash, an exit KVM could not handle, a hostile
                // hypercall) is not reset for the next run but replaced.
                let sound = match &reply {
                    Ok(_) => true,
                    Err(e) => matches!(
                        e.kind(),
                        ErrorKind::Timeout
                            | ErrorKind::Cancelled
                            | ErrorKind::OutputLimitExceeded
                            | ErrorKind::MemoryLimitExceeded
                    ),
                };
                if result_tx.send(reply).is_err() || stop {
                    break;
                }
                if let (Some(snap), true) = (&worker_snapshot, sound) {
                    // Reset now, while the caller reads its output,
                    // rather than when the next run comes.
                    kept = vm.and_then(|mut vm| match make_ready(&mut vm, snap, reset_aid.as_ref(), true) {
                        Ok(()) => Some(vm),
                        Err(_) => {
                            reap(vm);
                            None
                        }
                    });
                    ready = kept.is_some();
                } else {
                    if let Some(old) = retired.take() {
                        reap(old);
                    }
                    retired = vm;
                    ran = true;
                }
            }
            for vm in [spare, kept, retired].into_iter().flatten() {
                reap(vm);
            }
            drop(reset_aid);
            jail_violation(&worker_control).is_none()
        });
        let thread = vcpu_thread::VcpuThread::start(mode, roots, body)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Internal { context: "vCPU thread died at start".into(), source: None }),
        }
        Ok(Sandbox {
            config,
            control,
            worker: Mutex::new(Worker { jobs, results, thread: Some(thread) }),
            poisoned: None,
            snapshot,
            roots: root_ids,
        })
    }

    /// Hands a job to the vCPU thread and waits for its result.
    fn submit(&mut self, job: Job) -> Result<Reply> {
        let worker = self.worker.get_mut().unwrap_or_else(|e| e.into_inner());
        let control = &self.control;
        let gone = || {
            jail_violation(control)
                .unwrap_or_else(|| Error::Internal { context: "the vCPU thread is gone".into(), source: None })
        };
        worker.jobs.send(job).map_err(|_| gone())?;
        worker.results.recv().map_err(|_| gone())?
    }

    /// The vCPU thread's kernel thread id (for inspecting its jail).
    #[doc(hidden)]
    pub fn vcpu_thread_id(&self) -> i64 {
        self.control.vcpu_tid.load(Ordering::SeqCst)
    }

    /// Test hook: makes system call `nr` (without arguments) on the vCPU
    /// thread (all arguments zero), as a VMM bug would; returns its result
    /// (-1 for a failure).
    #[doc(hidden)]
    pub fn debug_syscall_on_vcpu_thread(&mut self, nr: i64) -> Result<i64> {
        self.debug_syscall_with_args_on_vcpu_thread(nr, [0; 6]).map(|r| r.max(-1))
    }

    /// Test hook: makes system call `nr` with `args` on the vCPU thread,
    /// as a VMM bug would; returns its result, `-errno` for a failure.
    #[doc(hidden)]
    pub fn debug_syscall_with_args_on_vcpu_thread(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        if let Some(why) = &self.poisoned {
            return Err(Error::SandboxPoisoned(why.clone()));
        }
        let r = self.submit(Job::Syscall(nr, args));
        match r {
            Ok(Reply::Syscall(v)) => Ok(v),
            Ok(_) => Err(Error::Internal { context: "unexpected reply".into(), source: None }),
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// A handle that can stop this sandbox's current run from another thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle { control: self.control.clone() }
    }

    /// Runs `command` to completion in a fresh micro-VM. A program that
    /// exits non-zero or dies of a signal is an `Ok` output; errors are
    /// for runs that did not complete (timeout, cancel, invalid program,
    /// crashed runtime).
    pub fn run(&mut self, command: &Command) -> Result<Output> {
        if let Some(why) = &self.poisoned {
            return Err(Error::SandboxPoisoned(why.clone()));
        }
        let prepared = prepare(&self.config, &self.roots, self.snapshot.as_ref(), command)?;
        let result = self.submit(Job::Run { command: command.clone(), prepared: Box::new(prepared), take: None });
        let result = result.and_then(|r| match r {
            Reply::Run(out) => Ok(*out),
            _ => Err(Error::Internal { context: "unexpected reply".into(), source: None }),
        });
        if let Err(e) = &result {
            if e.poisons() {
                self.poisoned = Some(e.to_string());
            }
        }
        result
    }

    /// Runs `command` up to a snapshot point and freezes it there: at
    /// [`SnapshotPoint::Entry`] right after the program is loaded, at
    /// [`SnapshotPoint::Checkpoint`] where it first reads
    /// `/dev/hvsandbox/checkpoint` (for an interpreter: after importing its
    /// libraries). Sandboxes built from the snapshot
    /// ([`Sandbox::from_snapshot`]) start every run there.
    pub fn snapshot(&mut self, command: &Command, point: SnapshotPoint) -> Result<Snapshot> {
        if let Some(why) = &self.poisoned {
            return Err(Error::SandboxPoisoned(why.clone()));
        }
        if self.snapshot.is_some() {
            return Err(Error::InvalidConfig("a sandbox built from a snapshot cannot take another one yet".into()));
        }
        let prepared = prepare(&self.config, &self.roots, None, command)?;
        let reply = self.submit(Job::Run { command: command.clone(), prepared: Box::new(prepared), take: Some(point) });
        let reply = match reply {
            Err(e) => {
                if e.poisons() {
                    self.poisoned = Some(e.to_string());
                }
                return Err(e);
            }
            Ok(r) => r,
        };
        match reply {
            Reply::Snapshot(b) => {
                let (vm, state, fs) = *b;
                let mounts = self.config.mounts.clone();
                let limits = GuestLimits {
                    max_processes: self.config.max_processes,
                    max_open_files: self.config.max_open_files,
                };
                let snap = Snapshot::capture(&vm, state, point, command.argv0.clone(), mounts, limits, fs);
                reap(vm);
                snap
            }
            Reply::Run(out) => Err(Error::SnapshotFailed(format!(
                "the program ended ({}) before reaching its {}",
                out.status,
                if point == SnapshotPoint::Entry {
                    "entry"
                } else {
                    "checkpoint (a read of /dev/hvsandbox/checkpoint)"
                }
            ))),
            Reply::Syscall(_) => Err(Error::Internal { context: "unexpected reply".into(), source: None }),
        }
    }

    /// A sandbox whose runs all start from `snapshot` (default limits; see
    /// [`SandboxBuilder::build_from`] to set them).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Sandbox> {
        SandboxBuilder::default().build_from(snapshot)
    }

    /// For a sandbox built from a snapshot: makes its VM now, so that the
    /// next run does not pay for it (what a pool does in the background).
    pub fn warm(&mut self) -> Result<()> {
        if self.snapshot.is_none() {
            return Ok(());
        }
        self.submit(Job::Warm).map(|_| ())
    }

    /// Whether an earlier failure made this sandbox unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The snapshot this sandbox starts from, if any.
    pub fn source_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let worker = self.worker.get_mut().unwrap_or_else(|e| e.into_inner());
        // Closing the job channel ends the worker's loop.
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(&mut worker.jobs, dead));
        if let Some(t) = worker.thread.take() {
            // Kept for the next sandbox, or ended here.
            t.finish();
        }
    }
}

pub(crate) fn map_vm_error(e: VmError) -> Error {
    match e {
        VmError::KvmOpen(source) => {
            let errno = source.errno();
            let reason = match errno {
                libc::ENOENT => "/dev/kvm does not exist: run on a host with KVM enabled \
                                 (load kvm_intel or kvm_amd, or enable nested virtualisation)"
                    .to_string(),
                libc::EACCES | libc::EPERM => "no permission to open /dev/kvm: add this user to the \
                                               'kvm' group (usermod -aG kvm $USER) and log in again"
                    .to_string(),
                _ => format!("cannot open /dev/kvm (errno {errno})"),
            };
            Error::KvmUnavailable { reason, source: Some(std::io::Error::from_raw_os_error(errno)) }
        }
        VmError::KvmVersion(v) => {
            Error::KvmUnavailable { reason: format!("unsupported KVM API version {v}"), source: None }
        }
        VmError::MemorySize { .. } => Error::InvalidConfig(e.to_string()),
        VmError::ImageTooLarge { .. } | VmError::ArgsTooLarge { .. } | VmError::ManifestTooLarge { .. } => {
            Error::InvalidConfig(e.to_string())
        }
        other => Error::Internal { context: other.to_string(), source: Some(Box::new(other)) },
    }
}

/// Reads and checks the program and lays out everything the guest needs
/// (on the caller's thread).
fn prepare(config: &Config, roots: &jail::RootIds, snapshot: Option<&Snapshot>, command: &Command) -> Result<Prepared> {
    roots.check(config.mounts.iter().map(|m| m.host.as_path()))?;
    let name = command.program_name();
    let image: Option<Arc<[u8]>> = match (&command.source, snapshot) {
        (ProgramSource::Resume, Some(_)) => None,
        (ProgramSource::Resume, None) => {
            return Err(Error::InvalidConfig("Command::resume() runs a sandbox built from a snapshot".into()))
        }
        (_, Some(_)) => {
            return Err(Error::InvalidConfig(
                "a sandbox built from a snapshot runs only Command::resume() commands".into(),
            ))
        }
        (ProgramSource::Bytes(b), None) => Some(b.clone()),
        (ProgramSource::Path(p), None) => {
            let meta = std::fs::metadata(p)
                .map_err(|e| Error::InvalidProgram { program: name.clone(), reason: format!("cannot read it: {e}") })?;
            if !meta.is_file() || meta.len() > MAX_PROGRAM_SIZE {
                return Err(Error::InvalidProgram {
                    program: name.clone(),
                    reason: "not a regular file of at most 1 GiB".into(),
                });
            }
            Some(
                image_cache::read(p, &meta).map_err(|e| Error::InvalidProgram {
                    program: name.clone(),
                    reason: format!("cannot read it: {e}"),
                })?,
            )
        }
    };
    if let Some(image) = &image {
        program::validate(&name, image)?;
    }
    let (argv, envp) = match snapshot {
        // An entry snapshot's runs get a whole new argv (after the
        // snapshot's argv[0]) and environment; a checkpoint's get the
        // arguments its checkpoint read returns and the environment
        // /dev/hvsandbox/env returns.
        Some(snap) if snap.point() == SnapshotPoint::Entry => {
            let mut argv = vec![snap.0.argv0.clone()];
            argv.extend(command.args.iter().cloned());
            (argv, environment(config, command))
        }
        Some(_) => (command.args.clone(), environment(config, command)),
        None => {
            let mut argv = Vec::with_capacity(command.args.len() + 1);
            argv.push(command.argv0.clone());
            argv.extend(command.args.iter().cloned());
            (argv, environment(config, command))
        }
    };
    let mut seed = [0u8; 32];
    getrandom(&mut seed);
    let mut fs = match snapshot {
        // The guest refers to host files by the snapshot's handles; its
        // mounts are the sandbox's, in the snapshot's order (see
        // `SandboxBuilder::adopt`).
        Some(snap) => HostFs::import(&snap.0.fs, &config.mounts)
            .map_err(|e| Error::InvalidConfig(format!("cannot open the snapshot's mounts again: {e}")))?,
        None => HostFs::default(),
    };
    let (manifest, collector) = prepare_fs(config, command, &mut fs, snapshot.is_none())?;
    Ok(Prepared { image, argv, envp, seed, manifest, fs, collector })
}

/// What `Vm::boot` gets for one run (or, resuming a snapshot, what the
/// guest is told when it asks for this run's inputs).
struct Boot {
    image: Option<Arc<[u8]>>,
    argv: Vec<Vec<u8>>,
    envp: Vec<Vec<u8>>,
    seed: [u8; 32],
    manifest: Vec<u8>,
}

fn prepare_fs(
    config: &Config,
    command: &Command,
    fs: &mut HostFs,
    with_mounts: bool,
) -> Result<(Vec<u8>, FileCollector)> {
    check_files(config, &command.files)?;
    if let Some(cwd) = &command.cwd {
        guest_path("working directory", cwd, true)?;
    }
    for c in &command.collect {
        guest_path("collect path", c, true)?;
    }
    // The command's files replace the sandbox's at the same path; the
    // last one given for a path wins.
    let mut files: Vec<&GuestFile> = Vec::new();
    for f in config.files.iter().chain(&command.files) {
        match files.iter_mut().find(|g| g.path == f.path) {
            Some(slot) => *slot = f,
            None => files.push(f),
        }
    }
    let input = files.iter().map(|f| f.data.len() as u64).sum::<u64>() + command.stdin.len() as u64;
    check_input_size(config, input)?;

    let mut records = Vec::new();
    for m in config.mounts.iter().filter(|_| with_mounts) {
        let handle = fs
            .add_mount(&m.host, m.kernel_fs)
            .map_err(|e| Error::InvalidConfig(format!("cannot open mount source {}: {e}", m.host.display())))?;
        let path = m.guest.clone();
        records.push(ManifestRecord { kind: abi::fs::ENTRY_MOUNT, mode: 0, handle, size: 0, path });
    }
    for f in files {
        let handle = fs
            .add_blob(f.data.clone(), f.mode)
            .map_err(|_| Error::InvalidConfig(format!("too many files (at most {})", fs::MAX_HANDLES)))?;
        records.push(ManifestRecord {
            kind: abi::fs::ENTRY_FILE,
            mode: f.mode,
            handle,
            size: f.data.len() as u64,
            path: f.path.clone(),
        });
    }
    for c in &command.collect {
        records.push(ManifestRecord { kind: abi::fs::ENTRY_COLLECT, mode: 0, handle: 0, size: 0, path: c.clone() });
    }
    if let Some(cwd) = command.cwd.as_ref().or(config.cwd.as_ref()) {
        records.push(ManifestRecord { kind: abi::fs::ENTRY_CWD, mode: 0, handle: 0, size: 0, path: cwd.clone() });
    }
    let collector = FileCollector::new(command.collect.clone(), config.max_collect_bytes, config.max_collect_files);
    Ok((fs::encode_manifest(&records), collector))
}

/// The sandbox's environment with the command's on top, as KEY=VALUE.
fn environment(config: &Config, command: &Command) -> Vec<Vec<u8>> {
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let base = if command.env_clear { &[][..] } else { &config.env[..] };
    for (k, v) in base.iter().chain(&command.env) {
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    vars.into_iter()
        .map(|(mut k, v)| {
            k.push(b'=');
            k.extend_from_slice(&v);
            k
        })
        .collect()
}

/// VM creation and destruction happen one at a time in this process: the
/// two at the same time stalled each other for ~20 ms at times (measured;
/// likely KVM's MMU-notifier registration taking all of the process's
/// memory locks while a teardown holds some).
static LIFECYCLE: Mutex<()> = Mutex::new(());

fn one_at_a_time<T>(f: impl FnOnce() -> T) -> T {
    let _turn = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// The queue of the background thread ("reaper") that destroys VMs off
/// the vCPU threads' paths and, in between, makes the blank VMs of
/// [`blank_pool`]: one after the other (VM creation and destruction running
/// at the same time in one process stalled both for ~20 ms at times,
/// measured). It runs guest code (the runtime's boot), so it lives in the
/// same jail as a vCPU thread.
static REAPER: OnceLock<Option<Mutex<mpsc::Sender<Reap>>>> = OnceLock::new();

/// The reaper's queue, started on first use from a caller's thread (a vCPU
/// thread's jail does not allow starting threads; `Sandbox::start` calls
/// this before it starts one).
fn reaper() -> &'static Option<Mutex<mpsc::Sender<Reap>>> {
    REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Reap>();
        std::thread::Builder::new()
            .name("hvsandbox-vms".into())
            .spawn(move || {
                static VIOLATION: AtomicI64 = AtomicI64::new(-1);
                // Always enforcing (the environment cannot weaken it); it
                // may read no file by path.
                let jailed = jail::enter(SeccompMode::Enforce, &VIOLATION, &[]).is_ok();
                if !jailed {
                    blank_pool::give_up();
                }
                loop {
                    let job = match rx.try_recv() {
                        Ok(job) => job,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                        Err(mpsc::TryRecvError::Empty) => {
                            // Nothing to destroy: make a blank VM if one is
                            // wanted, else wait.
                            if let Some(want) = blank_pool::wanted().filter(|_| jailed) {
                                let made = match want {
                                    blank_pool::Want::Blank(mem) => {
                                        one_at_a_time(|| Vm::new(mem).and_then(|mut vm| vm.preboot().map(|()| vm)))
                                            .map_err(map_vm_error)
                                    }
                                    blank_pool::Want::Clone(snap) => one_at_a_time(|| {
                                        Vm::from_snapshot_memory(snap.memory_fd(), snap.memory_bytes())
                                    })
                                    .map_err(map_vm_error)
                                    .and_then(|mut vm| make_ready(&mut vm, &snap, None, false).map(|()| vm)),
                                };
                                match made {
                                    Ok(vm) => blank_pool::put(vm),
                                    Err(_) => blank_pool::failed(),
                                }
                                if VIOLATION.load(Ordering::SeqCst) >= 0 {
                                    blank_pool::give_up();
                                }
                                continue;
                            }
                            match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        }
                    };
                    match job {
                        Reap::Vm(vm) => one_at_a_time(|| drop(vm)),
                        Reap::Flush(done) => {
                            let _ = done.send(());
                        }
                        Reap::Wake => {}
                    }
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    })
}

/// Tells the background thread to look at the blank VM pool (started
/// already: a sandbox exists; never started from here).
pub(crate) fn wake_reaper() {
    if let Some(Some(tx)) = REAPER.get() {
        let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Reap::Wake);
    }
}

enum Reap {
    Vm(Box<Vm>),
    /// The blank VM pool wants a look.
    Wake,
    /// Answered once everything queued before it is destroyed.
    Flush(mpsc::Sender<()>),
}

/// A read-only view of a snapshot's memory and the process's page map,
/// for resetting a VM to the snapshot in place.
struct ResetAid {
    view: *const u8,
    len: usize,
    pagemap: std::os::fd::BorrowedFd<'static>,
}

/// The process's page map (`/proc/self/pagemap`, for `PAGEMAP_SCAN`),
/// opened once, on a caller's thread: the vCPU threads' jail lets them
/// open no file by path but below their mount roots.
fn pagemap() -> Option<std::os::fd::BorrowedFd<'static>> {
    static PAGEMAP: OnceLock<Option<std::os::fd::OwnedFd>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok().map(std::os::fd::OwnedFd::from))
        .as_ref()
        .map(|fd| fd.as_fd())
}

impl ResetAid {
    fn new(snap: &Snapshot) -> Option<ResetAid> {
        use std::os::fd::AsRawFd;
        let pagemap = pagemap()?;
        let len = snap.memory_bytes() as usize;
        // SAFETY: a read-only shared mapping of the (sealed) snapshot file.
        let view = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, snap.memory_fd().as_raw_fd(), 0)
        };
        if view == libc::MAP_FAILED {
            return None;
        }
        Some(ResetAid { view: view as *const u8, len, pagemap })
    }

    fn view(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as self and is never written.
        unsafe { std::slice::from_raw_parts(self.view, self.len) }
    }
}

impl Drop for ResetAid {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping exactly once.
        unsafe { libc::munmap(self.view as *mut libc::c_void, self.len) };
    }
}

/// How long a cold sandbox's vCPU thread waits for the next run before it
/// makes that run's VM ahead of time (a sandbox dropped or reused at once
/// does not pay for a VM it will not use).
const SPARE_AFTER_IDLE: Duration = Duration::from_micros(200);

/// Puts a VM in the snapshot's state, ready to run: its memory (`reset`:
/// the snapshot copied back into the pages the last run wrote, which stay
/// this VM's so writing them again costs no copy-on-write fault; the
/// mapping replaced if that fails; a new VM makes its own copies of the
/// pages runs from this snapshot write, learned from the first reset) and
/// its vCPU.
fn make_ready(vm: &mut Vm, snap: &Snapshot, aid: Option<&ResetAid>, reset: bool) -> Result<()> {
    if reset {
        let mut written = snap.0.hot.get().is_none().then(Vec::new);
        let copied = aid.is_some_and(|aid| vm.reset_memory_by_copy(aid.view(), aid.pagemap, written.as_mut()).is_ok());
        if !copied {
            vm.reset_memory(snap.memory_fd()).map_err(map_vm_error)?;
        } else if let Some(w) = written {
            let _ = snap.0.hot.set(w);
        }
    } else if let Some(hot) = snap.0.hot.get() {
        vm.touch_pages(hot);
    }
    vm.restore_vcpu(&snap.0.vcpu)
        .map_err(|e| Error::SnapshotFailed(format!("KVM refused the snapshot's vCPU state: {e}")))
}

/// A clone of `snap` in its state, ready to run: made ahead by the
/// process-wide pool, or made now.
fn clone_vm(snap: &Snapshot, aid: Option<&ResetAid>) -> Result<Vm> {
    if let Some(vm) = blank_pool::take_clone(snap) {
        return Ok(vm);
    }
    let mut vm =
        one_at_a_time(|| Vm::from_snapshot_memory(snap.memory_fd(), snap.memory_bytes())).map_err(map_vm_error)?;
    make_ready(&mut vm, snap, aid, false)?;
    Ok(vm)
}

/// Destroys a VM on a background thread, off the vCPU threads' paths.
pub(crate) fn reap(vm: Vm) {
    match reaper() {
        Some(tx) => {
            let sent = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Reap::Vm(Box::new(vm)));
            if let Err(mpsc::SendError(job)) = sent {
                drop(job);
            }
        }
        None => one_at_a_time(|| drop(vm)),
    }
}

/// Waits until every VM handed to the background reaper is destroyed
/// (for measuring memory).
#[doc(hidden)]
pub fn wait_for_reaper() {
    if let Some(tx) = reaper() {
        let (done, wait) = mpsc::channel();
        if tx.lock().unwrap_or_else(|e| e.into_inner()).send(Reap::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// The error for a system call the vCPU thread's jail refused, if any.
fn jail_violation(control: &RunControl) -> Option<Error> {
    let nr = control.violation.load(Ordering::SeqCst);
    (nr >= 0).then(|| Error::JailViolation { syscall: jail::describe(nr) })
}

/// Linux's signal for each CPU exception a program can cause.
fn signal_for_vector(vector: u64) -> i32 {
    use abi::vector as v;
    match vector {
        v::DIVIDE_ERROR | v::X87_FP | v::SIMD_FP => libc::SIGFPE,
        v::DEBUG | v::BREAKPOINT => libc::SIGTRAP,
        v::INVALID_OPCODE => libc::SIGILL,
        v::ALIGNMENT_CHECK => libc::SIGBUS,
        _ => libc::SIGSEGV,
    }
}

/// One run on the worker thread.
struct Runner<'a> {
    config: &'a Config,
    control: &'a RunControl,
    timer: &'a DeadlineTimer,
    cpu_timer: &'a DeadlineTimer,
    /// The vCPU thread's CPU time when the run started.
    cpu_start: Duration,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    stdin_pos: usize,
    exits: u64,
    fault: Option<FaultInfo>,
    /// The host objects the guest's filesystem can reach in this run.
    fs: HostFs,
    collector: FileCollector,
    /// Reused buffer for file reads and writes.
    scratch: Vec<u8>,
    /// Take a snapshot at this point instead of finishing the run.
    take: Option<SnapshotPoint>,
    /// The snapshot this run starts from.
    restore: Option<Snapshot>,
    /// The VM of the previous run of this (snapshot) sandbox, to reuse.
    kept: Option<Vm>,
    /// `kept` is in the snapshot's state already (see [`make_ready`]).
    kept_ready: bool,
    /// A blank VM made ahead of this run.
    spare: Option<Vm>,
    /// For resetting to the snapshot in place.
    reset_aid: Option<&'a ResetAid>,
}

enum Flow {
    Continue,
    Exit(ExitStatus),
    Snapshot(Box<VcpuState>),
}

/// How a run's guest stopped.
enum Stop {
    Exit(ExitStatus),
    Snapshot(Box<VcpuState>),
}

/// What a run produced.
enum Ended {
    Output(Box<Output>),
    Snapshot(Box<VcpuState>, Vec<crate::fs::FsEntry>),
}

impl<'a> Runner<'a> {
    fn new(
        config: &'a Config,
        control: &'a RunControl,
        timer: &'a DeadlineTimer,
        cpu_timer: &'a DeadlineTimer,
    ) -> Self {
        Runner {
            config,
            control,
            timer,
            cpu_timer,
            cpu_start: Duration::ZERO,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdin_pos: 0,
            exits: 0,
            fault: None,
            fs: HostFs::default(),
            collector: FileCollector::new(Vec::new(), 0, 0),
            scratch: Vec::new(),
            take: None,
            restore: None,
            kept: None,
            kept_ready: false,
            spare: None,
            reset_aid: None,
        }
    }

    /// Attaches the output of a stopped run to its error: what reached the
    /// host plus what was still buffered in the guest.
    fn with_partial_output(&mut self, mut e: Error, vm: Option<&Vm>) -> Error {
        let salvage = matches!(e, Error::Timeout { .. } | Error::Cancelled { .. } | Error::MemoryLimitExceeded { .. });
        let wants = salvage || matches!(e, Error::OutputLimitExceeded { .. });
        if !wants {
            return e;
        }
        if let (true, Some(vm)) = (salvage, vm) {
            self.salvage_guest_buffers(vm);
        }
        let output =
            PartialOutput { stdout: std::mem::take(&mut self.stdout), stderr: std::mem::take(&mut self.stderr) };
        match &mut e {
            Error::Timeout { partial, .. }
            | Error::Cancelled { partial }
            | Error::MemoryLimitExceeded { partial, .. }
            | Error::OutputLimitExceeded { partial, .. } => **partial = output,
            _ => {}
        }
        e
    }

    /// Takes output the guest runtime had buffered but not sent (the
    /// buffers' place is published in its stats page; every length read
    /// from the guest is checked).
    fn salvage_guest_buffers(&mut self, vm: &Vm) {
        let at = abi::STATS_GPA + std::mem::offset_of!(abi::RuntimeStats, out_buffers_gpa) as u64;
        let Ok(buffers) = vm.read_obj::<u64>(at) else { return };
        for (fd, gpa, len) in guest_buffers(vm, buffers) {
            let (buf, truncated) = if fd == 1 {
                (&mut self.stdout, &mut self.stdout_truncated)
            } else {
                (&mut self.stderr, &mut self.stderr_truncated)
            };
            let take = (len as usize).min(self.config.max_output.saturating_sub(buf.len()));
            if take < len as usize {
                *truncated = true;
            }
            let at = buf.len();
            buf.resize(at + take, 0);
            if vm.read_bytes(gpa, &mut buf[at..]).is_err() {
                buf.truncate(at);
            }
        }
    }

    /// Appends `len` bytes of guest memory at `gpa` to stream `fd` (1 or
    /// 2), up to the output cap. Returns whether anything was dropped
    /// ("full" only then, so output of exactly the cap is not flagged as
    /// truncated); an error instead when the config asks for one.
    fn append_output(&mut self, vm: &Vm, fd: u64, gpa: u64, len: u64) -> Result<bool> {
        let (buf, truncated) = if fd == 1 {
            (&mut self.stdout, &mut self.stdout_truncated)
        } else {
            (&mut self.stderr, &mut self.stderr_truncated)
        };
        let room = self.config.max_output.saturating_sub(buf.len());
        let take = (len as usize).min(room);
        if take > 0 {
            let at = buf.len();
            buf.resize(at + take, 0);
            if let Err(e) = vm.read_bytes(gpa, &mut buf[at..]) {
                buf.truncate(at);
                return Err(map_vm_error(e));
            }
        }
        if take == len as usize {
            return Ok(false);
        }
        *truncated = true;
        if self.config.output_limit_error {
            let stream = if fd == 1 { "stdout" } else { "stderr" };
            return Err(Error::OutputLimitExceeded { stream, limit: self.config.max_output, partial: Box::default() });
        }
        Ok(true)
    }

    /// Runs the command; returns the VM too so the caller can destroy it
    /// after handing back the result.
    fn run(mut self, command: &Command, boot: &Boot) -> (Result<Ended>, Option<Vm>) {
        let generation = self.control.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let started = Instant::now();
        let cpu_start = thread_cpu_time();
        let deadline = started + self.config.timeout;
        let mut vm = None;
        self.cpu_start = cpu_start;
        let result = self.run_inner(command, boot, generation, deadline, &mut vm);
        let _ = self.timer.disarm();
        let _ = self.cpu_timer.disarm();
        let result = result.map_err(|e| self.with_partial_output(e, vm.as_ref()));
        self.control.generation.fetch_add(1, Ordering::SeqCst);
        let result = result.and_then(|stop| {
            let status = match stop {
                Stop::Exit(status) => status,
                Stop::Snapshot(state) => return Ok(Ended::Snapshot(state, self.fs.export())),
            };
            let Some(vm) = vm.as_ref() else {
                return Err(Error::Internal { context: "a finished run has no VM".into(), source: None });
            };
            let rs = vm.runtime_stats().map_err(map_vm_error)?;
            let unknown_syscalls: BTreeMap<u32, u64> = rs
                .unknown_by_nr
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(nr, &n)| (nr as u32, n as u64))
                .collect();
            let (files, files_truncated) = self.collector.take();
            Ok(Ended::Output(Box::new(Output {
                status,
                stdout: std::mem::take(&mut self.stdout),
                stderr: std::mem::take(&mut self.stderr),
                stdout_truncated: self.stdout_truncated,
                stderr_truncated: self.stderr_truncated,
                fault: self.fault,
                files,
                files_truncated,
                stats: Stats {
                    wall: started.elapsed(),
                    cpu: thread_cpu_time().saturating_sub(cpu_start),
                    exits: self.exits,
                    syscalls: rs.syscalls,
                    memory_used: rs.frames_used_peak.saturating_mul(abi::PAGE_SIZE),
                    page_faults: rs.page_faults,
                    processes: rs.processes,
                    unknown_syscalls,
                },
            })))
        });
        (result, vm)
    }

    fn run_inner(
        &mut self,
        command: &Command,
        boot: &Boot,
        generation: u64,
        deadline: Instant,
        slot: &mut Option<Vm>,
    ) -> Result<Stop> {
        let boot_start = Instant::now();
        let vm = match (&self.restore, &boot.image) {
            // Start from the snapshot: reuse the last run's VM (everything
            // it changed is thrown away) or make one; no boot.
            (Some(snap), _) => {
                let vm = match self.kept.take() {
                    Some(vm) if self.kept_ready => vm,
                    Some(mut vm) => {
                        make_ready(&mut vm, snap, self.reset_aid, true)?;
                        vm
                    }
                    None => clone_vm(snap, self.reset_aid)?,
                };
                let vm = slot.insert(vm);
                // The guest resumes from its snapshot hypercall: this run's
                // inputs wait in the resume area when they fit (no exit to
                // fetch them), else the guest asks for them.
                // A small stdin comes along too (no exits to read it).
                let fits = |blob: &Vec<u8>| blob.len() as u64 <= abi::RESUME_MAX - 8;
                let mut blob = resume_info(vm, boot, Some(&command.stdin));
                if fits(&blob) {
                    self.stdin_pos = command.stdin.len();
                } else {
                    blob = resume_info(vm, boot, None);
                }
                let result = if fits(&blob) {
                    let mut area = Vec::with_capacity(8 + blob.len());
                    area.extend_from_slice(&(blob.len() as u64).to_le_bytes());
                    area.extend_from_slice(&blob);
                    vm.write_bytes(abi::RESUME_GPA, &area).map_err(map_vm_error)?;
                    abi::hc::RESUMED_WITH_INFO
                } else {
                    abi::hc::RESUMED
                };
                vm.set_hypercall_result(result).map_err(map_vm_error)?;
                vm
            }
            (None, Some(image)) => {
                let vm = match self.spare.take().or_else(|| blank_pool::take_blank(self.config.memory)) {
                    Some(vm) => vm,
                    None => one_at_a_time(|| Vm::new(self.config.memory)).map_err(map_vm_error)?,
                };
                let vm = slot.insert(vm);
                let params = BootParams {
                    image,
                    argv: &boot.argv,
                    envp: &boot.envp,
                    random_seed: boot.seed,
                    manifest: &boot.manifest,
                    max_processes: self.config.max_processes,
                    max_open_files: self.config.max_open_files,
                    snapshot_at_entry: self.take == Some(SnapshotPoint::Entry),
                };
                vm.boot(&params).map_err(map_vm_error)?;
                vm
            }
            (None, None) => return Err(Error::Internal { context: "a run without a program".into(), source: None }),
        };
        let mut trace = trace_enabled().then(|| Trace { boot: boot_start.elapsed(), ..Trace::default() });
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::timeout(self.config.timeout));
        }
        self.timer.arm(deadline - now).map_err(map_vm_error)?;

        let cpu_limit = self.config.cpu_time;
        if let Some(limit) = cpu_limit {
            self.cpu_timer
                .arm(limit.saturating_sub(thread_cpu_time().saturating_sub(self.cpu_start)))
                .map_err(map_vm_error)?;
        }
        let cpu_start = self.cpu_start;
        let cpu_over = || cpu_limit.is_some_and(|l| thread_cpu_time().saturating_sub(cpu_start) >= l);
        let control = self.control;
        let should_stop =
            || control.cancelled.load(Ordering::SeqCst) == generation || Instant::now() >= deadline || cpu_over();
        loop {
            let run_start = Instant::now();
            let exit = vm.run(should_stop).map_err(map_vm_error)?;
            if let Some(t) = trace.as_mut() {
                t.guest += run_start.elapsed();
            }
            if exit != VmExit::Interrupted {
                self.exits += 1;
            }
            if let Some(e) = jail_violation(self.control) {
                return Err(e);
            }
            match exit {
                VmExit::Hypercall(nr) => {
                    let hc_start = Instant::now();
                    let flow = self.hypercall(vm, nr, &command.stdin, boot, &should_stop);
                    if let Some(t) = trace.as_mut() {
                        let e = t.hypercalls.entry(nr).or_default();
                        e.0 += 1;
                        e.1 += hc_start.elapsed();
                        if !matches!(flow, Ok(Flow::Continue)) {
                            if let Ok(rs) = vm.runtime_stats() {
                                t.page_faults = rs.page_faults;
                                t.cr3_loads = rs.cr3_loads;
                            }
                            t.print();
                        }
                    }
                    match flow.map_err(|e| match e {
                        Error::InvalidProgram { program, reason } if program.is_empty() => {
                            Error::InvalidProgram { program: command.program_name(), reason }
                        }
                        e => e,
                    })? {
                        Flow::Continue => {}
                        Flow::Exit(status) => return Ok(Stop::Exit(status)),
                        Flow::Snapshot(state) => return Ok(Stop::Snapshot(state)),
                    }
                }
                VmExit::Fault { frame, cr2 } => {
                    if vm.runtime().contains_code(frame.rip) {
                        return Err(Error::GuestCrashed {
                            detail: format!(
                                "exception {} (error {:#x}) in the runtime at {:#x}, address {cr2:#x}",
                                frame.vector, frame.error_code, frame.rip
                            ),
                        });
                    }
                    self.fault = Some(FaultInfo {
                        vector: frame.vector as u8,
                        error_code: frame.error_code,
                        rip: frame.rip,
                        address: (frame.vector == abi::vector::PAGE_FAULT).then_some(cr2),
                    });
                    return Ok(Stop::Exit(ExitStatus::Signal(signal_for_vector(frame.vector))));
                }
                VmExit::Interrupted => {
                    if control.cancelled.load(Ordering::SeqCst) == generation {
                        return Err(Error::cancelled());
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::timeout(self.config.timeout));
                    }
                    if let Some(limit) = cpu_limit.filter(|_| cpu_over()) {
                        return Err(Error::cpu_timeout(limit));
                    }
                }
                VmExit::Shutdown => {
                    return Err(Error::GuestCrashed {
                        detail: "triple fault (the guest's fault handling failed)".into(),
                    })
                }
                VmExit::InternalError { suberror } => {
                    return Err(Error::GuestCrashed {
                        detail: format!("KVM could not run the guest (internal error {suberror})"),
                    })
                }
                VmExit::Unexpected(what) => return Err(Error::GuestCrashed { detail: what }),
            }
        }
    }

    /// Checks the command's files and paths, opens the mounts, registers
    /// the files, and returns the encoded boot manifest.
    fn hypercall(
        &mut self,
        vm: &mut Vm,
        nr: u64,
        stdin: &[u8],
        boot: &Boot,
        should_stop: &dyn Fn() -> bool,
    ) -> Result<Flow> {
        let hostile = |what: String| Error::GuestCrashed { detail: what };
        let args = vm.hypercall_args().map_err(map_vm_error)?.args;
        match nr {
            abi::hc::WRITE => {
                let (fd, va, len) = (args[0], args[1], args[2]);
                let gpa = vm
                    .physmap_range(va, len, abi::HCALL_MAX_LEN)
                    .map_err(|_| hostile(format!("write hypercall with a bad buffer {va:#x}+{len:#x}")))?;
                if fd != 1 && fd != 2 {
                    return Err(hostile(format!("write hypercall to stream {fd}")));
                }
                let full = if self.append_output(vm, fd, gpa, len)? { abi::WRITE_STREAM_FULL } else { 0 };
                vm.set_hypercall_result(full).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            abi::hc::READ => {
                let (va, len) = (args[1], args[2]);
                let gpa = vm
                    .physmap_range(va, len, abi::HCALL_MAX_LEN)
                    .map_err(|_| hostile(format!("read hypercall with a bad buffer {va:#x}+{len:#x}")))?;
                let rest = &stdin[self.stdin_pos.min(stdin.len())..];
                let n = rest.len().min(len as usize);
                vm.write_bytes(gpa, &rest[..n]).map_err(map_vm_error)?;
                self.stdin_pos += n;
                vm.set_hypercall_result(n as u64).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            abi::hc::EXIT => {
                let (code, signal) = (args[0] as i32 & 0xff, args[1]);
                // The run's last output comes with the exit (args[2]: where
                // the runtime's output buffers are).
                for (fd, gpa, len) in guest_buffers(vm, args[2]) {
                    self.append_output(vm, fd, gpa, len)?;
                }
                Ok(Flow::Exit(if signal != 0 && signal < 65 {
                    ExitStatus::Signal(signal as i32)
                } else {
                    ExitStatus::Code(code)
                }))
            }
            abi::hc::PROGRAM_FAULT => {
                // The guest's own account of its program's fault: it can
                // only choose how its program dies, so it is taken as said
                // once the vector is checked.
                let [vector, error_code, rip, cr2, _rsp, _] = args;
                if vector >= 32 {
                    return Err(hostile(format!("fault report with vector {vector}")));
                }
                self.fault = Some(FaultInfo {
                    vector: vector as u8,
                    error_code,
                    rip,
                    address: (vector == abi::vector::PAGE_FAULT).then_some(cr2),
                });
                Ok(Flow::Exit(ExitStatus::Signal(signal_for_vector(vector))))
            }
            abi::hc::SNAPSHOT => {
                if self.take.is_some() && self.restore.is_none() {
                    // Guests restored from this snapshot read RESUMED here
                    // (or RESUMED_WITH_INFO, set when they start).
                    vm.set_hypercall_result(abi::hc::RESUMED).map_err(map_vm_error)?;
                    vm.complete_pending_exit().map_err(map_vm_error)?;
                    let state = vm.save_vcpu().map_err(map_vm_error)?;
                    return Ok(Flow::Snapshot(Box::new(state)));
                }
                // Not taking a snapshot: the guest goes on.
                vm.set_hypercall_result(0).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            abi::hc::RESUME_INFO => {
                let (va, len) = (args[0], args[1]);
                let blob = resume_info(vm, boot, None);
                if self.restore.is_none() {
                    return Err(hostile("resume info asked for by a guest that was not restored".into()));
                }
                if blob.len() as u64 <= len {
                    vm.write_virt(va, &blob).map_err(|_| hostile(format!("resume info to a bad buffer {va:#x}")))?;
                }
                vm.set_hypercall_result(blob.len() as u64).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            abi::hc::OUT_OF_MEMORY => {
                Err(Error::MemoryLimitExceeded { limit: self.config.memory, partial: Box::default() })
            }
            abi::hc::EXEC_FAILED => {
                let (va, len) = (args[1], args[2].min(1024));
                let mut msg = vec![0u8; len as usize];
                if let Ok(gpa) = vm.physmap_range(va, len, 1024) {
                    let _ = vm.read_bytes(gpa, &mut msg);
                }
                // The caller names the program.
                Err(Error::InvalidProgram {
                    program: String::new(),
                    reason: String::from_utf8_lossy(&msg).into_owned(),
                })
            }
            abi::hc::PANIC => {
                let (va, len) = (args[1], args[2].min(1024));
                let mut msg = vec![0u8; len as usize];
                if let Ok(gpa) = vm.physmap_range(va, len, 1024) {
                    let _ = vm.read_bytes(gpa, &mut msg);
                }
                Err(hostile(format!("runtime panic: {}", String::from_utf8_lossy(&msg))))
            }
            abi::hc::SLEEP => {
                sleep_interruptible(Duration::from_nanos(args[0]), should_stop);
                vm.set_hypercall_result(0).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            abi::hc::LOG => {
                vm.set_hypercall_result(0).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            abi::hc::FS_LOOKUP..=abi::hc::FILE_OUT => {
                let ret = self.fs_hypercall(vm, nr, args)?;
                vm.set_hypercall_result(ret).map_err(map_vm_error)?;
                Ok(Flow::Continue)
            }
            other => Err(hostile(format!("unknown hypercall {other:#x}"))),
        }
    }
}

impl Runner<'_> {
    /// Serves one filesystem hypercall. Buffers may be anywhere the
    /// guest has mapped (the runtime passes heap buffers); one that is not
    /// mapped or is over its limit is a hostile request (an error that
    /// ends the run), while a bad handle, name or offset is just `-errno`
    /// for the guest.
    fn fs_hypercall(&mut self, vm: &Vm, nr: u64, args: [u64; 6]) -> Result<u64> {
        use abi::fs::{NAME_MAX, PATH_MAX};
        let bad = |what: &str, va: u64, len: u64| {
            let what = what.to_string();
            move |e: VmError| match e {
                VmError::GuestAccess { .. } => {
                    Error::GuestCrashed { detail: format!("{what} hypercall with a bad buffer {va:#x}+{len:#x}") }
                }
                other => map_vm_error(other),
            }
        };
        let check_len = |what: &str, va: u64, len: u64, max: u64| {
            if len > max {
                return Err(bad(what, va, len)(VmError::GuestAccess { addr: va, len }));
            }
            Ok(len as usize)
        };
        Ok(match nr {
            abi::hc::FS_LOOKUP => {
                let (dir, name_va, name_len, stat_va) = (args[0], args[1], args[2], args[3]);
                if name_len > NAME_MAX as u64 {
                    return Ok(errno_result(libc::ENAMETOOLONG));
                }
                let mut name = [0u8; NAME_MAX];
                let name = &mut name[..name_len as usize];
                vm.read_virt(name_va, name).map_err(bad("lookup", name_va, name_len))?;
                match self.fs.lookup(dir, name) {
                    Ok((handle, st)) => {
                        let st = fs::stat_bytes(&st);
                        vm.write_virt(stat_va, &st).map_err(bad("lookup", stat_va, st.len() as u64))?;
                        handle
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READ => {
                let (handle, offset, va, len) = (args[0], args[1], args[2], args[3]);
                let len = check_len("fs read", va, len, abi::HCALL_MAX_LEN)?;
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                match self.fs.read(handle, offset, &mut self.scratch[..len]) {
                    Ok(n) => {
                        vm.write_virt(va, &self.scratch[..n]).map_err(bad("fs read", va, n as u64))?;
                        n as u64
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READDIR => {
                let (handle, index, va, len) = (args[0], args[1], args[2], args[3]);
                let len = check_len("readdir", va, len, abi::HCALL_MAX_LEN)?;
                match self.fs.readdir(handle, index, len) {
                    Ok(records) => {
                        vm.write_virt(va, &records).map_err(bad("readdir", va, records.len() as u64))?;
                        records.len() as u64
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READLINK => {
                let (handle, va, len) = (args[0], args[1], args[2]);
                let len = check_len("readlink", va, len, abi::HCALL_MAX_LEN)?;
                match self.fs.readlink(handle) {
                    // As readlink(2): the target, cut to the buffer.
                    Ok(target) => {
                        let n = target.len().min(len);
                        vm.write_virt(va, &target[..n]).map_err(bad("readlink", va, n as u64))?;
                        n as u64
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_STAT => {
                let (handle, va) = (args[0], args[1]);
                match self.fs.stat(handle) {
                    Ok(st) => {
                        let st = fs::stat_bytes(&st);
                        vm.write_virt(va, &st).map_err(bad("stat", va, st.len() as u64))?;
                        0
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FILE_OUT => {
                // The mode (args[5]) is not kept: Output::files holds bytes.
                let (path_va, path_len, data_va, data_len, offset) = (args[0], args[1], args[2], args[3], args[4]);
                let len = check_len("file out", data_va, data_len, abi::HCALL_MAX_LEN)?;
                if path_len >= PATH_MAX as u64 {
                    return Ok(errno_result(libc::ENAMETOOLONG));
                }
                let mut path = vec![0u8; path_len as usize];
                vm.read_virt(path_va, &mut path).map_err(bad("file out", path_va, path_len))?;
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                vm.read_virt(data_va, &mut self.scratch[..len]).map_err(bad("file out", data_va, data_len))?;
                match self.collector.file_out(&path, offset, &self.scratch[..len]) {
                    Ok(()) => 0,
                    Err(e) => errno_result(e),
                }
            }
            other => return Err(Error::GuestCrashed { detail: format!("unknown hypercall {other:#x}") }),
        })
    }
}

/// The output the guest runtime has buffered and not sent: (stream, guest
/// address, length) for each stream with something to take, given where
/// the two [`abi::OutBuffer`]s are (guest-physical). Every value read from
/// the guest is checked (a bad one yields nothing).
fn guest_buffers(vm: &Vm, buffers: u64) -> Vec<(u64, u64, u64)> {
    let mut found = Vec::new();
    if buffers == 0 {
        return found;
    }
    let stride = std::mem::size_of::<abi::OutBuffer>() as u64;
    for fd in 1..=2u64 {
        let Some(base) = buffers.checked_add((fd - 1) * stride) else { break };
        let mut head = [0u8; 16];
        if vm.read_bytes(base, &mut head).is_err() {
            break;
        }
        let len = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
        let discard = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        if discard == 0 && len > 0 && len <= abi::OUT_BUF_SIZE as u64 {
            found.push((fd, base + 16, len));
        }
    }
    found
}

/// What a restored guest learns about its run: clocks, fresh randomness,
/// argv/envp, the run's filesystem manifest, and (`stdin`) all of its
/// input when that comes along.
fn resume_info(vm: &Vm, boot: &Boot, stdin: Option<&[u8]>) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut args = Vec::new();
    for s in boot.argv.iter().chain(&boot.envp) {
        args.extend_from_slice(s);
        args.push(0);
    }
    let info = abi::ResumeInfo {
        tsc_khz: vm.tsc_khz_value(),
        // SAFETY: rdtsc has no preconditions.
        tsc: unsafe { core::arch::x86_64::_rdtsc() },
        realtime_ns: now.as_nanos() as u64,
        random_seed: boot.seed,
        argc: boot.argv.len() as u32,
        envc: boot.envp.len() as u32,
        args_len: args.len() as u64,
        manifest_len: boot.manifest.len() as u64,
        stdin_len: stdin.map_or(0, |s| s.len() as u64),
        flags: if stdin.is_some() { abi::RESUME_STDIN_WHOLE } else { 0 },
    };
    // SAFETY: ResumeInfo is repr(C) integers; viewing it as bytes is fine.
    let head = unsafe {
        std::slice::from_raw_parts(
            (&info as *const abi::ResumeInfo).cast::<u8>(),
            std::mem::size_of::<abi::ResumeInfo>(),
        )
    };
    let mut out = head.to_vec();
    out.extend_from_slice(&args);
    out.extend_from_slice(&boot.manifest);
    out.extend_from_slice(stdin.unwrap_or_default());
    out
}

/// Per-run timing printed to stderr when `HVSANDBOX_TRACE` is set: a
/// debugging aid for finding where a run spends its time.
#[derive(Default)]
struct Trace {
    boot: Duration,
    guest: Duration,
    page_faults: u64,
    cr3_loads: u64,
    hypercalls: std::collections::BTreeMap<u64, (u64, Duration)>,
}

impl Trace {
    fn print(&self) {
        let mut line = format!(
            "hvsandbox trace: boot {:?}, in guest {:?}, page faults {}, cr3 loads {}",
            self.boot, self.guest, self.page_faults, self.cr3_loads
        );
        for (nr, (n, d)) in &self.hypercalls {
            line.push_str(&format!(", hc{nr} x{n} {d:?}"));
        }
        eprintln!("{line}");
    }
}

fn trace_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("HVSANDBOX_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Sleeps up to `d`, returning early when `should_stop` turns true (the
/// kick signal interrupts the sleep).
fn sleep_interruptible(d: Duration, should_stop: &dyn Fn() -> bool) {
    // An "infinite" sleep (no end representable) lasts until the deadline.
    let end = Instant::now().checked_add(d);
    loop {
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) || should_stop() {
            return;
        }
        let left = end.map_or(Duration::MAX, |end| end - now).min(Duration::from_millis(50));
        let ts =
            libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long };
        // SAFETY: nanosleep reads the timespec we own; a null remainder is allowed.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

fn getrandom(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
}
