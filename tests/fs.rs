//! The guest's filesystem: files given to a run, read-only host mounts,
//! the working directory, and files sent back.
//!
//! The host's file service is tested through forged hypercalls (the
//! `fs_hypercalls` guest program rings the doorbell itself) and end to end
//! with real programs through the guest runtime's filesystem.
//!
//! One file of ~1,000 lines: every file under `tests/` is a test binary of
//! its own, linked with the library and the embedded runtime, so the
//! suite's build time grows with their number; the tests of the filesystem stay
//! together here.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use hvsandbox::{Command, ErrorKind, Sandbox, SandboxBuilder};
use hvsandbox_abi as abi;
use hvsandbox_tests::{hvsandbox_bin, musl, sandbox, BUSYBOX};

/// A host directory tree for one test, removed on drop.
struct HostTree(PathBuf);

impl HostTree {
    /// base/
    ///   secret.txt        "TOP SECRET" (outside the mount)
    ///   shared/           mounted in the guest
    ///     hello.txt       "hello, world"
    ///     sub/inner.txt   "inner"
    ///     passwd -> /etc/passwd
    ///     up -> ../../..
    ///     parent -> ../secret.txt
    ///     abs -> <base>/secret.txt
    fn new(name: &str) -> HostTree {
        let base = std::env::temp_dir().join(format!("hvsandbox-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let shared = base.join("shared");
        std::fs::create_dir_all(shared.join("sub")).unwrap();
        std::fs::write(base.join("secret.txt"), "TOP SECRET").unwrap();
        std::fs::write(shared.join("hello.txt"), "hello, world").unwrap();
        std::fs::write(shared.join("sub/inner.txt"), "inner").unwrap();
        for f in ["hello.txt", "sub/inner.txt"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(shared.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", shared.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../../..", shared.join("up")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", shared.join("parent")).unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), shared.join("abs")).unwrap();
        HostTree(base)
    }
    fn shared(&self) -> PathBuf {
        self.0.join("shared")
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the hypercall forger; its first three arguments are the
/// addresses it needs (the scratch buffer is the unused end of the args
/// region, reachable through the physmap).
fn forge(
    sb: &mut Sandbox,
    scenario: &str,
    command: impl FnOnce(Command) -> Command,
) -> hvsandbox::Result<hvsandbox::Output> {
    let scratch = abi::phys_to_virt(abi::ARGS_GPA + abi::ARGS_MAX - 0x2000);
    let cmd = Command::new(musl("fs_hypercalls")).args([
        format!("{:x}", abi::phys_to_virt(abi::HCALL_GPA)),
        format!("{:x}", abi::DOORBELL_VA),
        format!("{scratch:x}"),
        scenario.to_string(),
    ]);
    sb.run(&command(cmd))
}

#[test]
fn forged_fs_hypercalls_are_served_by_the_host() {
    let tree = HostTree::new("forged");
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let out = forge(&mut sb, "walk", |c| c.file("/data/x.txt", "blob!").collect("/out")).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    let expected = "\
hello.txt=handle mode=100644 size=12
same handle=1
read@7=5:world
lookup ..=-22
lookup a/b=-22
lookup missing=-2
passwd=handle mode=120777 size=11
readlink=/etc/passwd
read symlink=-22
sub=handle mode=40755 size=4096
sub/inner.txt=handle mode=100644 size=5
readdir: abs/10 hello.txt/8 parent/10 passwd/10 sub/4 up/10
readdir end=0
stat bad handle=-9
stat blob=0
blob=handle mode=100644 size=5
blob=blob!
file out=0
file out again=0
file out elsewhere=-1
";
    let got = out.stdout_str();
    // Directory sizes and default permissions vary between host filesystems.
    let normalise = |s: &str| {
        s.lines()
            .map(|l| if l.starts_with("sub=") { "sub=handle".to_string() } else { l.to_string() })
            .collect::<Vec<_>>()
    };
    assert_eq!(normalise(&got), normalise(expected), "{got}");
    assert!(got.lines().any(|l| l.starts_with("sub=handle mode=40")), "{got}");
    assert_eq!(out.files.len(), 1);
    assert_eq!(out.files["/out/r.txt"], b"resultres");
    assert!(!out.files_truncated);
}

/// FS_WALK looks names up one after another as FS_LOOKUP would, stops
/// after a name that is not a directory or at the first that fails (its
/// errno in the upper half of the result), fills at most the records it
/// was given room for (16 at most), and refuses bad lengths.
#[test]
fn forged_path_walks_are_served_as_lookups_one_by_one() {
    let tree = HostTree::new("forged-walk");
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let out = forge(&mut sb, "pathwalk", |c| c).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    let expected = "\
walk sub/inner.txt (16)=2 err=0 [handle mode=40755 size=0] [handle mode=100644 size=5]
walk sub/missing/x (16)=1 err=2 [handle mode=40755 size=0]
walk passwd/x (16)=1 err=0 [handle mode=120777 size=11]
walk ../x (16)=0 err=22
walk sub//inner.txt (16)=1 err=2 [handle mode=40755 size=0]
walk sub/inner.txt (1)=1 err=0 [handle mode=40755 size=0]
walk sub/inner.txt (1000)=2 err=0 [handle mode=40755 size=0] [handle mode=100644 size=5]
walk hello.txt/x (16)=1 err=0 [handle mode=100644 size=12]
walk empty=-22
walk too long=-36
same handle=1
";
    // Directory permissions vary between host filesystems.
    let normalise = |s: &str| s.replace("mode=40700", "mode=40755").replace("mode=40775", "mode=40755");
    assert_eq!(normalise(out.stdout_str().as_ref()), expected, "{}", out.stdout_str());
    let err = forge(&mut sb, "bad-walk-buffer", |c| c).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestCrashed, "{err}");
    assert!(err.to_string().contains("walk hypercall with a bad buffer"), "{err}");
}

/// Paths that go down several directories not looked up yet (one host
/// call for all of them) resolve as natively: through symlinks, `..`,
/// missing names and files in the middle.
#[test]
fn paths_down_new_host_directories_resolve_in_one_go() {
    let tmp = hvsandbox_tests::TempDir::new("fs-deep");
    let deep = tmp.0.join("a/b/c/d");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("e.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("c", tmp.0.join("a/b/link")).unwrap();
    std::fs::write(tmp.0.join("a/f"), "").unwrap();
    let mut sb = Sandbox::builder().mount(&tmp.0, "/m").build().unwrap();
    let script = "cat /m/a/b/link/d/e.txt; cat /m/a/b/c/../c/d/e.txt; \
                  cat /m/a/b/c/missing/x 2>/dev/null || echo missing; \
                  cat /m/a/f/x 2>/dev/null || echo not-a-dir; \
                  cat /m/a/b/c/d/e.txt; ls /m/a/b/c/d";
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["sh", "-c", script]));
    assert_eq!(out.stdout_str(), "deep\ndeep\nmissing\nnot-a-dir\ndeep\ne.txt\n");
}

/// sendfile from a file to a pipe behaves as natively, a negative offset
/// included (EINVAL; it read from offset 2^64 - 1 before).
#[test]
fn sendfile_moves_the_offset_it_is_given_or_the_files_position() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "sendfile",
        &[
            "with offset: 6 \"456789\", offset now 10, position 0",
            "without: 3 \"012\", position 3",
            "count 0: 0; negative offset: -1 EINVAL",
        ],
    );
}

/// A directory without write permission keeps its entries (unlink,
/// rmdir, rename, link, symlink are EACCES; they removed and made names),
/// with ENOENT and EEXIST first; one without search permission lets
/// nothing in it be reached, one without read permission is not listed;
/// as natively (as nobody).
#[test]
fn a_directory_without_write_permission_keeps_its_entries() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "dir_perms",
        &[
            "unlink EACCES, rmdir EACCES, rename EACCES, link EACCES, symlink EACCES",
            "unlink missing ENOENT, link over existing EEXIST, rename into it EACCES",
            "writable again: unlink 0, rmdir 0, rmdir the directory 0, 0",
            "no search: stat EACCES, open EACCES, through .. EACCES, chdir EACCES; listed 4 names",
            "search only: stat 0, open 0, through .. 0, opendir EACCES",
        ],
    );
}

/// `/proc/<pid>/exe` and the names `/proc/<pid>/maps` gives a program's
/// segments are its file's own path, with no symlink in it, as on Linux:
/// a program started through a symlink shows the file the link names. The
/// same commands natively print the same, under the host directory.
#[test]
fn a_programs_exe_link_and_maps_name_its_files_own_path() {
    let tmp = hvsandbox_tests::TempDir::new("exe-link");
    std::fs::create_dir_all(tmp.0.join("real")).unwrap();
    std::fs::copy(BUSYBOX, tmp.0.join("real/busybox")).unwrap();
    std::os::unix::fs::symlink("real/busybox", tmp.0.join("sh")).unwrap();
    let script = |root: &str| {
        format!(
            "{root}/sh -c 'readlink /proc/$$/exe; grep -c \" {root}/real/busybox$\" /proc/$$/maps; \
             [ /proc/$$/exe -ef {root}/real/busybox ] && echo same-file'"
        )
    };
    let host_root = tmp.0.to_str().unwrap();
    let native = std::process::Command::new(BUSYBOX).args(["sh", "-c", &script(host_root)]).output().unwrap();
    let native = String::from_utf8(native.stdout).unwrap();
    let lines: Vec<&str> = native.lines().collect();
    assert_eq!(lines.len(), 3, "natively: {native}");
    assert_eq!(lines[0], format!("{host_root}/real/busybox"));
    assert!(lines[1].parse::<u32>().unwrap() >= 1, "natively: {native}");
    assert_eq!(lines[2], "same-file");
    let mut sb = Sandbox::builder().mount(&tmp.0, "/m").build().unwrap();
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["sh", "-c", &script("/m")]));
    assert_eq!(out.stdout_str(), native.replace(host_root, "/m"), "{}", out.stderr_str());
}

#[test]
fn fs_hypercall_buffers_may_be_anywhere_the_guest_mapped() {
    let tree = HostTree::new("user-buffers");
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let out = forge(&mut sb, "user-buffers", |c| c).unwrap();
    assert_eq!(out.stdout_str(), "size=12 read=12:hello, world\n");
}

#[test]
fn forged_fs_hypercall_with_a_bad_buffer_crashes_only_that_sandbox() {
    let tree = HostTree::new("bad-buffer");
    for scenario in ["bad-buffer", "huge-read"] {
        let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
        let err = forge(&mut sb, scenario, |c| c).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestCrashed, "{scenario}: {err}");
        assert!(err.to_string().contains("bad buffer"), "{err}");
    }
    // Other sandboxes are unaffected.
    assert_eq!(sandbox().run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn filesystem_configuration_is_validated() {
    let tree = HostTree::new("config");
    let config_err = |b: hvsandbox::SandboxBuilder| {
        let err = b.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        err.to_string()
    };
    let shared = tree.shared();
    assert!(config_err(Sandbox::builder().mount(tree.0.join("missing"), "/mnt")).contains("missing"));
    assert!(config_err(Sandbox::builder().mount(shared.join("hello.txt"), "/mnt")).contains("not a directory"));
    for guest in ["mnt", "/", "/mnt/", "/a/../mnt", "//mnt", ""] {
        config_err(Sandbox::builder().mount(&shared, guest));
    }
    config_err(Sandbox::builder().mount(&shared, "/m").mount(&shared, "/m"));
    config_err(Sandbox::builder().file("relative.txt", "x"));
    config_err(Sandbox::builder().file_with_mode("/x", "x", 0o170000));
    assert!(config_err(Sandbox::builder().mount(&shared, "/mnt").file("/mnt/x", "x")).contains("read-only"));
    config_err(Sandbox::builder().cwd("tmp"));
    config_err(Sandbox::builder().max_input(3).file("/a", "four"));
    // Nested and sibling mounts, files beside them, a cwd: all fine.
    Sandbox::builder()
        .mount(&shared, "/mnt")
        .mount(shared.join("sub"), "/mnt2/sub")
        .file("/mnt2/x", "x")
        .cwd("/")
        .build()
        .unwrap();

    // The command's paths are checked when it runs, without poisoning.
    let mut sb = Sandbox::builder().mount(&shared, "/mnt").max_input(10).build().unwrap();
    for cmd in [
        Command::new(BUSYBOX).file("/mnt/x", "x"),
        Command::new(BUSYBOX).file("x", "x"),
        Command::new(BUSYBOX).cwd("rel"),
        Command::new(BUSYBOX).collect("/out/"),
        Command::new(BUSYBOX).stdin("123456").file("/a", "12345"),
    ] {
        let err = sb.run(&cmd).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    }
    let err = sb.run(&Command::new(BUSYBOX).stdin("123456").file("/a", "12345")).unwrap_err();
    assert!(err.to_string().contains("max_input"), "{err}");
    // Input of exactly the cap runs.
    let out = sb.run(&Command::new(BUSYBOX).arg("true").stdin("12345").file("/a", "12345")).unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_manifest_too_large_for_the_args_region_is_invalid_config() {
    let mut cmd = Command::new(BUSYBOX).arg("true");
    for i in 0..3000 {
        cmd = cmd.file(format!("/f/{i:0>60}"), "");
    }
    let err = sandbox().run(&cmd).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("manifest"), "{err}");
}

// ---- end to end, with the guest VFS --------------------------------------

fn run_ok(sb: &mut Sandbox, cmd: &Command) -> hvsandbox::Output {
    let out = sb.run(cmd).unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr_str());
    out
}

#[test]
fn program_reads_a_given_file() {
    let mut sb = Sandbox::builder().file("/etc/greeting", "from the sandbox\n").build().unwrap();
    let cmd = Command::new(BUSYBOX).args(["cat", "/data/x.txt", "/etc/greeting"]).file("/data/x.txt", "hello\n");
    assert_eq!(run_ok(&mut sb, &cmd).stdout_str(), "hello\nfrom the sandbox\n");
    // Given files are writable in the guest, and a command's file replaces
    // the sandbox's (shell builtins only: no processes yet).
    let script = "echo more >> /etc/greeting && while read -r l; do echo \"$l\"; done < /etc/greeting";
    let cmd = Command::new(BUSYBOX).args(["sh", "-c", script]).file("/etc/greeting", "mine\n");
    assert_eq!(run_ok(&mut sb, &cmd).stdout_str(), "mine\nmore\n");
    // Modes are kept.
    let cmd = Command::new(BUSYBOX).args(["stat", "-c", "%a", "/bin/tool"]).file_with_mode("/bin/tool", "x", 0o755);
    assert_eq!(run_ok(&mut sb, &cmd).stdout_str(), "755\n");
}

#[test]
fn mounted_directory_is_listed_and_read() {
    let tree = HostTree::new("e2e-ls");
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["ls", "/mnt"]));
    assert_eq!(out.stdout_str(), "abs\nhello.txt\nparent\npasswd\nsub\nup\n");
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["cat", "/mnt/hello.txt", "/mnt/sub/inner.txt"]));
    assert_eq!(out.stdout_str(), "hello, worldinner");
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["readlink", "/mnt/passwd"]));
    assert_eq!(out.stdout_str(), "/etc/passwd\n");
    // Read-only.
    let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", "echo x > /mnt/new.txt"])).unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!tree.shared().join("new.txt").exists());
}

/// A host directory whose records outgrow the runtime's 256 KiB buffer
/// takes more than one host call to list: every entry comes once, in
/// order (the runtime takes a reply with room to spare as the last).
#[test]
fn a_large_mounted_directory_is_listed_whole() {
    let tmp = hvsandbox_tests::TempDir::new("fs-large-dir");
    let mut names: Vec<String> = (0..3000).map(|i| format!("{i:05}-{}", "x".repeat(120))).collect();
    for n in &names {
        std::fs::write(tmp.0.join(n), "").unwrap();
    }
    names.sort();
    let mut sb = Sandbox::builder().mount(&tmp.0, "/m").build().unwrap();
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["ls", "-1", "/m"]));
    assert_eq!(out.stdout_str(), names.join("\n") + "\n");
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["sh", "-c", "ls -1a /m | wc -l; ls /m/00007-*"]));
    assert_eq!(out.stdout_str(), format!("3002\n/m/{}\n", names[7]));
}

#[test]
fn dot_dot_and_symlinks_in_a_mount_stay_in_the_guest_view() {
    let tree = HostTree::new("e2e-escape");
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    for path in ["/mnt/../secret.txt", "/mnt/parent", "/mnt/abs", "/mnt/up/secret.txt", "/mnt/up/tmp/secret.txt"] {
        let out = sb.run(&Command::new(BUSYBOX).args(["cat", path])).unwrap();
        assert!(!out.stdout_str().contains("TOP SECRET"), "{path} reached the host: {}", out.stdout_str());
        assert_ne!(out.status.code(), Some(0), "{path}");
    }
    for path in ["/mnt/../etc/passwd", "/mnt/passwd", "/mnt/up/etc/passwd"] {
        let out = sb.run(&Command::new(BUSYBOX).args(["cat", path])).unwrap();
        assert!(host_passwd.is_empty() || out.stdout_str() != host_passwd, "{path} read the host's /etc/passwd");
    }
    // `up` is ../../.. from /mnt: the guest's root.
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["ls", "/mnt/up/mnt"]));
    assert!(out.stdout_str().contains("hello.txt"), "{}", out.stdout_str());
}

#[test]
fn written_files_are_collected() {
    let mut sb = sandbox();
    let cmd = Command::new(BUSYBOX)
        .args(["sh", "-c", "echo hi > /tmp/o.txt && printf x > /out/d/y && echo no > /tmp/other"])
        .cwd("/out/d")
        .collect("/tmp/o.txt")
        .collect("/out");
    let out = run_ok(&mut sb, &cmd);
    assert_eq!(out.files.keys().collect::<Vec<_>>(), ["/out/d/y", "/tmp/o.txt"]);
    assert_eq!(out.files["/tmp/o.txt"], b"hi\n");
    assert_eq!(out.files["/out/d/y"], b"x");
    assert!(!out.files_truncated);

    // Past the caps: flagged.
    let mut sb = Sandbox::builder().max_collect_bytes(1000).build().unwrap();
    let cmd = Command::new(BUSYBOX)
        .args(["dd", "if=/dev/zero", "of=/out/big", "bs=5000", "count=1"])
        .cwd("/out")
        .collect("/out");
    let out = run_ok(&mut sb, &cmd);
    assert!(out.files_truncated);
    assert!(out.files.get("/out/big").is_none_or(|f| f.len() < 5000));
}

#[test]
fn working_directory_is_used() {
    let mut sb = Sandbox::builder().cwd("/work").build().unwrap();
    assert_eq!(run_ok(&mut sb, &Command::new(BUSYBOX).arg("pwd")).stdout_str(), "/work\n");
    let cmd = Command::new(BUSYBOX).args(["cat", "in.txt"]).cwd("/job").file("/job/in.txt", "rel\n");
    assert_eq!(run_ok(&mut sb, &cmd).stdout_str(), "rel\n");
    assert_eq!(run_ok(&mut sandbox(), &Command::new(BUSYBOX).arg("pwd")).stdout_str(), "/\n");
}

#[test]
fn bare_names_are_found_on_the_guests_path_in_the_guests_view() {
    // shared/ (mounted at /mnt): bin/tool (0755), bin/noexec (0644),
    // bin/{rel -> tool, abs -> /mnt/bin/tool, host -> <base>/outside/tool},
    // x/tool (0644); <base>/outside/tool (0755) is outside the mount.
    let tree = HostTree::new("e2e-path");
    let (shared, outside) = (tree.shared(), tree.0.join("outside"));
    let image = std::fs::read(musl("args_env")).unwrap();
    for (dir, name, mode) in [(&shared.join("bin"), "tool", 0o755), (&shared.join("bin"), "noexec", 0o644)]
        .into_iter()
        .chain([(&shared.join("x"), "tool", 0o644), (&outside, "tool", 0o755)])
    {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), &image).unwrap();
        chmod(&dir.join(name), mode);
    }
    let bin = shared.join("bin");
    std::os::unix::fs::symlink("tool", bin.join("rel")).unwrap();
    std::os::unix::fs::symlink("/mnt/bin/tool", bin.join("abs")).unwrap();
    std::os::unix::fs::symlink(outside.join("tool"), bin.join("host")).unwrap();
    let mut sb = Sandbox::builder().mount(&shared, "/mnt").build().unwrap();
    let argv0 = |sb: &mut Sandbox, cmd: &Command| {
        let out = run_ok(sb, cmd);
        out.stdout_str().lines().nth(1).unwrap_or_default().trim_start_matches("argv[0]=").to_string()
    };
    // argv[0] is where the name was found (the PATH entry and the name).
    let found = [
        ("tool", "/mnt/bin", "/", "/mnt/bin/tool"),
        ("rel", "/mnt/bin", "/", "/mnt/bin/rel"),
        ("abs", "/mnt/bin", "/", "/mnt/bin/abs"),
        // Not executable: passed over, as execvp does.
        ("tool", "/mnt/x:/mnt/bin", "/", "/mnt/bin/tool"),
        // `..` is the guest's: above /mnt is the guest's root.
        ("tool", "/mnt/../mnt/bin", "/", "/mnt/../mnt/bin/tool"),
        // Relative entries (an empty one is `.`) start at the working directory.
        ("tool", "/nowhere:bin", "/mnt", "/mnt/bin/tool"),
        ("tool", ":/nowhere", "/mnt/bin", "/mnt/bin/./tool"),
    ];
    for (name, path, cwd, want) in found {
        let cmd = Command::new(name).env("PATH", path).cwd(cwd);
        assert_eq!(argv0(&mut sb, &cmd), want, "{name} on {path} in {cwd}");
    }
    let not_found = [
        ("host", "/mnt/bin", "not found"),
        ("tool", "/mnt/../outside", "not found"),
        ("tool", "/outside", "not found"),
        ("noexec", "/mnt/bin", "/mnt/bin/noexec is on the guest's PATH (/mnt/bin) but the guest may not execute"),
        ("bin", "/mnt", "may not execute"),
        ("missing", "/mnt/bin", "not found on the guest's PATH (/mnt/bin)"),
        ("", "/mnt/bin", "not a valid file name"),
    ];
    for (name, path, needle) in not_found {
        let err = sb.run(&Command::new(name).env("PATH", path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{name} on {path}: {err}");
        assert!(err.to_string().contains(&format!("invalid program {name}: ")), "{err}");
        assert!(err.to_string().contains(needle), "{name} on {path}: {err}");
    }
    // The PATH is the run's environment's (the sandbox's, the command's on
    // top) or, without one, the usual directories.
    let mut sb =
        Sandbox::builder().mount(&bin, "/usr/local/bin").file_with_mode("/opt/tool", &image, 0o755).build().unwrap();
    assert_eq!(argv0(&mut sb, &Command::new("tool")), "/usr/local/bin/tool");
    assert_eq!(argv0(&mut sb, &Command::new("tool").env("PATH", "/opt:/usr/local/bin")), "/opt/tool");
    let cmd = Command::new("tool")
        .file_with_mode("/opt/tool", "#!/no/such/interpreter\n", 0o644)
        .env("PATH", "/opt:/usr/local/bin");
    assert_eq!(argv0(&mut sb, &cmd), "/usr/local/bin/tool", "the command's file replaces the sandbox's");
    let mut sb = Sandbox::builder().env("PATH", "/opt").file_with_mode("/opt/tool", &image, 0o755).build().unwrap();
    assert_eq!(argv0(&mut sb, &Command::new("tool")), "/opt/tool");
    let err = sb.run(&Command::new("tool").env_clear()).unwrap_err();
    assert!(err.to_string().contains("not found on the guest's PATH (/usr/local/bin:/usr/bin:/bin:"), "{err}");
    // A name with a slash is a host path, used as is.
    let err = sb.run(&Command::new("opt/tool")).unwrap_err();
    assert!(err.to_string().contains("invalid program opt/tool: cannot read it"), "{err}");
}

#[test]
fn cli_mounts_files_and_collects() {
    let tree = HostTree::new("e2e-cli");
    let input = tree.0.join("input.txt");
    std::fs::write(&input, "from a host file\n").unwrap();
    let collect_dir = tree.0.join("collected");
    let out = std::process::Command::new(hvsandbox_bin())
        .arg("run")
        .arg("--mount")
        .arg(format!("{}:/mnt", tree.shared().display()))
        .arg("--file")
        .arg(format!("/job/in.txt={}", input.display()))
        .args(["--cwd", "/job/out", "--collect", "/job/out"])
        .arg("--collect-dir")
        .arg(&collect_dir)
        .args(["--", BUSYBOX, "cp", "../in.txt", "/mnt/hello.txt", "."])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(collect_dir.join("job/out/in.txt")).unwrap(), b"from a host file\n");
    assert_eq!(std::fs::read(collect_dir.join("job/out/hello.txt")).unwrap(), b"hello, world");
}

// ---- what the guest may read on the host ---------------------------------

#[test]
fn locate_program_names_the_file_a_run_would_execute() {
    // shared/bin/tool (0755) and a symlink to it; mounted at /mnt.
    let tree = HostTree::new("e2e-locate");
    let bin = tree.shared().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(musl("args_env"), bin.join("tool")).unwrap();
    chmod(&bin.join("tool"), 0o755);
    std::os::unix::fs::symlink("tool", bin.join("rel")).unwrap();
    let builder = Sandbox::builder().mount(tree.shared(), "/mnt");
    let mut sb = builder.clone().build().unwrap();
    let on_path = |name: &str| Command::new(name).env("PATH", "/nowhere:/mnt/bin");
    // argv[0] is the run's own; the same file is the same ProgramFile.
    for name in ["tool", "rel"] {
        let file = builder.locate_program(&on_path(name)).unwrap();
        let out = run_ok(&mut sb, &on_path(name));
        assert_eq!(format!("argv[0]={}", file.argv0().to_string_lossy()), out.stdout_str().lines().nth(1).unwrap());
        assert_eq!(builder.locate_program(&on_path(name)).unwrap(), file);
    }
    let by_name = builder.locate_program(&on_path("tool")).unwrap();
    let host = bin.join("tool");
    let by_path = builder.locate_program(&Command::new(&host)).unwrap();
    assert_eq!(by_path.argv0(), host.as_os_str());
    // Another file put in its place (renamed over it) is another ProgramFile.
    std::fs::copy(musl("hello"), bin.join("tool.new")).unwrap();
    chmod(&bin.join("tool.new"), 0o755);
    std::fs::rename(bin.join("tool.new"), &host).unwrap();
    assert_ne!(builder.locate_program(&on_path("tool")).unwrap(), by_name);
    assert_ne!(builder.locate_program(&Command::new(&host)).unwrap(), by_path);
    // So is the same file written in place (its size changes; its times
    // too, where the clock has moved on).
    let now = builder.locate_program(&on_path("tool")).unwrap();
    std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&host).unwrap(), b"\0").unwrap();
    assert_ne!(builder.locate_program(&on_path("tool")).unwrap(), now);
    // A file the run passes over (too large to be a program) is passed
    // over here too: both name the next one on PATH.
    let big = tree.shared().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let sparse = std::fs::File::create(big.join("tool")).unwrap();
    sparse.set_len(hvsandbox::MAX_PROGRAM_SIZE + 1).unwrap();
    chmod(&big.join("tool"), 0o755);
    let past_big = || Command::new("tool").env("PATH", "/mnt/big:/mnt/bin");
    let file = builder.locate_program(&past_big()).unwrap();
    assert_eq!(file.argv0(), "/mnt/bin/tool");
    assert_eq!(run_ok(&mut sb, &past_big()).stdout_str(), "hello, world\n");
    // What a run could not execute is the run's error; bytes are no file.
    let kind = |cmd: &Command| builder.locate_program(cmd).unwrap_err().kind();
    assert_eq!(kind(&on_path("missing")), ErrorKind::InvalidProgram);
    assert_eq!(kind(&Command::new(tree.shared())), ErrorKind::InvalidProgram);
    assert_eq!(kind(&Command::new("/no/such/file")), ErrorKind::InvalidProgram);
    assert_eq!(kind(&Command::from_image("x", std::fs::read(musl("hello")).unwrap())), ErrorKind::InvalidConfig);
    let blob =
        Command::new("t").env("PATH", "/opt").file_with_mode("/opt/t", std::fs::read(musl("hello")).unwrap(), 0o755);
    assert_eq!(kind(&blob), ErrorKind::InvalidConfig);
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// shared/ (0755)
///   shadow         0600 "shadow"   (the owner's only, as /etc/shadow)
///   public         0644 "public"
///   private/       0700 with inner (0644 "inner")
///   search-only/   0711 with inner
///   list-only/     0744 with inner
fn permission_tree(name: &str) -> HostTree {
    let tree = HostTree::new(name);
    let shared = tree.shared();
    chmod(&shared, 0o755);
    for (file, mode) in [("shadow", 0o600), ("public", 0o644)] {
        std::fs::write(shared.join(file), file).unwrap();
        chmod(&shared.join(file), mode);
    }
    for (dir, mode) in [("private", 0o700), ("search-only", 0o711), ("list-only", 0o744)] {
        std::fs::create_dir(shared.join(dir)).unwrap();
        std::fs::write(shared.join(dir).join("inner"), "inner").unwrap();
        chmod(&shared.join(dir).join("inner"), 0o644);
        chmod(&shared.join(dir), mode);
    }
    tree
}

/// Runs the forger's "paths" scenario: each path below the (only) mount
/// is walked and read or listed with raw hypercalls.
fn forge_paths(sb: &mut Sandbox, paths: &[String]) -> String {
    let out = forge(sb, "paths", |c| c.args(paths)).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    out.stdout_str()
}

fn strings(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

#[test]
fn forged_fs_hypercalls_get_only_what_the_guests_user_may_read() {
    // The tests run as root, which reads every file through its owner
    // bits: the host must apply the guest user's rule itself.
    let tree = permission_tree("perm-forged");
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let paths = strings(&[
        "shadow",
        "public",
        "private",
        "private/inner",
        "search-only",
        "search-only/inner",
        "list-only",
        "list-only/inner",
    ]);
    let expected = "\
shadow: read=-13
public: read=public
private: readdir=-13
private/inner: lookup inner=-13
search-only: readdir=-13
search-only/inner: read=inner
list-only: readdir=ok:1
list-only/inner: lookup inner=-13
";
    assert_eq!(forge_paths(&mut sb, &paths), expected);

    // The host's own /etc/shadow, where it is not world-readable.
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata("/etc/shadow").is_ok_and(|m| m.permissions().mode() & 0o004 == 0) {
        let mut sb = Sandbox::builder().mount("/etc", "/mnt").build().unwrap();
        let got = forge_paths(&mut sb, &strings(&["shadow", "passwd"]));
        assert!(got.starts_with("shadow: read=-13\npasswd: read=root:"), "{got}");
    }
}

#[test]
fn programs_get_only_what_the_guests_user_may_read() {
    let tree = permission_tree("perm-programs");
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let run = |sb: &mut Sandbox, args: &[&str]| sb.run(&Command::new(BUSYBOX).args(args)).unwrap();
    for args in
        [["cat", "/mnt/shadow"], ["cat", "/mnt/private/inner"], ["ls", "/mnt/private"], ["ls", "/mnt/search-only"]]
    {
        let out = run(&mut sb, &args);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", out.stdout_str());
        assert!(out.stderr_str().contains("Permission denied"), "{args:?}: {}", out.stderr_str());
    }
    assert_eq!(run(&mut sb, &["cat", "/mnt/public", "/mnt/search-only/inner"]).stdout_str(), "publicinner");
    // Listed (a glob reads the directory only; `ls` would stat "inner").
    assert_eq!(run(&mut sb, &["sh", "-c", "echo /mnt/list-only/*"]).stdout_str(), "/mnt/list-only/inner\n");
}

#[test]
fn forged_fs_hypercalls_do_not_enter_kernel_filesystems() {
    let pid = std::process::id();
    let mut sb = Sandbox::builder().mount("/", "/host").build().unwrap();
    let paths = vec!["proc/self/environ".to_string(), format!("proc/{pid}/mem"), "sys".into(), "proc/version".into()];
    let got = forge_paths(&mut sb, &paths);
    let expected = format!(
        "\
proc/self/environ: lookup proc=-13
proc/{pid}/mem: lookup proc=-13
sys: lookup sys=-13
proc/version: lookup proc=-13
"
    );
    assert_eq!(got, expected);
    // Ordinary directories of the same mount are served.
    assert_eq!(forge_paths(&mut sb, &strings(&["etc"])), "etc: readdir=ok:1\n");

    // Opted in: entered, and the permission rule still applies.
    let mut sb = Sandbox::builder().mount_with_kernel_fs("/", "/host").build().unwrap();
    let paths = vec![format!("proc/{pid}/environ"), format!("proc/{pid}/mem"), "sys".into(), "proc/version".into()];
    let got = forge_paths(&mut sb, &paths);
    let expected = format!(
        "proc/{pid}/environ: read=-13\nproc/{pid}/mem: read=-13\nsys: readdir=ok:1\nproc/version: read=Linux version"
    );
    assert!(got.starts_with(&expected), "{got}");
}

#[test]
fn programs_do_not_enter_kernel_filesystems() {
    let pid = std::process::id().to_string();
    let mut sb = Sandbox::builder().mount("/", "/host").build().unwrap();
    let mem = format!("/host/proc/{pid}/mem");
    for args in [["cat", "/host/proc/self/environ"], ["cat", &mem], ["ls", "/host/sys"], ["cat", "/host/proc/version"]]
    {
        let out = sb.run(&Command::new(BUSYBOX).args(args)).unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", out.stdout_str());
        assert!(out.stderr_str().contains("Permission denied"), "{args:?}: {}", out.stderr_str());
    }
    let out = sb.run(&Command::new(BUSYBOX).args(["cat", "/host/etc/passwd"])).unwrap();
    assert!(out.stdout_str().starts_with("root:"), "{}", out.stderr_str());

    // Opted in.
    let mut sb = Sandbox::builder().mount_with_kernel_fs("/", "/host").build().unwrap();
    let out = sb.run(&Command::new(BUSYBOX).args(["ls", "/host/sys", "/host/proc"])).unwrap();
    let names: Vec<&str> = out.stdout.split(|&b| b == b'\n').filter_map(|l| std::str::from_utf8(l).ok()).collect();
    assert!(names.contains(&"kernel") && names.contains(&"version"), "{names:?} {}", out.stderr_str());
}

#[test]
fn kernel_filesystem_mount_roots_need_the_opt_in() {
    for root in ["/proc", "/sys", "/proc/self"] {
        let err = Sandbox::builder().mount(root, "/k").build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{root}: {err}");
        assert!(err.to_string().contains("kernel filesystem"), "{root}: {err}");
    }
    let mut sb = Sandbox::builder().mount_with_kernel_fs("/proc", "/k").build().unwrap();
    let out = sb.run(&Command::new(BUSYBOX).args(["cat", "/k/version"])).unwrap();
    assert_eq!(out.stdout, std::fs::read("/proc/version").unwrap(), "{}", out.stderr_str());
}

#[test]
fn kernel_files_of_size_zero_read_whole_with_the_opt_in() {
    // procfs says its files are empty; the guest reads them to the end once
    // and then stat, read and wc agree on what was read.
    let version = std::fs::read("/proc/version").unwrap();
    let mut sb = Sandbox::builder().mount_with_kernel_fs("/proc", "/k").build().unwrap();
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["cat", "/k/version"]));
    assert_eq!(out.stdout, version);
    let script = "wc -c /k/version && cat /k/version >/dev/null && stat -c %s /k/version";
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["sh", "-c", script]));
    assert_eq!(out.stdout_str(), format!("{0} /k/version\n{0}\n", version.len()));

    // sysfs says its attributes take a page; the guest's copy ends where
    // the host's read does.
    let attr = ["kernel/address_bits", "kernel/mm/transparent_hugepage/enabled", "power/state"]
        .into_iter()
        .find(|a| std::fs::read(format!("/sys/{a}")).is_ok_and(|b| !b.is_empty() && b.len() < 4096));
    if let Some(attr) = attr {
        let host = std::fs::read(format!("/sys/{attr}")).unwrap();
        let mut sb = Sandbox::builder().mount_with_kernel_fs("/sys", "/s").build().unwrap();
        let script = format!("cat /s/{attr}; wc -c < /s/{attr}");
        let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["sh", "-c", &script]));
        assert_eq!(out.stdout_str(), format!("{}{}\n", String::from_utf8_lossy(&host), host.len()));
    }

    // A really empty host file still reads as empty.
    let tree = HostTree::new("empty-file");
    chmod(&tree.shared(), 0o755);
    std::fs::write(tree.shared().join("empty"), "").unwrap();
    chmod(&tree.shared().join("empty"), 0o644);
    let mut sb = Sandbox::builder().mount(tree.shared(), "/mnt").build().unwrap();
    let script = "cat /mnt/empty && wc -c /mnt/empty && stat -c %s /mnt/empty";
    let out = run_ok(&mut sb, &Command::new(BUSYBOX).args(["sh", "-c", script]));
    assert_eq!(out.stdout_str(), "0 /mnt/empty\n0\n");
}

#[test]
fn snapshots_keep_the_kernel_filesystem_choice() {
    // A snapshot taken in this process keeps its mounts, with the choice;
    // one loaded from a file gets its mounts from the caller (the file's
    // host paths are never opened), with the caller's choice.
    let dir = HostTree::new("kernel-fs-snapshots");
    let list = || Command::resume().args(["ls", "/host/sys"]);
    let mount = |builder: SandboxBuilder, opt_in: bool| {
        if opt_in {
            builder.mount_with_kernel_fs("/", "/host")
        } else {
            builder.mount("/", "/host")
        }
    };
    let check = |out: hvsandbox::Output, opt_in: bool| {
        assert_eq!(out.stdout_str().lines().any(|l| l == "kernel"), opt_in, "{}", out.stderr_str());
        assert_eq!(out.stderr_str().contains("Permission denied"), !opt_in, "{}", out.stderr_str());
    };
    for opt_in in [false, true] {
        let snap = mount(Sandbox::builder(), opt_in)
            .build()
            .unwrap()
            .snapshot(&Command::new(BUSYBOX), hvsandbox::SnapshotPoint::Entry)
            .unwrap();
        check(Sandbox::from_snapshot(&snap).unwrap().run(&list()).unwrap(), opt_in);
        let file = dir.0.join(format!("snap-{opt_in}"));
        snap.save(&file).unwrap();
        let loaded = hvsandbox::Snapshot::load(&file).unwrap();
        for caller_opts_in in [false, true] {
            let mut sb = mount(Sandbox::builder(), caller_opts_in).build_from(&loaded).unwrap();
            check(sb.run(&list()).unwrap(), caller_opts_in);
        }
    }
}

#[test]
fn cli_mounts_kernel_filesystems_only_when_asked() {
    let cli = |flag: &str| {
        std::process::Command::new(hvsandbox_bin())
            .args(["run", flag, "/proc:/k", "--", BUSYBOX, "cat", "/k/version"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = cli("--mount");
    assert_eq!(out.status.code(), Some(125), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel filesystem"));
    // (Not a listing of /proc: processes come and go while it is read.)
    let out = cli("--mount-kernel-fs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, std::fs::read("/proc/version").unwrap());
}

#[test]
fn ordinary_filesystems_mounted_below_a_mount_are_entered() {
    // A tmpfs mounted inside a mounted directory (another device, not a
    // kernel filesystem) is served like the rest; /dev below it is not.
    let dir = HostTree::new("nested-tmpfs");
    let inner = dir.0.join("shared/sub");
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (target, opts) = (c(&inner), c(std::path::Path::new("mode=755")));
    // SAFETY: mount(2) with NUL-terminated strings this test owns.
    let r = unsafe { libc::mount(c"none".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, opts.as_ptr().cast()) };
    if r != 0 {
        eprintln!("skipped: cannot mount a tmpfs here ({})", std::io::Error::last_os_error());
        return;
    }
    std::fs::write(inner.join("on-tmpfs.txt"), "from tmpfs").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(inner.join("on-tmpfs.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut sb = Sandbox::builder().mount(dir.0.join("shared"), "/mnt").mount("/", "/host").build().unwrap();
    let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", "cat /mnt/sub/on-tmpfs.txt; ls /host/dev"])).unwrap();
    // SAFETY: umount2 of the tmpfs this test mounted.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(out.stdout_str(), "from tmpfs", "{}", out.stderr_str());
    assert!(out.stderr_str().contains("/host/dev: Permission denied"), "{}", out.stderr_str());
}

/// The /proc files everyday programs read at start: `mounts` and
/// `mountinfo` list the root, /proc and each host mount (read-only, with
/// the device number stat reports), `limits` says what getrlimit says,
/// `cgroup` is the root of cgroup v2, `/proc/sys` has the kernel's
/// release, a fresh random UUID at each read and a boot id that stays.
#[test]
fn proc_shows_mounts_limits_and_sys_files() {
    let tmp = hvsandbox_tests::TempDir::new("proc-files");
    std::fs::create_dir_all(tmp.0.join("d")).unwrap();
    let mut sb =
        Sandbox::builder().mount(tmp.0.join("d").to_str().unwrap(), "/data").max_open_files(777).build().unwrap();
    let script = "grep -c '^hostfs /data hostfs ro 0 0$' /proc/mounts; \
                  grep ' / /data ro - hostfs ' /proc/self/mountinfo | cut -d' ' -f3; stat -c '%d' /data; \
                  grep '^Max open files' /proc/self/limits | tr -s ' '; ulimit -n; cat /proc/self/cgroup; \
                  cat /proc/sys/kernel/osrelease; uname -r; \
                  a=$(cat /proc/sys/kernel/random/uuid); b=$(cat /proc/sys/kernel/random/uuid); \
                  [ \"$a\" != \"$b\" ] && echo uuids differ; echo $a | grep -cE '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'; \
                  [ \"$(cat /proc/sys/kernel/random/boot_id)\" = \"$(cat /proc/sys/kernel/random/boot_id)\" ] && echo boot id stays; \
                  cat /proc/sys/vm/overcommit_memory; ls /proc/sys/kernel | tr '\\n' ' '";
    let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", script])).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1", "{text}");
    // mountinfo's major:minor is the device stat reports (busybox: decimal).
    let (major, minor) = lines[1].split_once(':').unwrap();
    let dev: u64 = lines[2].parse().unwrap();
    assert_eq!((major.parse::<u64>().unwrap() << 8) | minor.parse::<u64>().unwrap(), dev);
    assert_eq!(lines[3], "Max open files 777 777 files ");
    assert_eq!(lines[4], "777");
    assert_eq!(lines[5], "0::/");
    assert_eq!(lines[6], lines[7], "osrelease is uname -r");
    assert_eq!(&lines[8..], ["uuids differ", "1", "boot id stays", "0", "hostname osrelease ostype pid_max random "]);
}

/// A run's files are read from the host as they are used: one changed
/// past its end keeps what it had, grows with zeros and has the size the
/// write gave it; one a snapshot's run never read is whole in the runs
/// from that snapshot (its host handle belonged to the snapshot's run).
#[test]
fn files_given_to_a_run_are_read_as_used_and_kept_whole() {
    let data: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let sum = |b: &[u8]| b.iter().map(|&c| u64::from(c)).sum::<u64>();
    let mut sb = Sandbox::builder().file("/in.txt", &data[..]).build().unwrap();
    let script = "printf x | dd of=/in.txt bs=1 seek=30000 conv=notrunc 2>/dev/null; wc -c </in.txt; \
                  head -c 20000 /in.txt | od -An -v -tu1 | tr -s ' ' '\\n' | awk '{s+=$1} END {print s}'; \
                  tail -c +20001 /in.txt | head -c 10000 | tr -d '\\0' | wc -c; tail -c 1 /in.txt";
    let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", script])).unwrap();
    assert_eq!(out.stdout_str(), format!("30001\n{}\n0\nx", sum(&data)), "{}", out.stderr_str());

    // A file given at the snapshot and not read before it.
    let mut sb = Sandbox::builder().file("/late.txt", &data[..]).build().unwrap();
    let snap = sb.snapshot(&Command::new(BUSYBOX).args(["busybox"]), hvsandbox::SnapshotPoint::Entry).unwrap();
    drop(sb);
    let mut clone = Sandbox::builder().build_from(&snap).unwrap();
    let out = clone.run(&Command::resume().args(["busybox", "cat", "/late.txt"])).unwrap();
    assert!(out.stdout == data, "{} bytes, not the file's {}: {}", out.stdout.len(), data.len(), out.stderr_str());
}

/// inotify reports what a program does to a watched directory, a file in
/// it and a subdirectory (create, open, read, write, close, chmod,
/// rename with its cookie, link, unlink, rmdir, truncate, touch,
/// symlink, mkfifo, listing, a rename over an open file), with the
/// descriptor's own rules (FIONREAD, poll, a read too small, one-shot
/// watches, the same watch again, IN_MASK_ADD, bad arguments) and a
/// blocking descriptor woken through epoll by another process, in the
/// same order and form as natively. It was ENOSYS.
#[test]
fn inotify_reports_changes_as_natively() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "inotify",
        &[
            "  dir MOVED_FROM a c1",
            "  dir MOVED_TO b c1",
            "  file MOVE_SELF",
            "  file DELETE_SELF",
            "  sub DELETE_SELF",
            "  dir DELETE|ISDIR sub",
            "  dir CLOSE_WRITE z",
            "  oneshot IGNORED",
            "read into 8 bytes: -1 errno 22",
            "IN_MASK_CREATE on a watched path: -1 errno 17",
            "epoll_wait: 1 data 7",
            "blocking read: 32 bytes, CREATE late",
            "with IN_EXCL_UNLINK: read -1",
            "  all CLOSE_WRITE u",
            "rmdir 0",
        ],
    );
}

/// Node's `fs.watch` (libuv's inotify) sees a file written and renamed
/// in a watched directory, as natively; it threw ENOSYS before.
#[test]
fn node_watches_a_directory_as_natively() {
    const NODE: &str = "/usr/bin/node";
    if !Path::new(NODE).exists() {
        eprintln!("skipped: {NODE} does not exist on this host");
        return;
    }
    let code = "const fs = require('fs'); const d = fs.mkdtempSync('/tmp/w-'); const seen = []; \
                const w = fs.watch(d, (ev, name) => seen.push(ev + ' ' + name)); \
                setTimeout(() => fs.writeFileSync(d + '/a.txt', 'x'), 50); \
                setTimeout(() => fs.renameSync(d + '/a.txt', d + '/b.txt'), 150); \
                setTimeout(() => { w.close(); fs.rmSync(d, {recursive: true}); \
                console.log([...new Set(seen)].join('\\n')); }, 1000);";
    let native = std::process::Command::new(NODE).args(["-e", code]).output().unwrap();
    assert!(native.status.success());
    let native = String::from_utf8(native.stdout).unwrap();
    assert!(native.contains("rename b.txt"), "natively: {native}");
    let mut sb =
        Sandbox::builder().host_system().memory_mib(512).timeout(std::time::Duration::from_secs(60)).build().unwrap();
    let out = sb.run(&Command::new(NODE).args(["-e", code])).unwrap();
    assert!(out.status.success(), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), native);
}

/// A descriptor's owner and signal (F_SETOWN, F_SETOWN_EX, F_SETSIG and
/// their F_GET forms, ESRCH for nobody), directory notifications
/// (F_NOTIFY: one-shot and DN_MULTISHOT, each kind of change, cancelled,
/// ENOTDIR on a file; it was EINVAL, which CPython's test_fcntl met) and
/// SIGURG to the owner of a TCP socket that urgent data reaches, as
/// natively.
#[test]
fn descriptor_owners_get_notifications_and_sigurg_as_natively() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "fcntl_notify",
        &[
            "F_SETOWN nobody: -1 errno 3",
            "F_SETOWN_EX tid: 0, back: type 0 is self 1",
            "create a, SIGIO: 1",
            "create b (one-shot: no more): 1",
            "rename c e: 5",
            "create f after: 6",
            "F_NOTIFY on a file: -1 errno 20",
            "urgent data, no owner: SIGURG: 0",
            "urgent data to the owner: SIGURG: 1",
        ],
    );
}

/// O_ASYNC as natively: SIGIO (si_code SI_KERNEL) to the owner at each
/// input on a pipe or a socket (FIOASYNC), F_SETSIG's signal with
/// POLL_IN/POLL_OUT, si_band and si_fd, POLL_OUT when a full pipe is
/// emptied, nothing without an owner or once O_ASYNC is cleared, a
/// directory notification's POLL_MSG with its descriptor, and a process
/// in sigsuspend woken by another's write. Before, O_ASYNC was dropped
/// from F_SETFL and nothing was sent; owner signals had no siginfo.
#[test]
fn o_async_descriptors_signal_their_owner_as_natively() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "sigio",
        &[
            "F_GETFL has O_ASYNC: yes",
            "after a write: signals 1, sig SIGIO, code 128",
            "with F_SETSIG: signals 1, sig RTMIN, code 1",
            "si_fd is the descriptor: yes, si_band has POLLIN: yes",
            "without an owner: signals 0",
            "with O_ASYNC cleared: signals 0",
            "write end emptied: signals 1, sig RTMIN, code 2",
            "socket input: signals 1, sig SIGIO, code 128",
            "directory notification: signals 1, sig RTMIN, code 3",
            "its si_fd is the directory's: yes",
            "woken by another process's write: signals 1, sig SIGIO, code 128",
        ],
    );
}

/// /proc/self/auxv (the vector the program started with, as getauxval
/// reads it), /proc/self/io (read and write calls and their bytes) and
/// /proc/self/fdinfo/N (a descriptor's position and flags) as natively;
/// all three were ENOENT.
#[test]
fn proc_auxv_io_and_fdinfo_show_what_linux_shows() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "procfs_more",
        &[
            "auxv: whole pairs 1, ends with AT_NULL 1, 6 of 6 keys as getauxval",
            "io: syscr +2 rchar +100 (less the first reading), syscw +1 wchar +100",
            "mkstemp file at 4: pos:\t4, flags:\t0100002, has mnt_id 1 ino 1",
            "O_WRONLY|O_APPEND|O_CLOEXEC: pos:\t0, flags:\t02102001, has mnt_id 1 ino 1",
            "pipe write end: pos:\t0, flags:\t01, has mnt_id 1 ino 1",
            "nonblocking socket: pos:\t0, flags:\t04002, has mnt_id 1 ino 1",
        ],
    );
}

/// /proc/net/{tcp,tcp6,udp,unix} list the sandbox's sockets as Linux
/// does: addresses, states, queues, the owner and the inode that fstat
/// and /proc/self/fd say (listeners, a connection in a backlog, accepted
/// and connecting ends, IPv6, bound and connected UDP, local sockets by
/// path and abstract name), with Linux's headers and padding. /proc/net
/// was ENOENT; a connected UDP socket said it was bound to 0.0.0.0.
#[test]
fn proc_net_lists_the_sandboxs_sockets_as_linux_does() {
    hvsandbox_tests::same_as_native(
        &mut sandbox(),
        "net_tables",
        &[
            "  (backlog): 0100007F:L2 -> 0100007F:ephemeral st 01 queues 00000000:00000000 uid is mine 1 width 150",
            "  accepted: 0100007F:L -> 0100007F:ephemeral st 01 queues 00000000:00000005 uid is mine 1 width 150",
            "  listener2: 0100007F:L2 -> 00000000:0 st 0A queues 00000000:00000001 uid is mine 1 width 150",
            "  listener6: 00000000000000000000000001000000:L6 -> 00000000000000000000000000000000:0 st 0A \
             queues 00000000:00000000 uid is mine 1 unpadded 1",
            "  udp-connected: 0100007F:ephemeral -> 0100007F:U st 01 queued 0 uid is mine 1 width 128",
            "  unix-abstract: flags 00000000 type 0002 st 01 path '@ABSTRACT'",
            "  unix-listener: flags 00010000 type 0001 st 01 path 'DIR/sock'",
            "/proc/net -> self/net; /proc/self/net/unix opens 1",
        ],
    );
}

/// A mount's root status comes with the boot manifest: mounts the program
/// does not touch cost its run no exit (each was an FS_STAT hypercall at
/// boot), and a mount root's status is the host directory's.
#[test]
fn mount_roots_cost_no_exit_until_used_and_state_the_hosts_status() {
    let tree = HostTree::new("mount-roots");
    let shared = tree.0.join("shared");
    let exits = |mounts: usize| {
        let mut b = Sandbox::builder().memory_mib(64);
        for i in 0..mounts {
            b = b.mount(&shared, format!("/m{i}"));
        }
        let out = b.build().unwrap().run(&Command::new(BUSYBOX).arg("true")).unwrap();
        assert_eq!(out.status.code(), Some(0));
        out.stats.exits
    };
    assert_eq!(exits(6), exits(0));
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::metadata(&shared).unwrap();
    let mut sb = Sandbox::builder().memory_mib(64).mount(&shared, "/m").build().unwrap();
    let out = sb.run(&Command::new(BUSYBOX).args(["stat", "-c", "%i %a %Y %F", "/m"])).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} {:o} {} directory\n", host.ino(), host.mode() & 0o7777, host.mtime())
    );
}
