//! Shared setup of the integration tests and benchmarks: builds the guest
//! test programs in `tests/guest-programs/` from source, once per source
//! content, with the toolchains a fresh machine gets from
//! `scripts/install-deps.sh` (musl-gcc) and the Rust toolchain itself.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hvsandbox::Sandbox;

/// Debian's static glibc busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// How a guest program is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `musl-gcc -static` (non-PIE).
    MuslStatic,
    /// `musl-gcc -static-pie`.
    MuslStaticPie,
    /// `rustc -C target-feature=+crt-static` (glibc, static-PIE).
    RustStatic,
    /// `gcc` (glibc, dynamic: it needs the host's /lib and /usr, as
    /// `SandboxBuilder::host_system` mounts them).
    GlibcDynamic,
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-programs")
}

/// `target/<profile>/guest-programs`, next to the test binaries.
fn build_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test binary>
        let profile_dir = exe.parent().and_then(Path::parent).expect("test binary in target/<profile>/deps");
        let dir = profile_dir.join("guest-programs");
        std::fs::create_dir_all(&dir).expect("create guest-programs build dir");
        dir
    })
    .clone()
}

/// Builds (once per source content) and returns the path of guest program
/// `name`: `tests/guest-programs/<name>.c` for the musl flavours,
/// `<name>.rs` for Rust.
pub fn program(name: &str, flavor: Flavor) -> PathBuf {
    build(&source_dir(), name, name, flavor)
}

/// Builds (once per source content) and returns the path of the hostile
/// guest program `tests/hostile/<name>.c`, musl static (non-PIE).
pub fn hostile(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile");
    build(&dir, name, &format!("hostile-{name}"), Flavor::MuslStatic)
}

/// Builds `dir/<name>.{c,rs}` into `build_dir()/<stem>-<flavor>-<hash>`.
fn build(dir: &Path, name: &str, stem: &str, flavor: Flavor) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let ext = if flavor == Flavor::RustStatic { "rs" } else { "c" };
    let src = dir.join(format!("{name}.{ext}"));
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    // A C program may include another from its directory (`#include
    // "x.c"`): its text is part of the key too.
    for line in String::from_utf8_lossy(&text).lines() {
        if let Some(inc) = line.strip_prefix("#include \"").and_then(|r| r.split('"').next()) {
            std::fs::read(dir.join(inc)).unwrap_or_default().hash(&mut h);
        }
    }
    flavor.hash(&mut h);
    // Bump when a build recipe below changes, to rebuild cached outputs.
    const RECIPE_VERSION: u32 = 2;
    RECIPE_VERSION.hash(&mut h);
    let out = build_dir().join(format!("{stem}-{flavor:?}-{:016x}", h.finish()));

    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if out.exists() {
        return out;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = match flavor {
        Flavor::MuslStatic => {
            let mut c = Command::new("musl-gcc");
            c.args(["-static", "-O2", "-o"]).arg(&tmp).arg(&src);
            c
        }
        Flavor::MuslStaticPie => {
            // Debian's musl-gcc wrapper links -static-pie against libc.so,
            // so link by hand: musl's self-relocating rcrt1.o and libc.a.
            let musl = Path::new("/usr/lib/x86_64-linux-musl");
            let mut c = Command::new("gcc");
            c.args(["-O2", "-fPIE", "-static-pie", "-nostdlib", "-nostartfiles", "-nostdinc"])
                .args(["-isystem", "/usr/include/x86_64-linux-musl", "-o"])
                .arg(&tmp)
                .arg(musl.join("rcrt1.o"))
                .arg(musl.join("crti.o"))
                .arg(&src)
                .arg(musl.join("libc.a"))
                .arg("-lgcc")
                .arg(musl.join("crtn.o"));
            c
        }
        Flavor::GlibcDynamic => {
            let mut c = Command::new("gcc");
            c.args(["-O2", "-o"]).arg(&tmp).arg(&src);
            c
        }
        Flavor::RustStatic => {
            let mut c = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
            c.args(["-C", "target-feature=+crt-static", "-C", "opt-level=2", "--edition", "2021", "-o"])
                .arg(&tmp)
                .arg(&src);
            c
        }
    };
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run the compiler for {name} ({e}); run ./scripts/install-deps.sh to install musl-tools")
    });
    assert!(status.success(), "building guest program {} failed: {status}", src.display());
    std::fs::rename(&tmp, &out).expect("rename built guest program");
    out
}

/// A musl static (non-PIE) guest program.
pub fn musl(name: &str) -> PathBuf {
    program(name, Flavor::MuslStatic)
}

/// A number of the `hvsandbox run --stats` JSON line (panics if absent).
pub fn stat(line: &str, name: &str) -> u64 {
    line.split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// The KiB of free memory a guest program's leak check lost, from its
/// one line `leak: N KiB` (panics on anything else).
pub fn leak_kib(out: &hvsandbox::Output) -> i64 {
    out.stdout_str()
        .strip_prefix("leak: ")
        .and_then(|s| s.trim().strip_suffix(" KiB"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {:?} (stderr {:?})", out.stdout_str(), out.stderr_str()))
}

/// A glibc dynamic guest program (run it with the host system mounted).
pub fn glibc(name: &str) -> PathBuf {
    program(name, Flavor::GlibcDynamic)
}

/// A sandbox whose runs start from an entry snapshot of `cmd` (taken in a
/// 64 MiB sandbox of its own): each run resumes with `Command::resume()`.
pub fn from_entry_snapshot(cmd: &hvsandbox::Command) -> Sandbox {
    let mut sb = Sandbox::builder().memory_mib(64).build().expect("build sandbox");
    let snap = sb.snapshot(cmd, hvsandbox::SnapshotPoint::Entry).expect("entry snapshot");
    Sandbox::from_snapshot(&snap).expect("sandbox from the snapshot")
}

/// A sandbox with the defaults the tests use: 64 MiB, a 10 s timeout.
pub fn sandbox() -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(10)).build().expect("build sandbox")
}

/// Runs guest program `name` (musl, static) natively, checks its output
/// holds every line of `expect` (so the comparison cannot pass
/// vacuously), runs it in `sb` and checks the guest printed exactly the
/// same and exited 0 with no unknown system call. Returns the output.
pub fn same_as_native(sb: &mut Sandbox, name: &str, expect: &[&str]) -> String {
    same_as_native_with(sb, name, &[], expect)
}

/// [`same_as_native`] with arguments for the program.
pub fn same_as_native_with(sb: &mut Sandbox, name: &str, args: &[&str], expect: &[&str]) -> String {
    let prog = musl(name);
    let native = Command::new(&prog).args(args).output().expect("run natively");
    assert!(native.status.success(), "{name} natively: {:?}", native.status);
    let native = String::from_utf8(native.stdout).expect("native output is UTF-8");
    for line in expect {
        assert!(native.lines().any(|l| l == *line), "{name} natively lacks {line:?}:\n{native}");
    }
    let out = sb.run(&hvsandbox::Command::new(&prog).args(args)).expect("run in the guest");
    assert_eq!(out.stdout_str(), native, "{name}: {}", out.stderr_str());
    assert_eq!(out.status, hvsandbox::ExitStatus::Code(0));
    assert!(out.stats.unknown_syscalls.is_empty(), "{name}: {:?}", out.stats.unknown_syscalls);
    native
}

/// Runs fuzzing guest program `name` with seeds 1, 2 and 3 (its argument),
/// each in a fresh 64 MiB sandbox with a 60 s time-out: every run must end
/// with the program's own exit 0 and print `expect`.
pub fn fuzz_seeds(name: &str, expect: &str) {
    for seed in ["1", "2", "3"] {
        let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(60)).build().expect("build sandbox");
        let out = sb.run(&hvsandbox::Command::new(musl(name)).arg(seed)).expect("run in the guest");
        assert_eq!(out.status, hvsandbox::ExitStatus::Code(0), "{name} seed {seed}: {}", out.stderr_str());
        assert_eq!(out.stdout_str(), expect, "{name} seed {seed}");
    }
}

/// [`same_as_native`] for glibc program `name` (dynamic: run with the
/// host system mounted, 64 MiB, 30 s).
pub fn glibc_same_as_native(name: &str, expect: &[&str]) -> String {
    let prog = glibc(name);
    let native = Command::new(&prog).output().expect("run natively");
    assert!(native.status.success(), "{name} natively: {:?}", native.status);
    let native = String::from_utf8(native.stdout).expect("native output is UTF-8");
    for line in expect {
        assert!(native.lines().any(|l| l == *line), "{name} natively lacks {line:?}:\n{native}");
    }
    let mut sb = Sandbox::builder()
        .host_system()
        .memory_mib(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build sandbox");
    let out = sb.run(&hvsandbox::Command::new(&prog)).expect("run in the guest");
    assert_eq!(out.status, hvsandbox::ExitStatus::Code(0), "{name}: {}", out.stderr_str());
    assert_eq!(out.stdout_str(), native, "{name}: {}", out.stderr_str());
    native
}

/// The `hvsandbox` CLI under test: `$HVSANDBOX_CLI` if set (the static
/// build of `scripts/build-cli.sh`), else `target/<profile>/hvsandbox`,
/// next to the running test or benchmark binary's `deps/` directory,
/// built here if cargo did not build it (it builds a package's binaries
/// only for that package's own tests).
pub fn hvsandbox_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(cli) = std::env::var_os("HVSANDBOX_CLI").filter(|p| !p.is_empty()) {
            let cli = PathBuf::from(cli);
            assert!(cli.is_file(), "HVSANDBOX_CLI={} is not a file", cli.display());
            return std::fs::canonicalize(&cli).unwrap_or(cli);
        }
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
        let bin = profile_dir.join("hvsandbox");
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut build = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"));
        build.args(["build", "-p", "hvsandbox", "--bin", "hvsandbox", "--manifest-path"]).arg(&manifest);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo to build the hvsandbox binary");
        assert!(status.success() && bin.exists(), "cannot build {}", bin.display());
        bin
    })
    .clone()
}

/// Helpers shared by the benchmarks.
pub mod bench {
    use std::time::Duration;

    /// Order statistics of a set of timings.
    pub struct Summary {
        pub median: Duration,
        pub p99: Duration,
        pub min: Duration,
        pub mean: Duration,
    }

    pub fn summarize(mut samples: Vec<Duration>) -> Summary {
        samples.sort();
        let n = samples.len().max(1);
        let pick = |q: f64| samples.get(((n as f64 * q).ceil() as usize).clamp(1, n) - 1).copied().unwrap_or_default();
        Summary {
            median: pick(0.5),
            p99: pick(0.99),
            min: samples.first().copied().unwrap_or_default(),
            mean: samples.iter().sum::<Duration>() / n as u32,
        }
    }
}

/// Kills the current run of a sandbox every 20 ms (from the first kill,
/// after `after`) until dropped: a run that started late, on a slow or
/// busy host, is still stopped by a kill rather than by its timeout.
pub struct Killer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Killer {
    pub fn start(handle: hvsandbox::InterruptHandle, after: Duration) -> Killer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(after);
            while !flag.load(Ordering::SeqCst) {
                handle.kill();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Killer { stop, thread: Some(thread) }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A scratch directory for one test (under the system's temporary
/// directory, named after the test and this process), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hvsandbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The path of `name` in it, as a string.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
