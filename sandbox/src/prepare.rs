//! What a run needs before it is handed to the vCPU thread: the program
//! read and checked, argv and environment, the boot manifest and the host
//! objects the guest's filesystem reaches.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use hvsandbox_core::{abi, ProgramImage};

use crate::command::{Command, GuestFile, ProgramSource};
use crate::config::{check_files, check_input_size, guest_path, Config, MAX_PROGRAM_SIZE};
use crate::error::{Error, Result};
use crate::fs::{self, FileCollector, HostFs, ManifestRecord};
use crate::jail;
use crate::snapshot::{Snapshot, SnapshotPoint};
use crate::{exec_path, image_cache, program};

/// Everything a run needs that the caller's thread can work out before
/// the vCPU thread (which runs under the seccomp filter and touches no
/// host files but the mounts' through their handles) takes over: what
/// `Vm::boot` gets (or, resuming a snapshot, what the guest is told when it
/// asks for this run's inputs), stdin, and the host objects the guest's
/// filesystem reaches.
pub(crate) struct Prepared {
    /// The program, or None when resuming the sandbox's snapshot.
    pub(crate) image: Option<Image>,
    /// Its file's inode number on the host (0: bytes given, or a file
    /// found through the guest's mounts, which the guest knows itself).
    pub(crate) image_ino: u64,
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) envp: Vec<Vec<u8>>,
    pub(crate) seed: [u8; 32],
    pub(crate) manifest: Vec<u8>,
    pub(crate) stdin: Arc<[u8]>,
    /// The program's name, for errors.
    pub(crate) program: String,
    pub(crate) fs: HostFs,
    pub(crate) collector: FileCollector,
}

/// The program's ELF file, as a run gets it.
pub(crate) enum Image {
    /// In memory: a command's image, or a file found through the guest's
    /// mounts.
    Bytes(Arc<[u8]>),
    /// A host file, open, of `len` bytes: read straight into guest RAM at
    /// boot, never into a buffer of this process (for a program run once,
    /// the buffer's page faults and copies cost more than the run of a
    /// small program: busybox's 2 MB took ~1 ms to read into one; one run
    /// again comes from `image_cache`).
    File { file: File, len: u64 },
}

impl Image {
    /// What `Vm::boot` copies into guest RAM.
    pub(crate) fn boot_image(&self) -> ProgramImage<'_> {
        use std::os::fd::AsFd;
        match self {
            Image::Bytes(bytes) => ProgramImage::Bytes(bytes),
            Image::File { file, len } => ProgramImage::File { fd: file.as_fd(), len: *len },
        }
    }
}

/// Opens the host file `path` as a program's image and checks its start
/// (the ELF header and program headers; the guest checks the rest);
/// returns it with its inode number.
fn open_program(name: &str, path: &Path) -> Result<(Image, u64)> {
    let invalid = |reason: String| Error::InvalidProgram { program: name.to_string(), reason };
    let unreadable = |e: std::io::Error| invalid(format!("cannot read it: {e}"));
    let not_regular = || invalid("not a regular file of at most 1 GiB".into());
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() || meta.len() > MAX_PROGRAM_SIZE {
        return Err(not_regular());
    }
    if let Some(bytes) = image_cache::cached(path, &meta).map_err(unreadable)? {
        program::validate(name, &bytes)?;
        return Ok((Image::Bytes(bytes), meta.ino()));
    }
    // O_NONBLOCK: should the path have become a FIFO since, opening it
    // does not wait for a writer (it is refused just below).
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() || meta.size() > MAX_PROGRAM_SIZE {
        return Err(not_regular());
    }
    let head = program::read_head(&file, meta.size()).map_err(unreadable)?;
    program::validate(name, &head)?;
    Ok((Image::File { file, len: meta.size() }, meta.ino()))
}

/// Reads and checks the program and lays out everything the guest needs
/// (on the caller's thread).
pub(crate) fn prepare(
    config: &Config,
    roots: &jail::RootIds,
    snapshot: Option<&Snapshot>,
    command: &Command,
) -> Result<Prepared> {
    roots.check(config.mounts.iter().map(|m| m.host.as_path()))?;
    let name = command.program_name();
    let env = environment(config, command);
    // argv[0]: the name as given, or where a bare name was found.
    let mut argv0 = command.argv0.clone();
    let mut image_ino = 0;
    let image: Option<Image> = match (&command.source, snapshot) {
        (ProgramSource::Resume, Some(_)) => None,
        (ProgramSource::Resume, None) => {
            return Err(Error::InvalidConfig("Command::resume() runs a sandbox built from a snapshot".into()))
        }
        (_, Some(_)) => {
            return Err(Error::InvalidConfig(
                "a sandbox built from a snapshot runs only Command::resume() commands".into(),
            ))
        }
        (ProgramSource::Bytes(b), None) => {
            program::validate(&name, b)?;
            Some(Image::Bytes(b.clone()))
        }
        (ProgramSource::Path(_), None) if !command.argv0.contains(&b'/') => {
            check_files(config, &command.files)?;
            let cwd = run_cwd(config, command);
            let found = exec_path::find(config, &run_files(config, command), &env, cwd, &name)?;
            argv0 = found.path;
            program::validate(&name, &found.image)?;
            Some(Image::Bytes(found.image))
        }
        (ProgramSource::Path(p), None) => {
            let (image, ino) = open_program(&name, p)?;
            image_ino = ino;
            Some(image)
        }
    };
    let (argv, envp) = match snapshot {
        // An entry snapshot's runs get a whole new argv (after the
        // snapshot's argv[0]) and environment; a checkpoint's get the
        // arguments its checkpoint read returns and the environment
        // /dev/hvsandbox/env returns.
        Some(snap) if snap.point() == SnapshotPoint::Entry => {
            let mut argv = vec![snap.0.started.argv0().to_vec()];
            argv.extend(command.args.iter().cloned());
            (argv, env)
        }
        Some(_) => (command.args.clone(), env),
        None => {
            let mut argv = Vec::with_capacity(command.args.len() + 1);
            argv.push(argv0);
            argv.extend(command.args.iter().cloned());
            (argv, env)
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
    let stdin = command.stdin.clone();
    Ok(Prepared { image, image_ino, argv, envp, seed, manifest, stdin, program: name, fs, collector })
}

/// Checks the command's files and paths, opens the mounts, registers
/// the files, and returns the encoded boot manifest.
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
    let files = run_files(config, command);
    let input = files.iter().map(|f| f.data.len() as u64).sum::<u64>() + command.stdin.len() as u64;
    check_input_size(config, input)?;

    let mut records = Vec::new();
    for m in config.mounts.iter().filter(|_| with_mounts) {
        let handle = fs
            .add_mount(&m.host, m.kernel_fs)
            .map_err(|e| Error::InvalidConfig(format!("cannot open mount source {}: {e}", m.host.display())))?;
        let path = m.guest.clone();
        // Its root's status goes with it: the guest asks for none at boot.
        let root = fs.stat(handle).map_err(|e| {
            Error::InvalidConfig(format!(
                "cannot stat mount source {}: {}",
                m.host.display(),
                std::io::Error::from_raw_os_error(e)
            ))
        })?;
        records.push(ManifestRecord { kind: abi::fs::ENTRY_MOUNT, mode: 0, handle, size: 0, path, root: Some(root) });
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
            root: None,
        });
    }
    for c in &command.collect {
        records.push(ManifestRecord {
            kind: abi::fs::ENTRY_COLLECT,
            mode: 0,
            handle: 0,
            size: 0,
            path: c.clone(),
            root: None,
        });
    }
    if let Some(cwd) = command.cwd.as_ref().or(config.cwd.as_ref()) {
        records.push(ManifestRecord {
            kind: abi::fs::ENTRY_CWD,
            mode: 0,
            handle: 0,
            size: 0,
            path: cwd.clone(),
            root: None,
        });
    }
    let collector = FileCollector::new(command.collect.clone(), config.max_collect_bytes, config.max_collect_files);
    let manifest = fs::encode_manifest(&records)
        .map_err(|e| Error::InvalidConfig(format!("cannot describe the run's files to the guest: {e}")))?;
    Ok((manifest, collector))
}

/// The run's files: the command's replace the sandbox's at the same
/// path; the last one given for a path wins.
/// The run's working directory in the guest: the command's, else the
/// sandbox's, else `/`.
fn run_cwd<'a>(config: &'a Config, command: &'a Command) -> &'a str {
    command.cwd.as_ref().or(config.cwd.as_ref()).map_or("/", String::as_str)
}

fn run_files<'a>(config: &'a Config, command: &'a Command) -> Vec<&'a GuestFile> {
    let mut files: Vec<&GuestFile> = Vec::new();
    for f in config.files.iter().chain(&command.files) {
        match files.iter_mut().find(|g| g.path == f.path) {
            Some(slot) => *slot = f,
            None => files.push(f),
        }
    }
    files
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

/// The file a run of a command would execute, as it is now: where the
/// guest finds it (its `argv[0]`) and the host file's identity (device,
/// inode, size, modification and change times). Two are equal while the
/// program is the same file, unchanged (a rename over it, a write or a
/// `chmod` changes one of them), so what is kept per program (an entry
/// snapshot) stays valid while its `ProgramFile` does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProgramFile {
    argv0: Vec<u8>,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl ProgramFile {
    fn new(argv0: Vec<u8>, st: &libc::stat) -> ProgramFile {
        ProgramFile {
            argv0,
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// The program's `argv[0]` in a run: the path as given, or where the
    /// guest finds a bare name.
    pub fn argv0(&self) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(&self.argv0)
    }
}

impl crate::config::SandboxBuilder {
    /// Which file a run of `command` in a sandbox of this builder would
    /// execute now, without reading it: a path as the host names it
    /// (symlinks followed), a bare name looked up on the guest's `PATH`
    /// among the mounts as the run does ([`Command::new`]). Not found or
    /// not executable: `InvalidProgram`, as the run's error. A program
    /// given as bytes, a resume or one of the run's files has no host file
    /// to name: `InvalidConfig`.
    pub fn locate_program(&self, command: &Command) -> Result<ProgramFile> {
        let config = &self.config;
        let name = command.program_name();
        let unreadable =
            |e: std::io::Error| Error::InvalidProgram { program: name.clone(), reason: format!("cannot read it: {e}") };
        match &command.source {
            ProgramSource::Path(_) if !command.argv0.contains(&b'/') => {
                let env = environment(config, command);
                let cwd = run_cwd(config, command);
                match exec_path::locate(config, &run_files(config, command), &env, cwd, &name)? {
                    (path, Some(st)) => Ok(ProgramFile::new(path, &st)),
                    (path, None) => Err(Error::InvalidConfig(format!(
                        "{} is one of the run's files: no host file to name",
                        String::from_utf8_lossy(&path)
                    ))),
                }
            }
            ProgramSource::Path(p) => {
                let meta = std::fs::metadata(p).map_err(unreadable)?;
                if !meta.is_file() {
                    return Err(Error::InvalidProgram { program: name, reason: "not a regular file".into() });
                }
                Ok(ProgramFile {
                    argv0: command.argv0.clone(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                    size: meta.size(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                })
            }
            ProgramSource::Bytes(_) | ProgramSource::Resume => {
                Err(Error::InvalidConfig("only a program named by a path or a name is a file to locate".into()))
            }
        }
    }
}
