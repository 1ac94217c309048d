//! Fuzzing of the host's side of the VM boundary, end to end: proptest
//! makes scripts of raw hypercalls and memory pokes that the `hc_fuzz`
//! guest program runs at CPL3 (it fills the hypercall block and rings the
//! doorbell itself). Arguments point into and around RAM, the physmap,
//! the hypercall block itself, the doorbell and non-canonical space, with
//! lengths at and past every cap. Every run must end (its timeout bounds
//! it) in a typed result, with output and collected files within their caps,
//! and the next run (same sandbox unless poisoned, and a new one) works.
//!
//! The pure decoders of guest data are fuzzed without KVM by the property
//! tests in `sandbox/src/fs_check.rs`, and for longer by cargo-fuzz
//! (`fuzz/`).
//!
//! Cases: `PROPTEST_CASES` overrides each property's default.

use std::mem::offset_of;
use std::path::PathBuf;
use std::time::Duration;

use hvsandbox::{Command, ErrorKind, Output, Sandbox};
use hvsandbox_abi as abi;
use hvsandbox_tests::musl;
use proptest::prelude::*;

const MEMORY: u64 = 32 << 20;
const TIMEOUT: Duration = Duration::from_millis(400);
const MAX_OUTPUT: usize = 3000;
const MAX_COLLECT_BYTES: u64 = 5000;
const MAX_COLLECT_FILES: usize = 3;
/// `scratch` in hc_fuzz.c, and what the script puts at its start.
const SCRATCH_SIZE: u64 = 65536;
const NAMES: [(&str, u64); 8] = [
    ("hello.txt", 0),
    ("sub", 16),
    ("inner.txt", 32),
    ("link", 48),
    ("/out/a", 64),
    ("/out/b/c.txt", 80),
    ("/elsewhere", 96),
    ("..", 112),
];
const STAT_AT: u64 = 512;
const DATA_AT: u64 = 1024;
/// Where FS_LOOKUP/FS_STAT write a stat record (its size).
const STAT_LEN: u64 = 40;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, max_shrink_iters: 200, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------

/// A hypercall argument: a number, or an offset in the program's scratch
/// buffer (the guest adds the buffer's address).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    Val(u64),
    Scratch(u64),
}

impl std::fmt::Debug for Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arg::Val(v) => write!(f, "{v:#x}"),
            Arg::Scratch(o) => write!(f, "scratch+{o:#x}"),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Fill the block, store `nr` to the doorbell with a `width`-byte store.
    Hc {
        nr: u64,
        args: [Arg; 6],
        width: u8,
    },
    /// A store anywhere.
    Poke {
        addr: Arg,
        value: u64,
        width: u8,
    },
    /// A store at `offset` into the output buffers the runtime publishes.
    PokeOutBuffers {
        offset: u64,
        value: u64,
    },
    Spin,
    ReadDoorbell,
    /// write(2) through the runtime (fills its output buffer).
    Write {
        fd: u64,
        offset: u64,
        len: u64,
    },
    Exit(u8),
}

fn encode(steps: &[Step]) -> Vec<u8> {
    let mut pre = vec![0u8; DATA_AT as usize + 4096];
    for (name, at) in NAMES {
        pre[at as usize..at as usize + name.len()].copy_from_slice(name.as_bytes());
    }
    for (i, b) in pre[DATA_AT as usize..].iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    let mut out = (pre.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&pre);
    for s in steps {
        let mut reloc = 0u8;
        let mut b = [0u64; 6];
        let (a, width) = match *s {
            Step::Hc { nr, args, width } => {
                for (i, arg) in args.iter().enumerate() {
                    b[i] = match *arg {
                        Arg::Val(v) => v,
                        Arg::Scratch(o) => {
                            reloc |= 1 << i;
                            o
                        }
                    };
                }
                (nr, width)
            }
            Step::Poke { addr, value, width } => {
                b[0] = value;
                match addr {
                    Arg::Val(v) => (v, width),
                    Arg::Scratch(o) => {
                        reloc |= 64;
                        (o, width)
                    }
                }
            }
            Step::PokeOutBuffers { offset, value } => {
                b[0] = value;
                b[1] = abi::phys_to_virt(abi::STATS_GPA + offset_of!(abi::RuntimeStats, out_buffers_gpa) as u64);
                b[2] = abi::PHYS_BASE;
                (offset, 8)
            }
            Step::Spin | Step::ReadDoorbell => (0, 8),
            Step::Write { fd, offset, len } => {
                b[0] = len;
                b[1] = fd;
                (offset, 8)
            }
            Step::Exit(code) => (u64::from(code), 8),
        };
        out.extend_from_slice(&[op_code(s), reloc, width, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&a.to_le_bytes());
        for v in b {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn op_code(s: &Step) -> u8 {
    match s {
        Step::Hc { .. } => 0,
        Step::Poke { .. } => 1,
        Step::Spin => 2,
        Step::ReadDoorbell => 3,
        Step::Write { .. } => 4,
        Step::Exit(_) => 5,
        Step::PokeOutBuffers { .. } => 6,
    }
}

fn gpa() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..MEMORY,
        (0..64u64).prop_map(|k| MEMORY - k),
        (0..64u64).prop_map(|k| MEMORY + k),
        (0..0x2000u64).prop_map(|k| abi::STATS_GPA + k),
        (0..0x1000u64).prop_map(|k| abi::BOOT_INFO_GPA + k),
        (0..0x1000u64).prop_map(|k| abi::RUNTIME_GPA + k),
        (0..0x1_0000u64),
        (0..0x2000u64).prop_map(|k| abi::ARGS_GPA + abi::ARGS_MAX - k),
    ]
}

/// Addresses in and around everything the guest can name.
fn addr() -> impl Strategy<Value = Arg> {
    prop_oneof![
        6 => (0..SCRATCH_SIZE + 64).prop_map(Arg::Scratch),
        1 => (0..16u64).prop_map(|k| Arg::Scratch(SCRATCH_SIZE - k)),
        4 => gpa().prop_map(|g| Arg::Val(abi::phys_to_virt(g))),
        1 => (0..64u64).prop_map(|k| Arg::Val(abi::DOORBELL_VA + k)),
        2 => (0..64u64).prop_map(|k| Arg::Val(abi::phys_to_virt(abi::HCALL_GPA) + k)),
        1 => (0..4096u64).prop_map(|k| Arg::Val(abi::PHYS_BASE - k)),
        1 => (0..4096u64).prop_map(|k| Arg::Val(abi::user::STACK_TOP - k)),
        1 => (0..0x20_0000u64).prop_map(|k| Arg::Val(0x40_0000 + k)),
        1 => (0..16u64).prop_map(|k| Arg::Val(0x8000_0000_0000 - 8 + k)),
        1 => (0..16u64).prop_map(|k| Arg::Val(0xffff_8000_0000_0000 + k)),
        1 => (0..16u64).prop_map(|k| Arg::Val(u64::MAX - k)),
        1 => any::<u64>().prop_map(Arg::Val),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..300u64,
        1 => (0..16u64).prop_map(|k| 4096 - 8 + k),
        1 => (0..3u64).prop_map(|k| abi::HCALL_MAX_LEN - 1 + k),
        1 => (0..16u64).prop_map(|k| u64::MAX - k),
        1 => Just(1u64 << 63),
        1 => (0..16u64).prop_map(|k| (1u64 << 32) - 8 + k),
        1 => any::<u64>(),
    ]
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![3 => addr(), 3 => len().prop_map(Arg::Val), 2 => (0..20u64).prop_map(Arg::Val)]
}

fn scratch_name() -> impl Strategy<Value = (Arg, Arg)> {
    (0..NAMES.len(), 0..3u64).prop_map(|(i, d)| {
        let (name, at) = NAMES[i];
        // Mostly the exact length; sometimes one short or one over.
        (Arg::Scratch(at), Arg::Val((name.len() as u64 + d).saturating_sub(1).max(if d == 1 { 1 } else { 0 })))
    })
}

fn small() -> impl Strategy<Value = Arg> {
    (0..8u64).prop_map(Arg::Val)
}

/// Arguments a well-meaning caller would pass for `nr`.
fn template(nr: u64) -> BoxedStrategy<[Arg; 6]> {
    use abi::hc;
    let z = Arg::Val(0);
    // Mostly the data area; sometimes over the names and the stat record
    // (ranges that overlap the call's other buffers).
    let buf =
        prop_oneof![4 => (0..2048u64).prop_map(|k| Arg::Scratch(DATA_AT + k)), 1 => (0..600u64).prop_map(Arg::Scratch)];
    let blen = prop_oneof![0..600u64, 0..3000u64].prop_map(Arg::Val);
    match nr {
        hc::FS_LOOKUP => (small(), scratch_name(), (0..2u64).prop_map(|k| Arg::Scratch(STAT_AT + k)))
            .prop_map(move |(d, (n, l), st)| [d, n, l, st, z, z])
            .boxed(),
        hc::FS_READ => (small(), prop_oneof![0..20u64, (0..16u64).prop_map(|k| u64::MAX - k)], buf, blen)
            .prop_map(move |(h, off, b, l)| [h, Arg::Val(off), b, l, z, z])
            .boxed(),
        hc::FS_READDIR => {
            (small(), 0..10u64, buf, blen).prop_map(move |(h, i, b, l)| [h, Arg::Val(i), b, l, z, z]).boxed()
        }
        hc::FS_READLINK => (small(), buf, blen).prop_map(move |(h, b, l)| [h, b, l, z, z, z]).boxed(),
        hc::FS_STAT => small().prop_map(move |h| [h, Arg::Scratch(STAT_AT), z, z, z, z]).boxed(),
        hc::FILE_OUT => (
            scratch_name(),
            buf,
            prop_oneof![4 => 0..3000u64, 1 => 0..3u64, 1 => Just(abi::HCALL_MAX_LEN)],
            // Offsets in the file, or where offset + length (+ the path's
            // length, which the host counts) crosses 2^64.
            prop_oneof![3 => (0..6000u64).prop_map(Ok), 2 => (0..24u64).prop_map(Err), 1 => any::<u64>().prop_map(Ok)],
        )
            .prop_map(move |((p, pl), d, dl, off)| {
                let off = off.unwrap_or_else(|k| (u64::MAX - dl).wrapping_sub(k));
                [p, pl, d, Arg::Val(dl), Arg::Val(off), Arg::Val(0o644)]
            })
            .boxed(),
        hc::WRITE | hc::READ => {
            ((1..3u64), buf, blen).prop_map(move |(fd, b, l)| [Arg::Val(fd), b, l, z, z, z]).boxed()
        }
        hc::SLEEP => (0..2_000_000u64).prop_map(move |ns| [Arg::Val(ns), z, z, z, z, z]).boxed(),
        _ => prop::array::uniform6(arg()).boxed(),
    }
}

fn nr() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => abi::hc::FS_LOOKUP..=abi::hc::FILE_OUT,
        3 => prop_oneof![Just(abi::hc::WRITE), Just(abi::hc::READ), Just(abi::hc::LOG)],
        1 => prop_oneof![Just(abi::hc::SLEEP), Just(abi::hc::FAULT)],
        1 => prop_oneof![
            Just(abi::hc::EXIT),
            Just(abi::hc::PANIC),
            Just(abi::hc::PROGRAM_FAULT),
            Just(abi::hc::EXEC_FAILED)
        ],
        1 => prop_oneof![Just(0u64), 16..64u64, any::<u64>()],
    ]
}

fn hypercall() -> impl Strategy<Value = Step> {
    let width = prop_oneof![100 => Just(8u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(4u8)];
    (nr(), width, prop::array::uniform6(prop::option::weighted(0.1, arg())), 0..4).prop_flat_map(
        |(nr, width, overrides, random)| {
            let base = if random == 0 { prop::array::uniform6(arg()).boxed() } else { template(nr) };
            base.prop_map(move |mut args| {
                for (a, o) in args.iter_mut().zip(overrides) {
                    if let Some(o) = o {
                        *a = o;
                    }
                }
                Step::Hc { nr, args, width }
            })
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    let width = prop_oneof![Just(1u8), Just(2u8), Just(4u8), Just(8u8)];
    prop_oneof![
        40 => hypercall(),
        3 => (addr(), any::<u64>(), width).prop_map(|(addr, value, width)| Step::Poke { addr, value, width }),
        2 => (1..3u64, 0..SCRATCH_SIZE, 0..5000u64).prop_map(|(fd, offset, len)| Step::Write { fd, offset, len }),
        1 => Just(Step::ReadDoorbell),
        1 => any::<u8>().prop_map(Step::Exit),
    ]
}

// ---------------------------------------------------------------------
// Runs and their checks
// ---------------------------------------------------------------------

/// A small host tree for the mount, removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new() -> Tree {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hvsandbox-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("hello.txt"), "hello, world").unwrap();
        std::fs::write(dir.join("sub/inner.txt"), "inner").unwrap();
        std::os::unix::fs::symlink("../..", dir.join("link")).unwrap();
        Tree(dir)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fuzz_sandbox(tree: &Tree, timeout: Duration) -> Sandbox {
    Sandbox::builder()
        .memory_bytes(MEMORY)
        .timeout(timeout)
        .max_output(MAX_OUTPUT)
        .max_collect_bytes(MAX_COLLECT_BYTES)
        .max_collect_files(MAX_COLLECT_FILES)
        .mount(&tree.0, "/mnt")
        .file("/data/blob", "blob bytes")
        .build()
        .expect("build sandbox")
}

fn command(steps: &[Step]) -> Command {
    Command::new(musl("hc_fuzz"))
        .args([format!("{:x}", abi::phys_to_virt(abi::HCALL_GPA)), format!("{:x}", abi::DOORBELL_VA)])
        .stdin(encode(steps))
        .collect("/out")
}

/// Whether the error is one a hostile guest may cause: it ends its own
/// run, never the host's (no internal error, jail violation or poisoning
/// of a fresh sandbox).
fn guest_caused(kind: ErrorKind) -> bool {
    !matches!(
        kind,
        ErrorKind::Internal
            | ErrorKind::JailViolation
            | ErrorKind::SandboxPoisoned
            | ErrorKind::KvmUnavailable
            | ErrorKind::InvalidConfig
    )
}

/// The (buffer, length) argument pairs of the calls whose results the
/// test checks: (index of the buffer, index of the length or a fixed one).
fn buffers(nr: u64) -> Option<&'static [(usize, Result<usize, u64>)]> {
    use abi::hc;
    Some(match nr {
        hc::FS_LOOKUP => &[(1, Ok(2)), (3, Err(STAT_LEN))],
        hc::FS_READ | hc::FS_READDIR => &[(2, Ok(3))],
        hc::FS_READLINK => &[(1, Ok(2))],
        hc::FS_STAT => &[(1, Err(STAT_LEN))],
        hc::FILE_OUT => &[(0, Ok(1)), (2, Ok(3))],
        hc::WRITE | hc::READ => &[(1, Ok(2))],
        hc::LOG => &[],
        _ => return None,
    })
}

/// A script whose hypercalls only touch the scratch buffer (so the
/// program's own memory, where it keeps the results, stays intact).
fn benign(steps: &[Step]) -> bool {
    steps.iter().all(|s| match s {
        Step::Hc { nr, args, width: 8 } => buffers(*nr).is_some_and(|bufs| {
            bufs.iter().all(|&(b, l)| {
                let len = match l {
                    Ok(i) => match args[i] {
                        Arg::Val(v) => v.min(abi::HCALL_MAX_LEN + 1),
                        Arg::Scratch(_) => return false,
                    },
                    Err(fixed) => fixed,
                };
                match args[b] {
                    Arg::Scratch(o) => o + len <= SCRATCH_SIZE,
                    Arg::Val(_) => len == 0 || len > abi::HCALL_MAX_LEN,
                }
            })
        }),
        _ => false,
    })
}

/// Checks one run's result; returns whether it poisoned the sandbox.
fn check(result: &hvsandbox::Result<Output>, steps: &[Step]) -> bool {
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            assert!(guest_caused(e.kind()), "a guest caused {:?}: {e}", e.kind());
            if let Some(p) = e.partial_output() {
                assert!(p.stdout.len() <= MAX_OUTPUT && p.stderr.len() <= MAX_OUTPUT, "partial output over the cap");
            }
            return e.poisons();
        }
    };
    assert!(out.stdout.len() <= MAX_OUTPUT && out.stderr.len() <= MAX_OUTPUT);
    assert!(out.files.len() <= MAX_COLLECT_FILES, "{:?}", out.files.keys());
    let total: usize = out.files.iter().map(|(p, f)| p.len() + f.len()).sum();
    assert!(total as u64 <= MAX_COLLECT_BYTES, "collected {total} bytes");
    for p in out.files.keys() {
        assert!(p.starts_with("/out/"), "collected {p:?}, outside /out");
    }
    assert!(out.stats.unknown_syscalls.keys().all(|&nr| (nr as usize) < abi::UNKNOWN_SLOTS));
    if out.status.code() == Some(0) && !out.stdout_truncated && benign(steps) {
        check_results(&out.stdout_str(), steps);
    }
    false
}

/// The results hc_fuzz printed: each fs call answered within its bounds or
/// with -errno.
fn check_results(stdout: &str, steps: &[Step]) {
    use abi::hc;
    let calls: Vec<(u64, &[Arg; 6])> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Hc { nr, args, .. } => Some((*nr, args)),
            _ => None,
        })
        .collect();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), calls.len(), "{stdout}");
    for (line, (nr, args)) in lines.iter().zip(calls) {
        let mut it = line.split(' ');
        assert_eq!(it.next().and_then(|v| v.parse::<u64>().ok()), Some(nr), "{line}");
        let ret: i64 = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        let what = format!("hypercall {nr} {args:?} -> {ret}");
        let val = |i: usize| match args[i] {
            Arg::Val(v) => v,
            Arg::Scratch(_) => unreachable!(),
        };
        if (hc::FS_LOOKUP..=hc::FILE_OUT).contains(&nr) {
            assert!(ret >= -4095, "{what}");
        }
        match nr {
            hc::FS_LOOKUP => assert!(ret < 0 || (1..=65536).contains(&ret), "{what}"),
            hc::FS_READ | hc::FS_READDIR => assert!(ret < 0 || ret as u64 <= val(3), "{what}"),
            hc::FS_READLINK => assert!(ret < 0 || ret as u64 <= val(2), "{what}"),
            hc::FS_STAT => assert!(ret == 0 || ret == -(libc::EBADF as i64), "{what}"),
            hc::FILE_OUT => assert!(ret <= 0, "{what}"),
            hc::WRITE => assert!(ret == 0 || ret == abi::WRITE_STREAM_FULL as i64, "{what}"),
            hc::READ => assert_eq!(ret, 0, "{what}: stdin was read to its end"),
            _ => {}
        }
    }
}

/// After any run: the same sandbox runs again unless poisoned (then it
/// says so), and a new sandbox works.
fn check_next_runs(tree: &Tree, sb: &mut Sandbox, poisoned: bool) {
    let hello = [Step::Exit(7)];
    match sb.run(&command(&hello)) {
        Ok(out) => assert!(!poisoned && out.status.code() == Some(7), "{out:?}"),
        Err(e) => assert!(poisoned && e.kind() == ErrorKind::SandboxPoisoned, "{e}"),
    }
    let out = fuzz_sandbox(tree, Duration::from_secs(10)).run(&command(&hello)).expect("a new sandbox runs");
    assert_eq!(out.status.code(), Some(7));
}

fn run_case(tree: &Tree, steps: &[Step], timeout: Duration) -> hvsandbox::Result<Output> {
    let mut sb = fuzz_sandbox(tree, timeout);
    let result = sb.run(&command(steps));
    let poisoned = check(&result, steps);
    check_next_runs(tree, &mut sb, poisoned);
    result
}

proptest! {
    #![proptest_config(config(200))]

    /// Raw hypercalls with arbitrary numbers and arguments.
    #[test]
    fn raw_hypercalls_end_in_a_typed_result(steps in prop::collection::vec(step(), 1..24)) {
        let tree = Tree::new();
        run_case(&tree, &steps, TIMEOUT).ok();
    }
}

proptest! {
    #![proptest_config(config(100))]

    /// File service calls with buffers in the scratch area only, so the
    /// program can report every result: each within its bounds or -errno.
    #[test]
    fn fs_hypercalls_answer_within_bounds(calls in prop::collection::vec(
        (abi::hc::FS_LOOKUP..=abi::hc::FILE_OUT).prop_flat_map(|nr| template(nr).prop_map(move |args| Step::Hc { nr, args, width: 8 })),
        1..40,
    )) {
        let tree = Tree::new();
        let benign = benign(&calls);
        let out = run_case(&tree, &calls, Duration::from_secs(10));
        if benign {
            let out = out.expect("a benign script runs to its end");
            prop_assert_eq!(out.status.code(), Some(0));
        }
    }
}

/// A poke of a stats field or of the output buffers it points to.
fn stats_poke() -> impl Strategy<Value = Step> {
    let stats_field = prop_oneof![
        4 => Just(offset_of!(abi::RuntimeStats, out_buffers_gpa) as u64),
        1 => (0..8u64).prop_map(|i| i * 8),
        1 => (0..abi::UNKNOWN_SLOTS as u64).prop_map(|i| offset_of!(abi::RuntimeStats, unknown_by_nr) as u64 + 4 * i),
    ];
    let stride = std::mem::size_of::<abi::OutBuffer>() as u64;
    let where_to = prop_oneof![
        3 => (0..64u64).prop_map(|k| MEMORY - k),
        1 => (0..16u64).prop_map(move |k| MEMORY - stride - k),
        1 => (0..16u64).prop_map(move |k| MEMORY - 2 * stride + k),
        1 => Just(abi::STATS_GPA),
        1 => Just(abi::HCALL_GPA),
        1 => Just(0u64),
        1 => (0..16u64).prop_map(|k| u64::MAX - k),
        1 => (0..16u64).prop_map(move |k| u64::MAX - stride - k),
        1 => any::<u64>(),
    ];
    let buffer_field = prop_oneof![Just(0u64), Just(8u64), Just(stride), Just(stride + 8), (0..2 * stride),];
    let length = prop_oneof![
        Just(0u64),
        Just(1u64),
        (0..4u64).prop_map(|k| abi::OUT_BUF_SIZE as u64 - 1 + k),
        (0..16u64).prop_map(|k| u64::MAX - k),
        any::<u64>(),
    ];
    prop_oneof![
        3 => (stats_field, where_to).prop_map(|(f, v)| Step::Poke {
            addr: Arg::Val(abi::phys_to_virt(abi::STATS_GPA + f)),
            value: v,
            width: 8,
        }),
        2 => (buffer_field, length).prop_map(|(offset, value)| Step::PokeOutBuffers { offset, value }),
    ]
}

proptest! {
    #![proptest_config(config(40))]

    /// The guest scribbles its stats page (the output buffers' address,
    /// counters) and the output buffers' lengths, then is stopped by the
    /// timeout or exits: the host reads them without panicking and keeps
    /// the (partial) output within max_output.
    #[test]
    fn scribbled_runtime_stats_are_read_safely(
        writes in prop::collection::vec((1..3u64, 0..SCRATCH_SIZE, 0..20_000u64), 0..4),
        pokes in prop::collection::vec(stats_poke(), 1..6),
        end in prop_oneof![3 => Just(None), 1 => any::<u8>().prop_map(Some)],
    ) {
        let tree = Tree::new();
        let mut steps: Vec<Step> =
            writes.into_iter().map(|(fd, offset, len)| Step::Write { fd, offset, len }).collect();
        steps.extend(pokes);
        steps.push(end.map_or(Step::Spin, Step::Exit));
        let timeout = Duration::from_millis(150);
        let result = run_case(&tree, &steps, timeout);
        if end.is_none() {
            // Spinning ends in the timeout, or earlier if a poke faulted
            // or broke the runtime's own output buffer (GuestCrashed).
            prop_assert!(
                result.as_ref().map_or_else(
                    |e| matches!(e.kind(), ErrorKind::Timeout | ErrorKind::GuestCrashed),
                    |o| o.status.signal().is_some()
                ),
                "{result:?}"
            );
        }
    }
}

/// Seeds that once found bugs, kept as plain tests.
#[test]
fn file_out_at_the_top_of_the_offsets_is_refused() {
    let tree = Tree::new();
    // /out/a: offset + length + path length wrapped past 2^64 and the host
    // tried to allocate the file (a panic on the vCPU thread).
    let steps = [Step::Hc {
        nr: abi::hc::FILE_OUT,
        args: [
            Arg::Scratch(64),
            Arg::Val(6),
            Arg::Scratch(DATA_AT),
            Arg::Val(1),
            Arg::Val(u64::MAX - 4),
            Arg::Val(0o644),
        ],
        width: 8,
    }];
    let out = run_case(&tree, &steps, Duration::from_secs(10)).expect("the run ends normally");
    assert_eq!(out.stdout_str(), format!("{} {}\n", abi::hc::FILE_OUT, -libc::ENOSPC));
}
