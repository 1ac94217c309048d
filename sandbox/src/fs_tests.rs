//! Unit tests of the host file service (`fs.rs`).

use super::*;
use hvsandbox_core::abi::fs::{ManifestEntry, ENTRY_SIZE};
use std::os::unix::fs::symlink;
use std::path::PathBuf;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hvsandbox-fs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// root/
///   a/b/deep.txt   "deep"
///   hello.txt      "hello, world"
///   up -> ../../..
///   passwd -> /etc/passwd
fn tree() -> TempDir {
    let t = TempDir::new();
    std::fs::create_dir_all(t.0.join("a/b")).unwrap();
    std::fs::write(t.0.join("a/b/deep.txt"), "deep").unwrap();
    std::fs::write(t.0.join("hello.txt"), "hello, world").unwrap();
    symlink("../../..", t.0.join("up")).unwrap();
    symlink("/etc/passwd", t.0.join("passwd")).unwrap();
    t
}

fn read_all(fs: &mut HostFs, h: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 3];
    loop {
        let n = fs.read(h, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Decodes packed Dirent records into (name, dtype).
fn dirents(bytes: &[u8]) -> Vec<(String, u8)> {
    decode_dirents(bytes).unwrap().into_iter().map(|d| (String::from_utf8(d.name).unwrap(), d.dtype)).collect()
}

#[test]
fn lookup_walks_nested_directories_and_reads_files() {
    let t = tree();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    assert_eq!(root, FIRST_HANDLE);
    let (a, st) = fs.lookup(root, b"a").unwrap();
    assert_eq!(st.mode & libc::S_IFMT, libc::S_IFDIR);
    let (b, _) = fs.lookup(a, b"b").unwrap();
    let (deep, st) = fs.lookup(b, b"deep.txt").unwrap();
    assert_eq!(st.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(st.size, 4);
    assert_eq!(read_all(&mut fs, deep), b"deep");
    assert_eq!(fs.stat(deep).unwrap(), st);
    assert_eq!(fs.lookup(b, b"missing"), Err(libc::ENOENT));
    assert_eq!(fs.lookup(deep, b"x"), Err(libc::ENOTDIR));
    assert_eq!(fs.read(a, 0, &mut [0; 4]), Err(libc::EISDIR));
    assert_eq!(fs.stat(999), Err(libc::EBADF));
    assert_eq!(fs.stat(0), Err(libc::EBADF));
}

#[test]
fn repeated_lookups_reuse_the_handle() {
    let t = tree();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    let (h1, _) = fs.lookup(root, b"hello.txt").unwrap();
    let before = fs.handles();
    for _ in 0..100 {
        assert_eq!(fs.lookup(root, b"hello.txt").unwrap().0, h1);
    }
    assert_eq!(fs.handles(), before);
}

#[test]
fn dot_dot_slash_and_nul_names_are_refused() {
    let t = tree();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    assert_eq!(fs.lookup(root, b".."), Err(libc::EINVAL));
    assert_eq!(fs.lookup(root, b"."), Err(libc::EINVAL));
    assert_eq!(fs.lookup(root, b"a/b"), Err(libc::EINVAL));
    assert_eq!(fs.lookup(root, b"/etc"), Err(libc::EINVAL));
    assert_eq!(fs.lookup(root, b"hello.txt\0"), Err(libc::EINVAL));
    assert_eq!(fs.lookup(root, b""), Err(libc::ENOENT));
    assert_eq!(fs.lookup(root, &[b'x'; NAME_MAX + 1]), Err(libc::ENAMETOOLONG));
    assert_eq!(fs.handles(), 1, "refused names take no handle");
}

#[test]
fn symlinks_are_returned_not_followed() {
    let t = tree();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    for (name, target) in [("passwd", "/etc/passwd"), ("up", "../../..")] {
        let (h, st) = fs.lookup(root, name.as_bytes()).unwrap();
        assert_eq!(st.mode & libc::S_IFMT, libc::S_IFLNK, "{name}");
        assert_eq!(fs.readlink(h).unwrap(), target.as_bytes());
        // Not a file, not a directory: nothing behind it is reachable.
        assert_eq!(fs.read(h, 0, &mut [0; 16]), Err(libc::EINVAL));
        assert_eq!(fs.lookup(h, b"etc"), Err(libc::ENOTDIR));
        assert_eq!(fs.readdir(h, 0, 4096), Err(libc::ENOTDIR));
    }
    let (file, _) = fs.lookup(root, b"hello.txt").unwrap();
    assert_eq!(fs.readlink(file), Err(libc::EINVAL));
}

#[test]
fn reads_at_offsets() {
    let t = tree();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    let (h, _) = fs.lookup(root, b"hello.txt").unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(fs.read(h, 7, &mut buf), Ok(5));
    assert_eq!(&buf, b"world");
    assert_eq!(fs.read(h, 10, &mut buf), Ok(2));
    assert_eq!(&buf[..2], b"ld");
    assert_eq!(fs.read(h, 12, &mut buf), Ok(0));
    assert_eq!(fs.read(h, 1 << 40, &mut buf), Ok(0));
    assert_eq!(fs.read(h, u64::MAX, &mut buf), Err(libc::EINVAL));
}

#[test]
fn readdir_pages_whole_sorted_records() {
    let t = TempDir::new();
    let names: Vec<String> = (0..20).map(|i| format!("file-{i:02}")).collect();
    for n in names.iter().rev() {
        std::fs::write(t.0.join(n), n).unwrap();
    }
    std::fs::create_dir(t.0.join("sub")).unwrap();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    // Each record is 10 + 7 bytes; 40 bytes hold two.
    let mut all = Vec::new();
    loop {
        let page = fs.readdir(root, all.len() as u64, 40).unwrap();
        if page.is_empty() {
            break;
        }
        let entries = dirents(&page);
        assert!(entries.len() <= 2 && !entries.is_empty());
        all.extend(entries);
    }
    let mut expected: Vec<(String, u8)> = names.iter().map(|n| (n.clone(), libc::DT_REG)).collect();
    expected.push(("sub".into(), libc::DT_DIR));
    assert_eq!(all, expected);
    assert_eq!(fs.readdir(root, 1000, 40), Ok(Vec::new()));
    assert_eq!(fs.readdir(root, u64::MAX, 40), Ok(Vec::new()));
    // A buffer that cannot hold one record.
    assert_eq!(fs.readdir(root, 0, 12), Err(libc::EINVAL));
}

#[test]
fn handle_table_is_bounded() {
    let t = TempDir::new();
    for i in 0..5 {
        std::fs::write(t.0.join(format!("f{i}")), "x").unwrap();
    }
    let mut fs = HostFs::with_limits(4, 2);
    let root = fs.add_mount(&t.0, false).unwrap();
    let handles: Vec<u64> = (0..3).map(|i| fs.lookup(root, format!("f{i}").as_bytes()).unwrap().0).collect();
    assert_eq!(fs.lookup(root, b"f3"), Err(libc::EMFILE));
    assert_eq!(fs.add_blob(Arc::from(&b"x"[..]), 0o644), Err(libc::EMFILE));
    // Known names still resolve, and every handle still reads.
    assert_eq!(fs.lookup(root, b"f1").unwrap().0, handles[1]);
    for h in handles {
        assert_eq!(read_all(&mut fs, h), b"x");
    }
}

#[test]
fn closed_fds_are_reopened_and_checked() {
    let t = tree();
    std::fs::write(t.0.join("a/b/other.txt"), "other").unwrap();
    // One evictable fd: every step closes the previous one.
    let mut fs = HostFs::with_limits(100, 1);
    let root = fs.add_mount(&t.0, false).unwrap();
    let (a, _) = fs.lookup(root, b"a").unwrap();
    let (b, _) = fs.lookup(a, b"b").unwrap();
    let (deep, _) = fs.lookup(b, b"deep.txt").unwrap();
    let (other, _) = fs.lookup(b, b"other.txt").unwrap();
    for _ in 0..3 {
        assert_eq!(read_all(&mut fs, deep), b"deep");
        assert_eq!(read_all(&mut fs, other), b"other");
        assert_eq!(dirents(&fs.readdir(b, 0, 4096).unwrap()).len(), 2);
    }
    assert!(fs.lru.len() <= 1);
    // Swap the file on the host: the closed handle must not reach the
    // new one.
    std::fs::rename(t.0.join("a/b/other.txt"), t.0.join("a/b/deep.txt")).unwrap();
    fs.stat(a).unwrap(); // evicts deep's fds
    assert_eq!(fs.read(deep, 0, &mut [0; 8]), Err(libc::ESTALE));
    assert_eq!(fs.stat(deep), Err(libc::ESTALE));
}

#[test]
fn blobs_read_and_stat() {
    let mut fs = HostFs::default();
    let data: Arc<[u8]> = Arc::from(&b"blob bytes"[..]);
    let h = fs.add_blob(data, 0o100755).unwrap();
    let st = fs.stat(h).unwrap();
    assert_eq!(st.mode, libc::S_IFREG | 0o755);
    assert_eq!(st.size, 10);
    assert_eq!(read_all(&mut fs, h), b"blob bytes");
    let mut buf = [0u8; 4];
    assert_eq!(fs.read(h, 5, &mut buf), Ok(4));
    assert_eq!(&buf, b"byte");
    assert_eq!(fs.read(h, u64::MAX, &mut buf), Ok(0));
    assert_eq!(fs.lookup(h, b"x"), Err(libc::ENOTDIR));
    assert_eq!(fs.readdir(h, 0, 100), Err(libc::ENOTDIR));
    assert_eq!(fs.readlink(h), Err(libc::EINVAL));
}

#[test]
fn special_files_are_not_shared() {
    let t = TempDir::new();
    let fifo = CString::new(t.0.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::write(t.0.join("plain"), "").unwrap();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    assert_eq!(fs.lookup(root, b"fifo"), Err(libc::EACCES));
    assert_eq!(dirents(&fs.readdir(root, 0, 4096).unwrap()), [("plain".to_string(), libc::DT_REG)]);
}

#[test]
fn mount_root_must_be_a_directory() {
    let t = tree();
    let mut fs = HostFs::default();
    assert!(fs.add_mount(&t.0.join("hello.txt"), false).is_err());
    assert!(fs.add_mount(&t.0.join("missing"), false).is_err());
    assert_eq!(fs.handles(), 0);
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// root/ (0755)
///   shadow       0600 "secret"      (the owner's only, as /etc/shadow)
///   group-only   0640 "group"
///   public       0644 "public"
///   private/     0700 with "inner" 0644
///   search-only/ 0711 with "inner" 0644
///   list-only/   0744 with "inner" 0644
fn permission_tree() -> TempDir {
    let t = TempDir::new();
    chmod(&t.0, 0o755);
    for (name, mode) in [("shadow", 0o600), ("group-only", 0o640), ("public", 0o644)] {
        std::fs::write(t.0.join(name), name).unwrap();
        chmod(&t.0.join(name), mode);
    }
    for (name, mode) in [("private", 0o700), ("search-only", 0o711), ("list-only", 0o744)] {
        std::fs::create_dir(t.0.join(name)).unwrap();
        std::fs::write(t.0.join(name).join("inner"), "inner").unwrap();
        chmod(&t.0.join(name).join("inner"), 0o644);
        chmod(&t.0.join(name), mode);
    }
    t
}

#[test]
fn the_guests_users_permissions_are_applied_on_the_host() {
    // The tests run as root, which may read everything: the host must
    // still refuse what a user who is not the owner may not do.
    let t = permission_tree();
    let mut fs = HostFs::default();
    let root = fs.add_mount(&t.0, false).unwrap();
    let mut buf = [0u8; 16];
    // Files: looked up and stat'ed (as on Linux), read only with "other" r.
    for name in ["shadow", "group-only"] {
        let (h, st) = fs.lookup(root, name.as_bytes()).unwrap();
        assert_eq!(st.size, name.len() as u64);
        assert_eq!(fs.read(h, 0, &mut buf), Err(libc::EACCES), "{name}");
    }
    let (public, _) = fs.lookup(root, b"public").unwrap();
    assert_eq!(read_all(&mut fs, public), b"public");
    // Directories: x to look up in, r to list.
    let (private, _) = fs.lookup(root, b"private").unwrap();
    assert_eq!(fs.lookup(private, b"inner"), Err(libc::EACCES));
    assert_eq!(fs.readdir(private, 0, 4096), Err(libc::EACCES));
    let (search_only, _) = fs.lookup(root, b"search-only").unwrap();
    let (inner, _) = fs.lookup(search_only, b"inner").unwrap();
    assert_eq!(read_all(&mut fs, inner), b"inner");
    assert_eq!(fs.readdir(search_only, 0, 4096), Err(libc::EACCES));
    let (list_only, _) = fs.lookup(root, b"list-only").unwrap();
    assert_eq!(dirents(&fs.readdir(list_only, 0, 4096).unwrap()), [("inner".to_string(), libc::DT_REG)]);
    assert_eq!(fs.lookup(list_only, b"inner"), Err(libc::EACCES));
    // The mount root too.
    chmod(&t.0, 0o700);
    assert_eq!(fs.lookup(root, b"public"), Err(libc::EACCES), "a known name too");
    assert_eq!(fs.readdir(root, 0, 4096), Err(libc::EACCES));
}

#[test]
fn permissions_are_checked_again_when_a_file_is_reopened() {
    let t = permission_tree();
    // One evictable fd: every step closes the previous one.
    let mut fs = HostFs::with_limits(100, 1);
    let root = fs.add_mount(&t.0, false).unwrap();
    let (public, _) = fs.lookup(root, b"public").unwrap();
    let (shadow, _) = fs.lookup(root, b"shadow").unwrap();
    assert_eq!(read_all(&mut fs, public), b"public");
    assert_eq!(fs.read(shadow, 0, &mut [0; 8]), Err(libc::EACCES));
    chmod(&t.0.join("public"), 0o600);
    chmod(&t.0.join("shadow"), 0o644);
    fs.stat(root).unwrap();
    assert_eq!(fs.lookup(root, b"search-only").map(|_| ()), Ok(())); // evicts public's fd
    assert_eq!(fs.read(public, 0, &mut [0; 8]), Err(libc::EACCES));
    assert_eq!(read_all(&mut fs, shadow), b"shadow");
    // Reopening by name needs search permission on the directory.
    let (search_only, _) = fs.lookup(root, b"search-only").unwrap();
    let (inner, _) = fs.lookup(search_only, b"inner").unwrap();
    chmod(&t.0.join("search-only"), 0o700);
    fs.stat(root).unwrap();
    fs.lookup(root, b"public").unwrap(); // evicts inner's and search-only's fds
    assert_eq!(fs.read(inner, 0, &mut [0; 8]), Err(libc::EACCES));
}

/// Whether `path` is a mount point of filesystem type `fstype`.
fn mounted(path: &str, fstype: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|&x| x == "-").unwrap();
        f[4] == path && f[sep + 1] == fstype
    })
}

#[test]
fn kernel_filesystems_are_not_entered_below_a_mount() {
    let mut fs = HostFs::default();
    let root = fs.add_mount(Path::new("/"), false).unwrap();
    let mut refused = vec!["proc", "sys"];
    if mounted("/dev", "devtmpfs") {
        refused.push("dev");
    }
    for name in refused {
        assert_eq!(fs.lookup(root, name.as_bytes()), Err(libc::EACCES), "{name}");
    }
    // Ordinary directories are entered; the listing still names the
    // mount points (a name reveals nothing).
    let (etc, _) = fs.lookup(root, b"etc").unwrap();
    fs.lookup(etc, b"passwd").unwrap();
    let names: Vec<String> = dirents(&fs.readdir(root, 0, 1 << 16).unwrap()).into_iter().map(|e| e.0).collect();
    assert!(names.iter().any(|n| n == "proc"), "{names:?}");
}

#[test]
fn kernel_filesystems_are_entered_when_the_mount_opts_in() {
    let mut fs = HostFs::default();
    let root = fs.add_mount(Path::new("/"), true).unwrap();
    let (proc, _) = fs.lookup(root, b"proc").unwrap();
    let (version, _) = fs.lookup(proc, b"version").unwrap();
    let mut buf = [0u8; 64];
    let n = fs.read(version, 0, &mut buf).unwrap();
    assert!(buf[..n].starts_with(b"Linux version"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    // The permission rule still holds: /proc/self/environ is 0400.
    let pid = std::process::id().to_string();
    let (me, _) = fs.lookup(proc, pid.as_bytes()).unwrap();
    let (environ, _) = fs.lookup(me, b"environ").unwrap();
    assert_eq!(fs.read(environ, 0, &mut buf), Err(libc::EACCES));
    let (sys, _) = fs.lookup(root, b"sys").unwrap();
    assert!(!fs.readdir(sys, 0, 4096).unwrap().is_empty());
}

#[test]
fn kernel_filesystem_mount_roots_need_the_opt_in() {
    let mut roots = vec![("/proc", "proc"), ("/sys", "sysfs"), ("/proc/self", "proc")];
    if mounted("/dev", "devtmpfs") {
        roots.push(("/dev", "devtmpfs"));
    }
    if mounted("/sys/fs/cgroup", "cgroup2") {
        roots.push(("/sys/fs/cgroup", "cgroup2"));
    }
    for (root, name) in roots {
        let mut fs = HostFs::default();
        let e = fs.add_mount(Path::new(root), false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{root}");
        assert!(e.to_string().contains(&format!("on {name}, a kernel filesystem")), "{root}: {e}");
        assert_eq!(fs.handles(), 0);
        fs.add_mount(Path::new(root), true).unwrap();
    }
    // A plain directory, and tmpfs (not devtmpfs), are fine.
    let t = TempDir::new();
    HostFs::default().add_mount(&t.0, false).unwrap();
    if mounted("/dev/shm", "tmpfs") {
        HostFs::default().add_mount(Path::new("/dev/shm"), false).unwrap();
    }
}

#[test]
fn snapshots_keep_the_kernel_filesystem_choice() {
    let mut fs = HostFs::default();
    let root = fs.add_mount(Path::new("/"), true).unwrap();
    let (proc, _) = fs.lookup(root, b"proc").unwrap();
    let (version, _) = fs.lookup(proc, b"version").unwrap();
    let mut entries = fs.export();
    let mount = |kernel_fs| Mount { host: "/".into(), guest: "/host".into(), kernel_fs };
    let mut buf = [0u8; 8];
    // In this process the identities are known and kept.
    let mut again = HostFs::import(&entries, &[mount(true)]).unwrap();
    assert_eq!(again.read(version, 0, &mut buf), Ok(8));
    // From a file (no identities) the names decide, and are checked.
    for e in &mut entries {
        if let FsEntry::Child { dev, ino, .. } = e {
            (*dev, *ino) = (0, 0);
        }
    }
    let mut refused = HostFs::import(&entries, &[mount(false)]).unwrap();
    assert_eq!(refused.stat(proc), Err(libc::EACCES));
    assert_eq!(refused.read(version, 0, &mut buf), Err(libc::EACCES));
    assert_eq!(refused.lookup(root, b"proc"), Err(libc::EACCES));
    let mut allowed = HostFs::import(&entries, &[mount(true)]).unwrap();
    assert_eq!(allowed.read(version, 0, &mut buf), Ok(8));
    // A kernel filesystem as the root is refused on import too.
    let proc_root = Mount { host: "/proc".into(), guest: "/p".into(), kernel_fs: false };
    assert!(HostFs::import(&[FsEntry::Mount(0)], &[proc_root]).is_err());
}

#[test]
fn names_from_a_snapshot_file_must_still_be_what_it_says() {
    // A record says "regular file"; on this host the name is a FIFO
    // (opening it would block) or a directory: never opened for
    // reading, the handle is stale.
    let t = tree();
    let fifo = CString::new(t.0.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let root = abi::fs::FIRST_HANDLE;
    let child = |name: &str, fmt| FsEntry::Child { parent: root, name: name.into(), dev: 0, ino: 0, fmt };
    let entries =
        [FsEntry::Mount(0), child("fifo", libc::S_IFREG), child("a", libc::S_IFREG), child("hello.txt", libc::S_IFREG)];
    let mount = Mount { host: t.0.clone(), guest: "/m".into(), kernel_fs: false };
    let mut fs = HostFs::import(&entries, &[mount]).unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(fs.read(root + 1, 0, &mut buf), Err(libc::ESTALE));
    assert_eq!(fs.read(root + 2, 0, &mut buf), Err(libc::ESTALE));
    assert_eq!(fs.read(root + 3, 0, &mut buf), Ok(5));
    assert_eq!(&buf, b"hello");
}

#[test]
fn mount_table_records_are_parsed() {
    let info = b"\
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 master:3 - proc proc rw
30 27 0:25 / /my\\040dir rw - tmpfs tmpfs rw
31 27 0:6 / /- rw - devtmpfs udev rw
32 27 0:6 / /dev2 rw shared:4 - devtmpfs udev rw
33 27 0:7 / /x rw - devtmpfs
34 27 bad / /y rw - devtmpfs udev rw
";
    assert_eq!(kernel_fs::devtmpfs_devices(info), vec![libc::makedev(0, 6), libc::makedev(0, 7)]);
    assert_eq!(kernel_fs::devtmpfs_devices(b""), Vec::<u64>::new());
    assert_eq!(kernel_fs::devtmpfs_devices(b"2"), Vec::<u64>::new());
}

#[test]
fn file_out_collects_chunks_within_caps() {
    let mut c = FileCollector::new(vec!["/out".into(), "/single.txt".into()], 100, 3);
    c.file_out(b"/out/a.txt", 0, b"hello ").unwrap();
    c.file_out(b"/out/a.txt", 6, b"world").unwrap();
    c.file_out(b"/out/a.txt", 0, b"H").unwrap();
    c.file_out(b"/single.txt", 0, b"").unwrap();
    // A gap is zero-filled.
    c.file_out(b"/out/sub/gap", 4, b"x").unwrap();
    // Not asked for, or not normalised.
    assert_eq!(c.file_out(b"/outside", 0, b"x"), Err(libc::EPERM));
    assert_eq!(c.file_out(b"/outer/x", 0, b"x"), Err(libc::EPERM));
    assert_eq!(c.file_out(b"/out/../etc/passwd", 0, b"x"), Err(libc::EINVAL));
    assert_eq!(c.file_out(b"out/a", 0, b"x"), Err(libc::EINVAL));
    assert_eq!(c.file_out(b"/", 0, b"x"), Err(libc::EINVAL));
    assert_eq!(c.file_out(b"/out/\xff", 0, b"x"), Err(libc::EILSEQ));
    assert_eq!(c.file_out(b"/out/a.txt", u64::MAX, b"x"), Err(libc::EFBIG));
    // Count cap.
    assert_eq!(c.file_out(b"/out/fourth", 0, b""), Err(libc::ENOSPC));
    let (files, truncated) = c.take();
    assert!(truncated);
    assert_eq!(files.len(), 3);
    assert_eq!(files["/out/a.txt"], b"Hello world");
    assert_eq!(files["/single.txt"], b"");
    assert_eq!(files["/out/sub/gap"], b"\0\0\0\0x");
}

#[test]
fn file_out_byte_cap_refuses_large_holes_and_data() {
    let mut c = FileCollector::new(vec!["/".into()], 64, 100);
    c.file_out(b"/f", 0, &[1; 30]).unwrap(); // 30 + 2 for the path
    assert_eq!(c.file_out(b"/f", 1 << 40, b"x"), Err(libc::ENOSPC));
    assert_eq!(c.file_out(b"/g", 0, &[2; 31]), Err(libc::ENOSPC));
    // Overwriting in place costs nothing; growing to exactly the cap is fine.
    c.file_out(b"/f", 0, &[3; 30]).unwrap();
    c.file_out(b"/f", 30, &[4; 32]).unwrap();
    let (files, truncated) = c.take();
    assert!(truncated);
    assert_eq!(files["/f"].len(), 62);
}

#[test]
fn file_out_offsets_near_the_top_are_refused() {
    // Found by the property tests: end + path length wrapped past 2^64,
    // passed the byte cap and the host tried to allocate ~2^64 bytes.
    let mut c = FileCollector::new(vec!["/".into()], 0, 1);
    assert_eq!(c.file_out(b"/out", u64::MAX - 4, b"x"), Err(libc::ENOSPC));
    assert_eq!(c.file_out(b"/out", u64::MAX - 4, b""), Err(libc::ENOSPC));
    assert_eq!(c.file_out(b"/out", u64::MAX, b"x"), Err(libc::EFBIG));
    assert!(c.take().0.is_empty());
}

#[test]
fn guest_paths_must_be_normalised() {
    for ok in ["/", "/a", "/a/b.txt", "/a b/c"] {
        assert!(check_guest_path(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/..", "/a\0b"] {
        assert!(check_guest_path(bad).is_err(), "{bad:?}");
    }
    assert!(check_guest_path(&format!("/{}", "x".repeat(256))).is_err());
    assert!(path_is_within("/a/b", "/a") && path_is_within("/a", "/a") && path_is_within("/x", "/"));
    assert!(!path_is_within("/ab", "/a") && !path_is_within("/a", "/a/b"));
}

#[test]
fn manifest_records_match_the_abi_layout() {
    let records = [
        ManifestRecord {
            kind: abi::fs::ENTRY_MOUNT,
            mode: 0,
            handle: 1,
            size: 0,
            path: "/mnt".into(),
            root: Some(Stat { mode: 0o40755, nlink: 2, size: 4096, ino: 9, mtime_sec: 1, mtime_nsec: 2, _pad: 0 }),
        },
        ManifestRecord {
            kind: abi::fs::ENTRY_FILE,
            mode: 0o644,
            handle: 2,
            size: 5,
            path: "/data/x.txt".into(),
            root: None,
        },
    ];
    let bytes = encode_manifest(&records).unwrap();
    assert_eq!(
        bytes.len(),
        abi::fs::entry_size(abi::fs::ENTRY_MOUNT, 4) + abi::fs::entry_size(abi::fs::ENTRY_FILE, 11)
    );
    assert_eq!(abi::fs::entry_size(abi::fs::ENTRY_MOUNT, 4), abi::fs::entry_size(abi::fs::ENTRY_FILE, 4) + STAT_SIZE);
    assert_eq!(bytes.len() % 8, 0);
    let mut at = 0;
    for r in &records {
        let mut e = ManifestEntry::default();
        // SAFETY: ManifestEntry is repr(C) integers, valid for any
        // bytes; the source range is inside `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes[at..].as_ptr(), (&mut e as *mut ManifestEntry).cast(), ENTRY_SIZE)
        };
        assert_eq!(
            e,
            ManifestEntry {
                kind: r.kind,
                mode: r.mode,
                handle: r.handle,
                size: r.size,
                path_len: r.path.len() as u32,
                _pad: 0
            }
        );
        assert_eq!(&bytes[at + ENTRY_SIZE..at + ENTRY_SIZE + r.path.len()], r.path.as_bytes());
        at += abi::fs::entry_size(r.kind, r.path.len());
        if let Some(root) = &r.root {
            assert_eq!(&bytes[at - STAT_SIZE..at], &stat_bytes(root));
        }
    }
    assert!(encode_manifest(&[]).unwrap().is_empty());
}

#[test]
fn stat_bytes_match_the_abi_layout() {
    let st = Stat { mode: 0o100644, nlink: 2, size: 3, ino: 4, mtime_sec: -5, mtime_nsec: 6, _pad: 0 };
    let bytes = stat_bytes(&st);
    let mut back = Stat::default();
    // SAFETY: Stat is repr(C) integers, valid for any bytes of its size.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut back as *mut Stat).cast(), STAT_SIZE) };
    assert_eq!(back, st);
}

#[test]
fn errno_results_are_negative() {
    assert_eq!(errno_result(libc::ENOENT) as i64, -2);
}
