//! Snapshots, clones and reset: runs start from a frozen guest, get their
//! own inputs, and see nothing a previous run wrote.
//!
//! One file of ~870 lines: every file under `tests/` is a test binary of
//! its own, linked with the library and the embedded runtime, so the
//! suite's build time grows with their number; the tests of snapshots stay
//! together here.

use std::time::Duration;

use hvsandbox::{Command, ErrorKind, Sandbox, Snapshot, SnapshotPoint};
use hvsandbox_tests::{hostile, musl, TempDir, BUSYBOX};

fn entry_snapshot(program: &std::path::Path, args: &[&str]) -> Snapshot {
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    sb.snapshot(&Command::new(program).args(args), SnapshotPoint::Entry).unwrap()
}

#[test]
fn entry_snapshot_runs_with_each_runs_arguments_and_environment() {
    let snap = entry_snapshot(&musl("args_env"), &["at-snapshot"]);
    assert_eq!(snap.point(), SnapshotPoint::Entry);
    assert_eq!(snap.memory_bytes(), 64 << 20);
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    for i in 0..5 {
        let out =
            clone.run(&Command::resume().args([format!("run-{i}"), "x y".into()]).env("RUN", i.to_string())).unwrap();
        let text = out.stdout_str();
        assert_eq!(out.status.code(), Some(0));
        assert!(text.starts_with("argc=3\n"), "{text}");
        assert!(text.contains(&format!("argv[1]=run-{i}\nargv[2]=x y\n")), "{text}");
        assert!(text.ends_with(&format!("env:RUN={i}\n")), "{text}");
        assert!(!text.contains("at-snapshot"), "{text}");
    }
    // Independent clones of one snapshot.
    let mut other = Sandbox::from_snapshot(&snap).unwrap();
    assert!(other.run(&Command::resume().arg("other")).unwrap().stdout_str().contains("argv[1]=other\n"));
}

#[test]
fn clones_get_fresh_clocks_and_randomness() {
    let snap = entry_snapshot(&musl("sysinfo"), &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    let a = clone.run(&Command::resume()).unwrap().stdout_str();
    let b = clone.run(&Command::resume()).unwrap().stdout_str();
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for text in [&a, &b] {
        let t: i64 = text.lines().find_map(|l| l.strip_prefix("realtime=")).unwrap().parse().unwrap();
        assert!((t - host_now).abs() <= 2, "clock {t} vs host {host_now}: {text}");
        assert!(text.contains("slept_ms="), "{text}");
    }
}

#[test]
fn runs_from_a_checkpoint_over_2_mib_pages_each_see_the_same() {
    // The program fills 16 MiB (2 MiB pages) before its checkpoint; each
    // run from the snapshot then maps more, splits, unmaps and forks over
    // it. The reset must bring back those pages and tables as they were.
    let cmd = Command::new(musl("huge_pages")).arg("checkpoint");
    let snap = Sandbox::builder().build().unwrap().snapshot(&cmd, SnapshotPoint::Checkpoint).unwrap();
    let expect = "resumed: sum 2139095040, huge at least 8 MiB\n\
                  changed: sum 935854077 + 793804800, child 0, unmapped faults 1, read-only faults 1\n";
    three_runs_each_print(&snap, expect);
}

/// Three runs from `snap` in a clone mapping its memory, then three in
/// one with a copy of it, each printing `expect`.
fn three_runs_each_print(snap: &Snapshot, expect: &str) {
    for copy in [false, true] {
        snap.copy_memory(copy);
        let mut clone = Sandbox::from_snapshot(snap).unwrap();
        for i in 0..3 {
            let out = clone.run(&Command::resume()).unwrap();
            assert_eq!(out.stdout_str(), expect, "copy {copy}, run {i}: {}", out.stderr_str());
        }
    }
}

#[test]
fn runs_from_a_checkpoint_each_fork_copy_on_write_and_see_the_same() {
    // 40 MiB filled before the checkpoint of a 64 MiB guest; each run from
    // the snapshot forks (copy-on-write: a copy would not fit) and the
    // child, its child and the parent change the memory. The share counts
    // and page tables must come back at each reset: every run prints
    // what the program prints natively.
    let native = std::process::Command::new(musl("cow_fork")).arg("checkpoint").output().unwrap();
    let native = String::from_utf8(native.stdout).unwrap();
    assert!(native.contains("child status 0") && native.contains("grandchild: big"), "{native}");
    let cmd = Command::new(musl("cow_fork")).arg("checkpoint");
    let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(20)).build().unwrap();
    let snap = sb.snapshot(&cmd, SnapshotPoint::Checkpoint).unwrap();
    three_runs_each_print(&snap, &native);
}

#[test]
fn checkpoint_snapshot_resumes_after_the_setup_with_new_inputs() {
    let script = "echo setup-done; x=$(cat /dev/hvsandbox/checkpoint | tr '\\0' ' '); echo \"args: $x\"; cat; echo end";
    let mut sb = Sandbox::builder().build().unwrap();
    // In a normal run the checkpoint reads as empty and the program goes on.
    let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", script]).stdin("plain\n")).unwrap();
    assert_eq!(out.stdout_str(), "setup-done\nargs: \nplain\nend\n");
    let snap = sb.snapshot(&Command::new(BUSYBOX).args(["sh", "-c", script]), SnapshotPoint::Checkpoint).unwrap();
    assert_eq!(snap.point(), SnapshotPoint::Checkpoint);
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    for i in 0..3 {
        let out = clone.run(&Command::resume().args(["a", &format!("b{i}")]).stdin(format!("input {i}\n"))).unwrap();
        // The setup ran once, before the snapshot: its output is not repeated.
        assert_eq!(out.stdout_str(), format!("args: a b{i} \ninput {i}\nend\n"), "{}", out.stderr_str());
    }
    // Input of any size: a small one comes with the run's other inputs, a
    // large one (beyond the resume area) is read from the host as usual;
    // the program's stats count this run only.
    for size in [0usize, 1, 12 << 10, 300 << 10] {
        let input: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let out = clone.run(&Command::resume().stdin(input.clone())).unwrap();
        assert_eq!(out.stdout_str(), format!("args: \n{input}end\n"), "{size} bytes of stdin");
        assert!(out.stats.syscalls < 200, "{size}: {} syscalls", out.stats.syscalls);
    }
    // Each run's environment: /dev/hvsandbox/env (the environment the run
    // was given; in an ordinary run, the program's own).
    let script = "cat /dev/hvsandbox/checkpoint >/dev/null; tr '\\0' '\\n' < /dev/hvsandbox/env | grep '^G='";
    let plain = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", script]).env("G", "0")).unwrap();
    assert_eq!(plain.stdout_str(), "G=0\n", "{}", plain.stderr_str());
    let snap = sb
        .snapshot(&Command::new(BUSYBOX).args(["sh", "-c", script]).env("G", "setup"), SnapshotPoint::Checkpoint)
        .unwrap();
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    for g in ["1", "two words"] {
        let out = clone.run(&Command::resume().env("G", g)).unwrap();
        assert_eq!(out.stdout_str(), format!("G={g}\n"), "{}", out.stderr_str());
    }
    let out = clone.run(&Command::resume()).unwrap();
    assert_eq!((out.stdout_str().as_ref(), out.status.code()), ("", Some(1)), "no G in this run");
    // A program that read its own input to the end before the checkpoint
    // reads each run's input afresh after it.
    let script = "first=$(cat); echo \"first: $first\"; cat /dev/hvsandbox/checkpoint >/dev/null; cat";
    let snap = sb
        .snapshot(&Command::new(BUSYBOX).args(["sh", "-c", script]).stdin("setup\n"), SnapshotPoint::Checkpoint)
        .unwrap();
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    for size in [10, 300 << 10] {
        let input = format!("{}run\n", " ".repeat(size));
        let out = clone.run(&Command::resume().stdin(input.clone())).unwrap();
        assert!(out.stdout_str() == input, "{size}: got {} bytes; {}", out.stdout.len(), out.stderr_str());
    }
    // A program that never reaches its checkpoint cannot be snapshotted there.
    let err = sb.snapshot(&Command::new(musl("hello")), SnapshotPoint::Checkpoint).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{err}");
}

#[test]
fn a_run_sees_nothing_a_previous_run_wrote() {
    let secrets = musl("secrets");
    let snap = entry_snapshot(&secrets, &["scan", "0", "0", "0"]);
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    let mem = (64u64 << 20).to_string();
    for round in 0..3u64 {
        let (k1, k2) = (
            format!("{:016x}", 0x005e_c2e7_0000_0000_u64 + round),
            format!("{:016x}", 0xdead_beef_1234_0000u64 ^ round),
        );
        let out = sb.run(&Command::resume().args(["write", &k1, &k2])).unwrap();
        assert_eq!(out.stdout_str(), "written\n");
        // The same sandbox, next run: scans all guest RAM and the files.
        let out = sb.run(&Command::resume().args(["scan", &k1, &k2, &mem])).unwrap();
        assert_eq!(out.stdout_str(), "hits=0 files=0 env=unset\n", "round {round}");
        // A new clone (it copies the pages runs wrote ahead of its first
        // run) sees nothing either.
        let mut fresh = Sandbox::from_snapshot(&snap).unwrap();
        fresh.warm().unwrap();
        let out = fresh.run(&Command::resume().args(["scan", &k1, &k2, &mem])).unwrap();
        assert_eq!(out.stdout_str(), "hits=0 files=0 env=unset\n", "new clone, round {round}");
    }
    // Control: within one run the scan does find what was written.
    let mut cold = Sandbox::builder().build().unwrap();
    let script = format!("{p} write 1111 2222 >/dev/null; {p} scan 1111 2222 {mem}", p = "/s");
    let out = cold
        .run(&Command::new(BUSYBOX).args(["sh", "-c", &script]).file_with_mode(
            "/s",
            std::fs::read(&secrets).unwrap(),
            0o755,
        ))
        .unwrap();
    let text = out.stdout_str();
    // (/secret is refused: / belongs to root; /tmp/secret is there.)
    assert!(text.contains("files=1"), "{text}");
    assert!(!text.contains("hits=0 "), "the scan must be able to find the secret: {text}");
}

#[test]
fn snapshot_files_round_trip_and_bad_files_are_refused() {
    let snap = entry_snapshot(&musl("args_env"), &[]);
    let dir = std::env::temp_dir().join(format!("hvsandbox-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.snap");
    snap.save(&path).unwrap();
    let loaded = Snapshot::load(&path).unwrap();
    assert_eq!(loaded.point(), SnapshotPoint::Entry);
    assert_eq!(loaded.memory_bytes(), snap.memory_bytes());
    let mut sb = Sandbox::from_snapshot(&loaded).unwrap();
    assert!(sb.run(&Command::resume().arg("loaded")).unwrap().stdout_str().contains("argv[1]=loaded\n"));

    let bytes = std::fs::read(&path).unwrap();
    // Truncated, corrupted, random, empty: all refused with a typed error.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("corrupted", {
            let mut b = bytes.clone();
            b[200] ^= 0x40;
            b
        }),
        ("wrong version", {
            let mut b = bytes.clone();
            b[8] = 99;
            b
        }),
        ("random", (0..100_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ("empty", Vec::new()),
    ];
    for (what, data) in cases {
        let p = dir.join(what);
        std::fs::write(&p, &data).unwrap();
        let err = Snapshot::load(&p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{what}: {err}");
        assert_eq!(Snapshot::from_bytes(&data).unwrap_err().kind(), ErrorKind::SnapshotInvalid, "{what}");
    }
    // A corrupted page: bytes are refused at once; a file's pages are
    // checked where they are read (the load reads only what precedes
    // them), so the first sandbox, mapping or copying, is refused.
    let mut b = bytes.clone();
    let i = b.len() - 100;
    b[i] ^= 0x40;
    let err = Snapshot::from_bytes(&b).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let p = dir.join("bad page");
    std::fs::write(&p, &b).unwrap();
    for copy in [false, true] {
        let loaded = Snapshot::load(&p).unwrap();
        loaded.copy_memory(copy);
        let err = Sandbox::builder()
            .reset_ahead(false)
            .build_from(&loaded)
            .and_then(|mut sb| sb.run(&Command::resume()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "copy {copy}: {err}");
        assert!(err.to_string().contains("checksum mismatch"), "copy {copy}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runs_from_a_snapshot_write_under_their_own_output_limit() {
    // The run that takes the snapshot fills its 3 bytes of stdout (the
    // guest stops sending then); a run from the snapshot has its own limit.
    let script = "echo before; read x < /dev/hvsandbox/checkpoint; echo after";
    let mut sb = Sandbox::builder().max_output(3).build().unwrap();
    let snap = sb.snapshot(&Command::new(BUSYBOX).args(["sh", "-c", script]), SnapshotPoint::Checkpoint).unwrap();
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    let out = clone.run(&Command::resume()).unwrap();
    assert_eq!((out.stdout_str(), out.stdout_truncated), ("after\n".to_string(), false), "{}", out.stderr_str());
}

#[test]
fn snapshots_keep_the_arguments_and_environment_they_were_taken_with() {
    let tmp = TempDir::new("snap-argv");
    let mut sb = Sandbox::builder().env("BASE", "1").build().unwrap();
    let cmd = Command::new(musl("args_env")).args(["a", "b c"]).env("G", "v=w");
    let snap = sb.snapshot(&cmd, SnapshotPoint::Entry).unwrap();
    let path = tmp.0.join("s.snap");
    snap.save(&path).unwrap();
    let loaded = Snapshot::load(&path).unwrap();
    for s in [&snap, &loaded] {
        assert_eq!(s.args().collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(s.env().collect::<Vec<_>>(), [("BASE".as_ref(), "1".as_ref()), ("G".as_ref(), "v=w".as_ref())]);
    }
    // An entry snapshot's runs bring their own argv and environment; given
    // the snapshot's, they run as it was taken.
    let mut clone = Sandbox::from_snapshot(&loaded).unwrap();
    let out = clone.run(&Command::resume()).unwrap();
    assert!(out.stdout_str().starts_with("argc=1\n"), "{}", out.stdout_str());
    let as_taken = loaded.env().fold(Command::resume().args(loaded.args()), |c, (k, v)| c.env(k, v));
    let out = clone.run(&as_taken).unwrap();
    assert!(out.stdout_str().contains("argc=3\n"), "{}", out.stdout_str());
    assert!(out.stdout_str().contains("argv[1]=a\nargv[2]=b c\n"), "{}", out.stdout_str());
    assert!(out.stdout_str().ends_with("env:BASE=1\nenv:G=v=w\n"), "{}", out.stdout_str());
    // The records are checked: an environment string must be NAME=VALUE,
    // no string may hold a NUL.
    let file = std::fs::read(&path).unwrap();
    let at = find_record(&file, b"G=v=w");
    for bad in [&b"Gv"[..], b"G=v\0w", b"=vw"] {
        let err = Snapshot::from_bytes(&with_record(&file, at, 5, bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{bad:?}: {err}");
    }
    let at = find_record(&file, b"b c");
    let err = Snapshot::from_bytes(&with_record(&file, at, 3, b"b\0c")).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert_eq!(Snapshot::from_bytes(&with_record(&file, at, 3, b"b d")).unwrap().args().nth(1).unwrap(), "b d");
}

/// The first length-prefixed record `bytes` in a snapshot file, after the
/// header: its offset.
fn find_record(file: &[u8], bytes: &[u8]) -> usize {
    let mut rec = (bytes.len() as u64).to_le_bytes().to_vec();
    rec.extend_from_slice(bytes);
    96 + file[96..].windows(rec.len()).position(|w| w == rec).expect("record in the snapshot file")
}

/// `file` with the length-prefixed record at `at` (holding `old_len`
/// bytes) replaced by `new`, resealed so that only the decoder's checks
/// can refuse it.
fn with_record(file: &[u8], at: usize, old_len: usize, new: &[u8]) -> Vec<u8> {
    let mut out = file[..at].to_vec();
    out.extend_from_slice(&(new.len() as u64).to_le_bytes());
    out.extend_from_slice(new);
    out.extend_from_slice(&file[at + 8 + old_len..]);
    hvsandbox::reseal_for_fuzzing(&mut out);
    out
}

#[test]
fn snapshot_file_records_are_checked_as_live_lookups_are() {
    // A guest that looked up /m/zq/Q in a mount before its checkpoint: the
    // file records the handles (mount root, "zq" in it, "Q" in that).
    let tmp = TempDir::new("snap-records");
    let mount = tmp.0.join("m");
    std::fs::create_dir_all(mount.join("zq")).unwrap();
    std::fs::write(mount.join("zq/Q"), "inside\n").unwrap();
    std::fs::write(tmp.0.join("Q"), "outside the mount\n").unwrap();
    let mut sb = Sandbox::builder().mount(&mount, "/m").build().unwrap();
    let script = "cat /m/zq/Q; read x < /dev/hvsandbox/checkpoint; cat /m/zq/Q";
    let snap = sb.snapshot(&Command::new(BUSYBOX).args(["sh", "-c", script]), SnapshotPoint::Checkpoint).unwrap();
    let path = tmp.0.join("r.snap");
    snap.save(&path).unwrap();
    let file = std::fs::read(&path).unwrap();
    let dir_at = find_record(&file, b"zq");
    let file_at = find_record(&file, b"Q");
    // Unchanged (resealed): loads, and with its mount given runs.
    let same = with_record(&file, dir_at, 2, b"zq");
    let loaded = Snapshot::from_bytes(&same).unwrap();
    let out = Sandbox::builder().mount(&mount, "/m").build_from(&loaded).unwrap().run(&Command::resume()).unwrap();
    assert_eq!(out.stdout_str(), "inside\n", "{}", out.stderr_str());
    // Names no lookup accepts: each would make the host open a path
    // outside the mount (`..`, a path with `/`, an absolute path).
    let long = vec![b'n'; 256];
    let bad: [&[u8]; 9] = [b"..", b".", b"", b"../Q", b"a/b", b"/etc", b"/", b"a\0b", &long];
    for name in bad {
        for (at, len) in [(dir_at, 2), (file_at, 1)] {
            let data = with_record(&file, at, len, name);
            let err = Snapshot::from_bytes(&data).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{:?}: {err}", String::from_utf8_lossy(name));
        }
    }
    // A record's parent must be an earlier directory handle (not none, a
    // later one or its own), its type a directory, file or symlink. (The
    // record: kind, parent, type, name.)
    for (field, value) in [(16, 0u64), (16, 99), (16, 3), (8, 0o020000), (8, 0o010000), (8, 0)] {
        let mut data = same.clone();
        let at = file_at - field;
        data[at..at + 8].copy_from_slice(&value.to_le_bytes());
        hvsandbox::reseal_for_fuzzing(&mut data);
        let err = Snapshot::from_bytes(&data).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "field -{field} = {value:#o}: {err}");
    }
    // A mount point must be a valid guest path.
    let mount_at = find_record(&file, b"/m");
    for guest in [&b"m"[..], b"/", b"/m/../etc", b"//m"] {
        let err = Snapshot::from_bytes(&with_record(&file, mount_at, 2, guest)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{:?}: {err}", String::from_utf8_lossy(guest));
    }
}

#[test]
fn huge_sparse_and_endless_snapshot_files_are_refused() {
    let tmp = TempDir::new("snap-huge");
    // Endless, and 1 GiB of (sparse) zeros: the header says no.
    let sparse = tmp.0.join("sparse");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    for path in [std::path::Path::new("/dev/zero"), &sparse] {
        let err = Snapshot::load(path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{}: {err}", path.display());
        assert!(err.to_string().contains("not an hvsandbox snapshot file"), "{err}");
    }
    let err = Snapshot::load(&tmp.0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "a directory: {err}");
    // A real header followed by 1 GiB of zeros, and headers that claim
    // more data than any snapshot holds or than the file has.
    let snap = entry_snapshot(&musl("hello"), &[]);
    let path = tmp.0.join("h.snap");
    snap.save(&path).unwrap();
    let file = std::fs::read(&path).unwrap();
    let padded = tmp.0.join("padded");
    std::fs::write(&padded, &file[..96]).unwrap();
    std::fs::OpenOptions::new().write(true).open(&padded).unwrap().set_len(1 << 30).unwrap();
    let err = Snapshot::load(&padded).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "{err}");
    let claims = |len: u64| {
        let mut b = file.clone();
        b[56..64].copy_from_slice(&len.to_le_bytes());
        b
    };
    for len in [u64::MAX, 1 << 40, file.len() as u64] {
        let err = Snapshot::from_bytes(&claims(len)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "payload of {len}: {err}");
        let p = tmp.0.join("claims");
        std::fs::write(&p, claims(len)).unwrap();
        assert_eq!(Snapshot::load(&p).unwrap_err().kind(), ErrorKind::SnapshotInvalid, "payload of {len}");
    }
    // Memory sizes outside the ABI's range or not a multiple of 2 MiB.
    for mem in [0u64, 1 << 50, (64 << 20) + 4096, 8 << 20] {
        let mut b = file.clone();
        b[40..48].copy_from_slice(&mem.to_le_bytes());
        let err = Snapshot::from_bytes(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "memory {mem}: {err}");
    }
    // A record that claims a huge length (the count of argv strings,
    // after the four vCPU state records), resealed past the checksum.
    let mut at = 96;
    for _ in 0..4 {
        at += 8 + u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize;
    }
    for len in [u64::MAX, 1 << 40, 1 << 21] {
        let mut b = file.clone();
        b[at..at + 8].copy_from_slice(&len.to_le_bytes());
        hvsandbox::reseal_for_fuzzing(&mut b);
        let err = Snapshot::from_bytes(&b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SnapshotInvalid, "argv count of {len}: {err}");
    }
    // The file still loads as saved (the checks above refuse only the
    // changes).
    assert_eq!(Snapshot::load(&path).unwrap().memory_bytes(), snap.memory_bytes());
}

#[test]
fn build_from_checks_mounts_and_limits_against_the_snapshot() {
    let tmp = TempDir::new("snap-rule");
    for (dir, text) in [("a", "from a\n"), ("b", "from b\n")] {
        std::fs::create_dir_all(tmp.0.join(dir)).unwrap();
        std::fs::write(tmp.0.join(dir).join("f"), text).unwrap();
    }
    let (a, b) = (tmp.0.join("a"), tmp.0.join("b"));
    let mut sb = Sandbox::builder().memory_mib(32).max_processes(8).mount(&a, "/m").build().unwrap();
    let script = "read x < /dev/hvsandbox/checkpoint; cat /m/f";
    let snap = sb.snapshot(&Command::new(BUSYBOX).args(["sh", "-c", script]), SnapshotPoint::Checkpoint).unwrap();
    let path = tmp.0.join("s.snap");
    snap.save(&path).unwrap();
    let loaded = Snapshot::load(&path).unwrap();
    for s in [&snap, &loaded] {
        assert_eq!((s.memory_bytes(), s.max_processes(), s.max_open_files()), (32 << 20, 8, 1024));
        assert_eq!(s.mounts().collect::<Vec<_>>(), [(a.as_path(), "/m")]);
    }
    let run = |builder: hvsandbox::SandboxBuilder, s: &Snapshot| {
        builder.build_from(s).and_then(|mut sb| sb.run(&Command::resume())).map(|o| o.stdout_str())
    };
    // Taken in this process: its mounts are this process's own choice.
    assert_eq!(run(Sandbox::builder(), &snap).unwrap(), "from a\n");
    // Loaded from a file: the recorded host path is never opened unless
    // the caller gives a directory for the mount point; the caller's
    // directory is the one mounted.
    let err = run(Sandbox::builder(), &loaded).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("/m"), "{err}");
    for s in [&snap, &loaded] {
        assert_eq!(run(Sandbox::builder().mount(&b, "/m"), s).unwrap(), "from b\n");
        // Settings the guest fixed may be given if they agree.
        let same = Sandbox::builder().mount(&a, "/m").memory_mib(32).max_processes(8).max_open_files(1024);
        assert_eq!(run(same, s).unwrap(), "from a\n");
        // Anything else is refused, not silently replaced.
        let refused = [
            Sandbox::builder().mount(&a, "/m").memory_mib(64),
            Sandbox::builder().mount(&a, "/m").max_processes(9),
            Sandbox::builder().mount(&a, "/m").max_open_files(64),
            Sandbox::builder().mount(&a, "/m").mount(&b, "/other"),
            Sandbox::builder().mount(&b, "/other"),
            Sandbox::builder().mount(&a, "/m").mount(&b, "/m"),
        ];
        for builder in refused {
            let err = run(builder.clone(), s).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{builder:?}: {err}");
        }
    }
}

/// A snapshot loaded from a file and copied into each VM reads its pages
/// from the file again; one that maps it, or resets a VM, gets its memory
/// file when a sandbox is built. Saving over the path replaces the file
/// (the loaded snapshot keeps its own). A file changed in place after the
/// load is refused where its pages are read, with a typed error, whichever
/// way.
#[test]
fn a_loaded_snapshot_reads_its_pages_from_its_file_and_refuses_a_changed_one() {
    let snap = entry_snapshot(&musl("args_env"), &[]);
    let dir = TempDir::new("snap-reread");
    let path = dir.0.join("a.snap");
    snap.save(&path).unwrap();
    let runs = |sb: &mut Sandbox, what: &str| {
        for i in 0..3 {
            let out = sb.run(&Command::resume().arg(format!("{what}{i}"))).unwrap();
            assert!(out.stdout_str().contains(&format!("argv[1]={what}{i}\n")), "{what} {i}: {}", out.stdout_str());
        }
    };
    let loaded = Snapshot::load(&path).unwrap();
    // As many pages as the same bytes decoded into a memory file.
    let decoded = Snapshot::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(loaded.resident_bytes(), decoded.resident_bytes());
    loaded.copy_memory(true);
    // Each run a new VM with the pages read from the file.
    runs(&mut Sandbox::builder().reset_ahead(false).build_from(&loaded).unwrap(), "copied");
    // Another snapshot saved to the same path replaces the file, and the
    // loaded one goes on reading its own.
    entry_snapshot(&musl("hello"), &[]).save(&path).unwrap();
    runs(&mut Sandbox::builder().reset_ahead(false).build_from(&loaded).unwrap(), "copied again");
    // Reset after each run: its memory file is made at the build.
    runs(&mut Sandbox::builder().build_from(&loaded).unwrap(), "reset");
    loaded.copy_memory(false);
    runs(&mut Sandbox::from_snapshot(&loaded).unwrap(), "mapped");

    // Change one byte of the last page, after the load. (The sandboxes
    // are built after the change: one built before may have made its VM,
    // and read the pages, ahead on another thread, before the change; its
    // run is then rightly the snapshot's.)
    let changed = Snapshot::load(&path).unwrap();
    changed.copy_memory(true);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let refused = |e: hvsandbox::Error, what: &str| {
        assert_eq!(e.kind(), ErrorKind::SnapshotInvalid, "{what}: {e}");
        assert!(e.to_string().contains("changed since"), "{what}: {e}");
    };
    let copied =
        Sandbox::builder().reset_ahead(false).build_from(&changed).and_then(|mut sb| sb.run(&Command::resume()));
    refused(copied.unwrap_err(), "copied");
    refused(Sandbox::builder().build_from(&changed).unwrap_err(), "reset");
    changed.copy_memory(false);
    refused(Sandbox::from_snapshot(&changed).unwrap_err(), "mapped");
    // Saving through a symlink writes its target in place (the link
    // stays); no part file is left behind by any save.
    let link = dir.0.join("link.snap");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    snap.save(&link).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(Snapshot::load(&path).unwrap().resident_bytes(), decoded.resident_bytes());
    let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The file cut short after the load.
    let bytes = std::fs::read(&path).unwrap();
    let cut = Snapshot::load(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    refused(Sandbox::from_snapshot(&cut).unwrap_err(), "cut");
}

#[test]
fn snapshot_saved_by_one_process_runs_in_another() {
    // Save with the CLI, resume with the CLI: two processes.
    let bin = hvsandbox_tests::hvsandbox_bin();
    let dir = std::env::temp_dir().join(format!("hvsandbox-snap-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sh.snap");
    let script = "read x < /dev/hvsandbox/checkpoint; echo \"after checkpoint: $(cat)\"";
    let out = std::process::Command::new(&bin)
        .args(["snapshot", "-o"])
        .arg(&file)
        .args(["--", BUSYBOX, "sh", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checkpoint"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--from-snapshot"])
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello from stdin").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after checkpoint: hello from stdin\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn python_from_a_checkpoint_after_its_imports() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("no /usr/bin/python3 on this host: skipped");
        return;
    }
    let mut sb =
        Sandbox::builder().mount("/usr", "/usr").mount("/lib", "/lib").mount("/lib64", "/lib64").build().unwrap();
    let prog =
        "import sys, json, re, collections\nopen('/dev/hvsandbox/checkpoint', 'rb').read()\nexec(sys.stdin.read())";
    let snap = sb.snapshot(&Command::new("/usr/bin/python3").args(["-c", prog]), SnapshotPoint::Checkpoint).unwrap();
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    for i in 0..3 {
        let out = clone
            .run(&Command::resume().stdin(format!(
                "c = collections.Counter('abracadabra'); print(json.dumps({{'i': {i}, 'a': c['a']}}), re.sub('b', 'B', 'abc'))"
            )))
            .unwrap();
        assert_eq!(out.stdout_str(), format!("{{\"i\": {i}, \"a\": 5}} aBc\n"), "{}", out.stderr_str());
    }
    // The README's recipe for a checkpoint's arguments and environment.
    let prog = "import os, sys\n\
                args = open('/dev/hvsandbox/checkpoint', 'rb').read().split(b'\\0')[:-1]\n\
                os.environb.update(kv.split(b'=', 1) for kv in open('/dev/hvsandbox/env', 'rb').read().split(b'\\0')[:-1])\n\
                print(args, os.environ.get('WHO'))";
    let snap = sb.snapshot(&Command::new("/usr/bin/python3").args(["-c", prog]), SnapshotPoint::Checkpoint).unwrap();
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    let out = clone.run(&Command::resume().args(["a", "b c"]).env("WHO", "me")).unwrap();
    assert_eq!(out.stdout_str(), "[b'a', b'b c'] me\n", "{}", out.stderr_str());
}

#[test]
fn a_pool_hands_out_warm_sandboxes_and_takes_them_back() {
    use hvsandbox::SandboxPool;
    let snap = entry_snapshot(&musl("args_env"), &[]);
    let pool = std::sync::Arc::new(SandboxPool::new(Sandbox::builder(), &snap, 3).unwrap());
    assert_eq!(pool.size(), 3);
    // The background thread fills it.
    for _ in 0..200 {
        if pool.ready() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pool.ready(), 3);
    // Used from several threads at once.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let mut sb = pool.get().unwrap();
                    let out = sb.run(&Command::resume().arg(format!("t{t}-{i}"))).unwrap();
                    assert!(out.stdout_str().contains(&format!("argv[1]=t{t}-{i}\n")), "{}", out.stdout_str());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(pool.ready() <= 3);
    // Sandboxes that come back are used again: nothing new is made for
    // get/run/return on one thread.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..10 {
        let mut sb = pool.get().unwrap();
        sb.run(&Command::resume().arg(format!("again-{i}"))).unwrap();
        seen.insert(sb.vcpu_thread_id());
    }
    assert!(seen.len() <= 3, "{seen:?}");
    // A lost (poisoned) sandbox is replaced in the background.
    {
        let mut sb = pool.get().unwrap();
        assert!(sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid).is_err());
        assert!(sb.is_poisoned());
    }
    for _ in 0..200 {
        if pool.ready() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pool.ready(), 3);
    // Dropping the pool stops its thread and frees the sandboxes.
    drop(std::sync::Arc::try_unwrap(pool).unwrap());
    // A bad size is refused.
    let err = SandboxPool::new(Sandbox::builder(), &snap, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn the_snapshot_loader_survives_arbitrary_files() {
    // Mutations of a real snapshot file, checked both as they are (the
    // checksum refuses them) and resealed (so the decoder behind the
    // checksum sees them): never a panic, a typed error or a valid
    // snapshot that runs.
    let snap = entry_snapshot(&musl("hello"), &[]);
    let dir = std::env::temp_dir().join(format!("hvsandbox-snapfuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.snap");
    snap.save(&path).unwrap();
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut loaded = 0;
    for case in 0..3000 {
        let mut data = original.clone();
        // Mostly the header and the records before the pages.
        let hot = 96 + 4096;
        for _ in 0..1 + next() % 4 {
            let at = if next() % 4 == 0 { next() as usize % data.len() } else { next() as usize % hot.min(data.len()) };
            match next() % 5 {
                0 => data[at] ^= 1 << (next() % 8),
                1 => data[at] = next() as u8,
                2 => data.truncate(at.max(1)),
                3 => {
                    let v = next().to_le_bytes();
                    let end = (at + 8).min(data.len());
                    data[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => data.extend_from_slice(&next().to_le_bytes()),
            }
            if data.is_empty() {
                break;
            }
        }
        if case % 2 == 1 {
            hvsandbox::reseal_for_fuzzing(&mut data);
        }
        match Snapshot::from_bytes(&data) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::SnapshotInvalid, "case {case}: {e}"),
            Ok(s) => {
                loaded += 1;
                // Whatever it holds, running it is contained.
                if loaded <= 5 {
                    let r = Sandbox::builder()
                        .timeout(Duration::from_secs(2))
                        .build_from(&s)
                        .and_then(|mut sb| sb.run(&Command::resume()));
                    if let Err(e) = r {
                        assert!(
                            !matches!(e.kind(), ErrorKind::Internal | ErrorKind::JailViolation),
                            "case {case}: {e}"
                        );
                    }
                }
            }
        }
    }
    eprintln!("{loaded} of 3000 mutated files still loaded");
}

#[test]
fn page_tables_changed_behind_the_runtime_do_not_outlive_the_run() {
    // A run plants a mapping by writing page-table entries itself; the
    // next run from the same sandbox must not see it (the host notices a
    // changed page-table page and drops KVM's shadow tables).
    let snap = entry_snapshot(&musl("plant"), &["probe"]);
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    assert_eq!(sb.run(&Command::resume().arg("probe")).unwrap().stdout_str(), "unmapped\n");
    for _ in 0..3 {
        let out = sb.run(&Command::resume().arg("plant")).unwrap();
        assert_eq!(out.stdout_str(), "planted 1122334455667788\n", "{}", out.stderr_str());
        assert_eq!(sb.run(&Command::resume().arg("probe")).unwrap().stdout_str(), "unmapped\n");
        // Runs that change no page table keep the shadow tables (fast path).
        assert_eq!(sb.run(&Command::resume().arg("probe")).unwrap().stdout_str(), "unmapped\n");
        // A run that only takes access away (the host keeps the shadow
        // tables then): the next run has the snapshot's mapping whole.
        assert_eq!(sb.run(&Command::resume().arg("narrow")).unwrap().stdout_str(), "narrowed\n");
        assert_eq!(sb.run(&Command::resume().arg("use")).unwrap().stdout_str(), "page 42 43\n");
        // Mappings made the ordinary way (journaled and written back by
        // the runtime before the run ends; or, past the journal's size,
        // found by the host) do not outlive their run either.
        for how in ["map", "churn", "map"] {
            let out = sb.run(&Command::resume().arg(how)).unwrap();
            assert_eq!(out.stdout_str(), "mapped 1122334455667788\n", "{how}: {}", out.stderr_str());
            assert_eq!(sb.run(&Command::resume().arg("probe")).unwrap().stdout_str(), "unmapped\n", "after {how}");
        }
    }
}

#[test]
fn cpu_state_a_run_changed_from_ring_0_does_not_outlive_the_run() {
    // Inside the VM a program can take ring 0 (it can write the IDT through
    // the physmap) and change MSRs and debug registers, which no page of
    // memory holds. The host restores them on reset; a run that did
    // something KVM cannot go on from gets a new VM, not a reset.
    let snap = entry_snapshot(&hostile("ring0"), &["get"]);
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    let clean = sb.run(&Command::resume().arg("get")).unwrap().stdout_str().to_string();
    assert_eq!(clean, "kernel_gs_base=0 cstar=0 sysenter_esp=0\n");
    let clean_dr = sb.run(&Command::resume().arg("get-dr")).unwrap().stdout_str().to_string();
    assert_eq!(clean_dr, "kernel_gs_base=0 cstar=0 sysenter_esp=0 dr0=0\n");
    for round in 0..2 {
        let out = sb.run(&Command::resume().args(["msr", "0x112233445566"])).unwrap();
        assert_eq!(
            out.stdout_str(),
            "kernel_gs_base=0x112233445566 cstar=0x112233445566 sysenter_esp=0x112233445566\n",
            "round {round}: the run itself changes the MSRs"
        );
        assert_eq!(sb.run(&Command::resume().arg("get")).unwrap().stdout_str(), clean, "round {round}");
        let out = sb.run(&Command::resume().args(["dr", "0x1234"])).unwrap();
        assert!(out.stdout_str().ends_with(" dr0=0x1234\n"), "round {round}: {}", out.stdout_str());
        assert_eq!(sb.run(&Command::resume().arg("get-dr")).unwrap().stdout_str(), clean_dr, "round {round}");
    }
    // XCR0: changed (hardware KVM: the next run must not see it) or refused
    // with a crash (this host's PVM cannot emulate xsetbv at CPL0).
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    match sb.run(&Command::resume().arg("xcr0")) {
        Ok(out) => {
            assert!(out.stdout_str().contains(" xcr0="), "{}", out.stdout_str());
            let again = sb.run(&Command::resume().arg("get-xcr0")).unwrap();
            let fresh = Sandbox::from_snapshot(&snap).unwrap().run(&Command::resume().arg("get-xcr0")).unwrap();
            assert_eq!(again.stdout_str(), fresh.stdout_str());
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::GuestCrashed, "{e}"),
    }
}

#[test]
fn msrs_and_paravirtual_features_a_run_armed_do_not_reach_the_next_run() {
    // A ring-0 program arms KVM's steal-time and kvmclock records (and the
    // other paravirtual features) at two pages of its own data, and writes
    // a changed value into every MSR it can. The next run from the same
    // snapshot reads the snapshot's MSR values and finds those pages as the
    // snapshot has them: exactly what a run from a fresh clone sees.
    let snap = entry_snapshot(&hostile("msrs"), &["get"]);
    let fresh = || Sandbox::from_snapshot(&snap).unwrap().run(&Command::resume().arg("get")).unwrap();
    let clean = fresh().stdout_str().to_string();
    assert!(clean.contains(" intact=1,1 tsc_offset_unchanged=1\n"), "{clean}");
    assert_eq!(clean, fresh().stdout_str(), "two fresh clones see the same state");
    let pages = clean.lines().next().unwrap().split(' ').next().unwrap().to_string();
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    // Three ranges, one run each: on PVM hosts the hypervisor's own MSRs
    // (0x4b564dxx, which the host cannot write back) and the rest together
    // end the run with a triple fault. A run that armed state the host
    // cannot restore ends with the VM: the next run gets a new one.
    let ranges = [("0", "0x4b564d00"), ("0x4b564d00", "0x4b564e00"), ("0x4b564e00", "0x100000000")];
    for round in 0..1 {
        for (lo, hi) in ranges {
            let dirty = sb.run(&Command::resume().args(["dirty", lo, hi])).unwrap();
            let text = dirty.stdout_str();
            assert!(text.starts_with(&format!("{pages}\n")), "round {round}: the same pages: {text}");
            // Where KVM can enforce the hidden paravirtual CPUID, arming
            // fails; elsewhere it succeeds and the reset must disarm it.
            for feature in ["steal_time", "system_time_new"] {
                assert!(
                    text.contains(&format!("{feature}=refused\n")) || text.contains(&format!("{feature}=armed\n")),
                    "{text}"
                );
            }
            let changed = text.lines().find_map(|l| l.strip_prefix("changed:")).unwrap_or_else(|| panic!("{text}"));
            if lo == "0" {
                assert!(text.ends_with("tsc=written\n") || text.ends_with("tsc=refused\n"), "{text}");
                // The run really changed MSR state (SYSENTER_CS takes any
                // value, the MTRRs too).
                for msr in ["0x174", "0x2ff"] {
                    assert!(changed.split(' ').any(|m| m == msr), "round {round}: {msr} not changed: {text}");
                }
            }
            let after = sb.run(&Command::resume().arg("get")).unwrap();
            assert_eq!(after.stdout_str(), clean, "round {round}, {lo}..{hi}: after {text}");
        }
    }
}

#[test]
fn try_get_takes_a_ready_pooled_sandbox_and_never_makes_one() {
    let mut sb = Sandbox::builder().build().unwrap();
    let snap = sb.snapshot(&Command::new(BUSYBOX).arg("true"), SnapshotPoint::Entry).unwrap();
    let pool = hvsandbox::SandboxPool::new(Sandbox::builder(), &snap, 1).unwrap();
    let mut first = pool.try_get().expect("the pool's first sandbox is made before new returns");
    // The only one is on loan: nothing is made on the caller's thread.
    assert!(pool.try_get().is_none());
    assert_eq!(first.run(&Command::resume().arg("true")).unwrap().status.code(), Some(0));
    drop(first);
    // Back in the pool, ready again.
    let mut again = pool.try_get().expect("a returned sandbox is ready");
    assert_eq!(again.run(&Command::resume().arg("true")).unwrap().status.code(), Some(0));
}
