//! Writing the files a run collected (`--collect`) under `--collect-dir`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Writes one collected file at `dir` + its guest path, one component at a
/// time relative to directory fds, never following a symlink, so neither
/// the name nor anything already in `dir` can place it outside `dir`.
fn write_collected_file(dir: &OwnedFd, guest_path: &str, data: &[u8]) -> std::io::Result<()> {
    let parts: Vec<&str> = guest_path.split('/').skip(1).collect();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "the name would escape the directory");
    let bad_part = |p: &&str| p.is_empty() || *p == "." || *p == ".." || p.contains('\0');
    if !guest_path.starts_with('/') || parts.iter().any(bad_part) {
        return Err(bad());
    }
    let Some((file, parents)) = parts.split_last() else { return Err(bad()) };
    let open_at = |at: &OwnedFd, name: &str, flags: i32, mode: libc::c_uint| -> std::io::Result<OwnedFd> {
        let name = CString::new(name).map_err(|_| bad())?;
        let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: `name` is NUL-terminated and `at` an open directory fd.
        let fd = unsafe { libc::openat(at.as_raw_fd(), name.as_ptr(), flags, mode) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: openat returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let mut cur: Option<OwnedFd> = None;
    for part in parents {
        let at = cur.as_ref().unwrap_or(dir);
        let name = CString::new(*part).map_err(|_| bad())?;
        // SAFETY: `name` is NUL-terminated and `at` an open directory fd.
        if unsafe { libc::mkdirat(at.as_fd().as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        cur = Some(open_at(at, part, libc::O_RDONLY | libc::O_DIRECTORY, 0)?);
    }
    let at = cur.as_ref().unwrap_or(dir);
    let fd = open_at(at, file, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    std::fs::File::from(fd).write_all(data)
}

/// Writes the collected files under `dir` (created if missing); returns
/// how many could not be written, after saying why on stderr.
pub(crate) fn write_collected(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> usize {
    let root = std::fs::create_dir_all(dir).and_then(|()| std::fs::File::open(dir)).map(OwnedFd::from);
    let root = match root {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("hvsandbox: cannot open --collect-dir {}: {e}", dir.display());
            return files.len().max(1);
        }
    };
    let mut failed = 0;
    for (path, data) in files {
        if let Err(e) = write_collected_file(&root, path, data) {
            eprintln!("hvsandbox: cannot write collected file {path}: {e}");
            failed += 1;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_files_stay_inside_the_collect_dir() {
        let base = std::env::temp_dir().join(format!("hvsandbox-cli-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("out");
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), dir.join("link")).unwrap();
        let files: BTreeMap<String, Vec<u8>> = [
            ("/tmp/o.txt", "ok"),
            ("/a/b/c.txt", "deep"),
            ("/../escape.txt", "no"),
            ("/a/../../escape2.txt", "no"),
            ("relative.txt", "no"),
            ("/link/through-symlink.txt", "no"),
            ("/link", "no"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(write_collected(&dir, &files), 5);
        assert_eq!(std::fs::read(dir.join("tmp/o.txt")).unwrap(), b"ok");
        assert_eq!(std::fs::read(dir.join("a/b/c.txt")).unwrap(), b"deep");
        assert!(!base.join("escape.txt").exists() && !base.join("escape2.txt").exists());
        assert_eq!(std::fs::read_dir(base.join("elsewhere")).unwrap().count(), 0);
        assert!(std::fs::symlink_metadata(dir.join("link")).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
