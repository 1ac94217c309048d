//! A bare program name (no `/`) is looked up on the guest's `PATH`, as
//! execvp(3) does, in the guest's view of its files: the sandbox's mounts
//! and the run's files, where the guest would find it.
//!
//! The walk is the guest's: `..` and symlink targets are resolved in the
//! guest's tree (a mount's `..` is the guest directory above it, an
//! absolute target starts at the guest's root), and the host is asked only
//! for one plain name at a time below a mount root, through the same
//! [`HostFs`] the guest's own lookups go through (`O_NOFOLLOW`, no `..`,
//! the guest user's permissions, kernel filesystems refused). So a name
//! resolves to nothing the guest could not open itself, and never to a
//! host file outside a mount.

use std::collections::VecDeque;
use std::sync::Arc;

use hvsandbox_core::abi;
use hvsandbox_core::abi::fs::{NAME_MAX, PATH_MAX};

use crate::command::GuestFile;
use crate::config::{Config, MAX_PROGRAM_SIZE};
use crate::error::{Error, Result};
use crate::fs::{path_is_within, Errno, HostFs};

/// The search path when the environment has no `PATH`.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Most symlinks followed in one lookup (Linux's limit; `ELOOP` beyond).
const MAX_SYMLINKS: usize = 40;

/// Where a name was found: its guest path (as tried: `PATH` entry + name)
/// and the program's image.
pub(crate) struct Found {
    pub(crate) path: Vec<u8>,
    pub(crate) image: Arc<[u8]>,
}

/// Looks `name` up on the `PATH` of `env` (KEY=VALUE strings), or on
/// [`DEFAULT_PATH`], in the guest's tree: the mounts of `config`, and
/// `files` (the run's, after the command's replaced the sandbox's).
/// Relative entries (an empty one is `.`) are relative to `cwd`. The first
/// regular file the guest's user may execute wins; a file that is there
/// but may not be executed is passed over, as execvp does, and named in
/// the error if nothing else is found.
pub(crate) fn find(config: &Config, files: &[&GuestFile], env: &[Vec<u8>], cwd: &str, name: &str) -> Result<Found> {
    search(config, files, env, cwd, name, |view, path| view.program(path)).map(|(path, image)| Found { path, image })
}

/// Looks `name` up as [`find`] does, without reading the program: its
/// guest path and the host's stat of the file, or None when the program
/// found is one of the run's files (no host file).
pub(crate) fn locate(
    config: &Config,
    files: &[&GuestFile],
    env: &[Vec<u8>],
    cwd: &str,
    name: &str,
) -> Result<(Vec<u8>, Option<libc::stat>)> {
    search(config, files, env, cwd, name, |view, path| view.program_stat(path))
}

/// The lookup of [`find`] and [`locate`]: `take` is asked for each
/// candidate path in turn; the first it takes wins.
fn search<T>(
    config: &Config,
    files: &[&GuestFile],
    env: &[Vec<u8>],
    cwd: &str,
    name: &str,
    mut take: impl FnMut(&mut View<'_>, &[u8]) -> std::result::Result<T, Errno>,
) -> Result<(Vec<u8>, T)> {
    let invalid = |reason: String| Error::InvalidProgram { program: name.to_string(), reason };
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return Err(invalid("not a valid file name".into()));
    }
    let search = env.iter().rev().find_map(|kv| kv.strip_prefix(b"PATH=")).unwrap_or(DEFAULT_PATH.as_bytes());
    let mut view = View::open(config, files)?;
    let mut denied = None;
    for dir in search.split(|&c| c == b':') {
        let mut path = Vec::new();
        if dir.first() != Some(&b'/') {
            path.extend_from_slice(cwd.as_bytes());
            path.push(b'/');
        }
        path.extend_from_slice(if dir.is_empty() { b"." } else { dir });
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        if path.len() >= PATH_MAX {
            continue;
        }
        match take(&mut view, &path) {
            Ok(taken) => return Ok((path, taken)),
            Err(libc::EACCES) => denied = denied.or(Some(path)),
            Err(_) => {}
        }
    }
    let search = String::from_utf8_lossy(search);
    Err(invalid(match denied {
        Some(path) => format!(
            "{} is on the guest's PATH ({search}) but the guest may not execute or read it",
            String::from_utf8_lossy(&path)
        ),
        None => format!("not found on the guest's PATH ({search})"),
    }))
}

/// What a guest path is, not following a symlink at its end.
enum Node {
    Dir,
    /// A symlink on the host, with its target.
    Link(Vec<u8>),
    /// One of the run's files: contents and permission bits.
    Blob(Arc<[u8]>, u32),
    /// A regular file on the host: its handle and mode.
    Host(u64, u32),
}

/// The guest's tree as far as a lookup needs it.
struct View<'a> {
    /// Guest path and root handle of each mount.
    mounts: Vec<(&'a str, u64)>,
    files: &'a [&'a GuestFile],
    fs: HostFs,
}

impl<'a> View<'a> {
    fn open(config: &'a Config, files: &'a [&'a GuestFile]) -> Result<View<'a>> {
        let mut fs = HostFs::default();
        let mut mounts = Vec::new();
        for m in &config.mounts {
            let handle = fs
                .add_mount(&m.host, m.kernel_fs)
                .map_err(|e| Error::InvalidConfig(format!("cannot open mount source {}: {e}", m.host.display())))?;
            mounts.push((m.guest.as_str(), handle));
        }
        Ok(View { mounts, files, fs })
    }

    /// The image of the program at guest path `path`, following symlinks:
    /// a regular file the guest's user may execute (the run's files are
    /// the user's; host files root's, so their "other" bits decide).
    fn program(&mut self, path: &[u8]) -> std::result::Result<Arc<[u8]>, Errno> {
        match self.resolve(path)? {
            Node::Blob(data, mode) if mode & 0o100 != 0 => Ok(data),
            Node::Host(handle, mode) if mode & 0o001 != 0 => self.read_all(handle),
            _ => Err(libc::EACCES),
        }
    }

    /// As [`program`](Self::program), the host's stat of the file instead
    /// of its contents (None: one of the run's files). It takes what that
    /// takes: a file no larger than [`MAX_PROGRAM_SIZE`] that can be read.
    fn program_stat(&mut self, path: &[u8]) -> std::result::Result<Option<libc::stat>, Errno> {
        match self.resolve(path)? {
            Node::Blob(_, mode) if mode & 0o100 != 0 => Ok(None),
            Node::Host(handle, mode) if mode & 0o001 != 0 => {
                let st = self.fs.host_stat(handle)?;
                if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_PROGRAM_SIZE {
                    return Err(libc::EFBIG);
                }
                self.fs.read(handle, 0, &mut [0u8; 1])?;
                Ok(Some(st))
            }
            _ => Err(libc::EACCES),
        }
    }

    /// Follows `path` (absolute) through the guest's tree to what it names.
    fn resolve(&mut self, path: &[u8]) -> std::result::Result<Node, Errno> {
        let mut pending: VecDeque<Vec<u8>> = components(path).collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == b".." {
                done.pop();
                continue;
            }
            done.push(part);
            match self.node(&done)? {
                Node::Dir => {}
                Node::Link(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(libc::ELOOP);
                    }
                    done.pop();
                    if target.first() == Some(&b'/') {
                        done.clear();
                    }
                    for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                file if pending.is_empty() => return Ok(file),
                _ => return Err(libc::ENOTDIR),
            }
        }
        Ok(Node::Dir)
    }

    /// What the guest path made of `parts` (each a directory but maybe
    /// the last) is.
    fn node(&mut self, parts: &[Vec<u8>]) -> std::result::Result<Node, Errno> {
        let path = String::from_utf8(parts.iter().flat_map(|p| [&b"/"[..], p]).flatten().copied().collect())
            .map_err(|_| libc::ENOENT)?;
        if let Some(f) = self.files.iter().find(|f| f.path == path) {
            return Ok(Node::Blob(f.data.clone(), f.mode));
        }
        // The deepest mount the path is in.
        let mount = self.mounts.iter().filter(|(guest, _)| path_is_within(&path, guest)).max_by_key(|(g, _)| g.len());
        if let Some(&(guest, mut handle)) = mount {
            let below = if guest == "/" { 0 } else { components(guest.as_bytes()).count() };
            let mut mode = libc::S_IFDIR;
            for part in &parts[below..] {
                let (h, st) = self.fs.lookup(handle, part)?;
                (handle, mode) = (h, st.mode);
            }
            return match mode & libc::S_IFMT {
                libc::S_IFDIR => Ok(Node::Dir),
                libc::S_IFLNK => Ok(Node::Link(self.fs.readlink(handle)?)),
                _ => Ok(Node::Host(handle, mode)),
            };
        }
        // The directories the guest makes to hold a mount or a file.
        let holds = |p: &str| p.len() > path.len() && path_is_within(p, &path);
        if self.mounts.iter().any(|(guest, _)| holds(guest)) || self.files.iter().any(|f| holds(&f.path)) {
            return Ok(Node::Dir);
        }
        Err(libc::ENOENT)
    }

    /// The contents of host file `handle`, at most [`MAX_PROGRAM_SIZE`].
    fn read_all(&mut self, handle: u64) -> std::result::Result<Arc<[u8]>, Errno> {
        let size = self.fs.stat(handle)?.size;
        if size > MAX_PROGRAM_SIZE {
            return Err(libc::EFBIG);
        }
        let mut image = vec![0u8; size as usize];
        let mut at = 0;
        while at < image.len() {
            let end = (at + abi::HCALL_MAX_LEN as usize).min(image.len());
            match self.fs.read(handle, at as u64, &mut image[at..end])? {
                0 => break,
                n => at += n,
            }
        }
        // A file that shrank while it was read is what it now holds.
        image.truncate(at);
        Ok(image.into())
    }
}

/// The names of a path: not empty, not `.`.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec)
}
