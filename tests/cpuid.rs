//! `cpuid` answered by the runtime (issue 20): an entry snapshot's eager
//! rewriting also turns the program's `cpuid` sites into jumps to the
//! runtime, which answers from the CPUID page the host wrote (the
//! vCPU's own leaves) and leaves the rest to the CPU. Every leaf and
//! subleaf of a sweep must read the same as with rewriting off (every
//! `cpuid` then goes to the hypervisor), from a snapshot taken in this
//! process and from one loaded from a file (whose page the host writes
//! anew); registers, flags and the red zone must survive as natively.
//! The library runs force rewriting on for this process (the switch is
//! read once per process); the off run goes through the `hvsandbox`
//! command, which sets its own.

use std::process::Command as Std;

use hvsandbox::{Command, ExitStatus, Sandbox, SnapshotPoint};
use hvsandbox_tests::{from_entry_snapshot, glibc, hvsandbox_bin, musl, stat};

fn rewriting_on() {
    static ON: std::sync::Once = std::sync::Once::new();
    ON.call_once(|| std::env::set_var("HVSANDBOX_REWRITE", "1"));
}

/// `cpuid`'s output with rewriting off: the hypervisor's answers.
fn hypervisor_answers() -> String {
    let out = Std::new(hvsandbox_bin())
        .env("HVSANDBOX_REWRITE", "0")
        .args(["run", "--timeout", "30s", "--"])
        .arg(musl("cpuid"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() > 50, "a sweep of leaves:\n{text}");
    assert!(text.starts_with("0.0: "), "{text}");
    assert!(text.ends_with("checks: 0 bad\nsite: 0f 48\n"), "off, the site is as written:\n{text}");
    text
}

/// The output with the site line replaced by what it was before
/// rewriting, after checking it was rewritten (second form: `jmp rel8`
/// at the `cpuid`; third: `jmp rel32` at the `movabs` before it).
fn rewritten_site(text: &str) -> String {
    let (body, site) = text.rsplit_once("site: ").unwrap_or_else(|| panic!("no site line:\n{text}"));
    assert!(site == "eb 48\n" || site == "0f e9\n", "the site is rewritten: {site}");
    format!("{body}site: 0f 48\n")
}

#[test]
fn a_rewritten_cpuid_answers_as_the_hypervisor_from_a_snapshot_in_this_process() {
    rewriting_on();
    let want = hypervisor_answers();
    let mut sb = from_entry_snapshot(&Command::new(musl("cpuid")));
    for round in 0..2 {
        let out = sb.run(&Command::resume()).expect("run from the snapshot");
        assert_eq!(out.status, ExitStatus::Code(0), "round {round}: {}", out.stderr_str());
        assert_eq!(rewritten_site(&out.stdout_str()), want, "round {round}");
    }
}

#[test]
fn a_rewritten_cpuid_answers_as_the_hypervisor_from_a_snapshot_file() {
    let want = hypervisor_answers();
    let dir = std::env::temp_dir().join(format!("hvsandbox-cpuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cpuid.snap");
    let taken = Std::new(hvsandbox_bin())
        .env("HVSANDBOX_REWRITE", "1")
        .args(["snapshot", "--at", "entry", "-o"])
        .arg(&file)
        .arg("--")
        .arg(musl("cpuid"))
        .output()
        .unwrap();
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    // A new process loads it: the host writes its own vCPU's leaves into
    // the page the snapshot carries.
    let run = Std::new(hvsandbox_bin())
        .env("HVSANDBOX_REWRITE", "1")
        .args(["run", "--timeout", "30s", "--from-snapshot"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(rewritten_site(&String::from_utf8(run.stdout).unwrap()), want);
}

#[test]
fn registers_flags_and_the_red_zone_survive_a_rewritten_cpuid_as_natively() {
    rewriting_on();
    let native = Std::new(musl("cpuid")).arg("checks").output().unwrap();
    assert!(native.status.success());
    assert_eq!(String::from_utf8_lossy(&native.stdout), "checks: 0 bad\n", "natively");
    let mut sb = from_entry_snapshot(&Command::new(musl("cpuid")));
    let out = sb.run(&Command::resume().arg("checks")).expect("run from the snapshot");
    assert_eq!(out.stdout_str(), "checks: 0 bad\n", "{}", out.stderr_str());
}

#[test]
fn a_run_of_short_instructions_moves_to_the_stub_unless_a_jump_may_land_inside_it() {
    rewriting_on();
    let off = Std::new(hvsandbox_bin())
        .env("HVSANDBOX_REWRITE", "0")
        .args(["run", "--timeout", "30s", "--"])
        .arg(musl("cpuid"))
        .arg("forms")
        .output()
        .unwrap();
    let want = |run: &str, rip: &str, getpid: &str| {
        format!(
            "forms: 0 differ\nrun: 0f {run}\nlanded: 0f 4d\nindirect: 0f 4d\nrip: 0f {rip}\n\
             getpid: 10 of 10 right, run: 0f {getpid}\n"
        )
    };
    assert_eq!(String::from_utf8_lossy(&off.stdout), want("4d", "c7", "89"), "off: the code as written");
    let native = Std::new(musl("cpuid")).arg("forms").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&native.stdout), want("4d", "c7", "89"), "natively");
    let mut sb = from_entry_snapshot(&Command::new(musl("cpuid")));
    let out = sb.run(&Command::resume().arg("forms")).expect("run from the snapshot");
    // The run (`mov %r8,%r9; mov %r9,%r11`) became `jmp rel32`; the
    // other sites, one with a `jnz` into its run, one in a function with
    // an indirect jump, are as written; all answer as the first site
    // does, by either path. The `syscall`'s run
    // (`mov %edi,%eax; mov %r8,%r9`) moved too, and getpid still works;
    // the RIP-relative store moved and still stores where it did.
    assert_eq!(out.stdout_str(), want("e9", "e9", "e9"), "{}", out.stderr_str());
}

#[test]
fn a_dynamic_programs_loader_has_its_cpuid_sites_rewritten_and_learns_the_same() {
    rewriting_on();
    let prog = glibc("loader_code");
    let off = Std::new(hvsandbox_bin())
        .env("HVSANDBOX_REWRITE", "0")
        .args(["run", "--system", "--timeout", "30s", "--"])
        .arg(&prog)
        .output()
        .unwrap();
    let off = String::from_utf8_lossy(&off.stdout).into_owned();
    let (figures, code) = off.rsplit_once("loader code: ").unwrap_or_else(|| panic!("off:\n{off}"));
    assert!(figures.starts_with("L1d ") && figures.contains("\nsse4.2 "), "{off}");
    assert_eq!(code, "0 bytes differ from its file\n", "off: the loader's code is its file's");
    let mut sb = Sandbox::builder().host_system().memory_mib(64).build().unwrap();
    let snap = sb.snapshot(&Command::new(&prog), SnapshotPoint::Entry).expect("entry snapshot");
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    for round in 0..2 {
        let out = sb.run(&Command::resume()).expect("run from the snapshot");
        let text = out.stdout_str();
        let (on_figures, on_code) = text.rsplit_once("loader code: ").unwrap_or_else(|| panic!("on:\n{text}"));
        assert_eq!(on_figures, figures, "round {round}: glibc learns the same from CPUID");
        let n: u64 = on_code.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(n > 0, "round {round}: the loader's sites are rewritten: {on_code}");
    }
}

#[test]
fn with_cpuid_rewriting_only_cpuid_sites_change_and_every_system_call_takes_the_slow_path() {
    // What a host whose `syscall` is cheap gets by default.
    let dir = std::env::temp_dir().join(format!("hvsandbox-cpuid-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cpuid.snap");
    let cli = || {
        let mut c = Std::new(hvsandbox_bin());
        c.env("HVSANDBOX_REWRITE", "cpuid");
        c
    };
    let taken =
        cli().args(["snapshot", "--at", "entry", "-o"]).arg(&file).arg("--").arg(musl("cpuid")).output().unwrap();
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let run = cli()
        .args(["run", "--stats", "--timeout", "30s", "--from-snapshot"])
        .arg(&file)
        .args(["--", "forms"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "forms: 0 differ\nrun: 0f e9\nlanded: 0f 4d\nindirect: 0f 4d\nrip: 0f e9\ngetpid: 10 of 10 right, run: 0f 89\n",
        "the `cpuid` run moved, the `syscall`'s did not"
    );
    let stats = stderr.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no stats:\n{stderr}"));
    assert!(stat(stats, "syscalls") > 10, "{stats}");
    assert_eq!(stat(stats, "slow_syscalls"), stat(stats, "syscalls"), "no system-call site rewritten: {stats}");
}

#[test]
fn a_files_cpuid_sites_are_rewritten_from_its_first_start_in_a_run_or_its_second_if_large() {
    // No snapshot: a shell starts the same programs three times in one
    // run. The runtime rewrites a file's `cpuid` sites at the execve
    // (glibc's loader of a dynamic program, a static program's own):
    // from its first start if it has at most 4 MiB of code, else from
    // its second (scanning a large file's code costs more than the
    // probes it saves). Every answer stays the same.
    rewriting_on();
    let want = hypervisor_answers();
    let (cpuid, loader, large) = (musl("cpuid"), glibc("loader_code"), musl("cpuid_large"));
    let dir = cpuid.parent().unwrap();
    assert_eq!(loader.parent().unwrap(), dir);
    assert!(std::fs::metadata(&large).unwrap().len() > 5 << 20, "the large program has over 4 MiB of code");
    let name = |p: &std::path::Path| format!("/progs/{}", p.file_name().unwrap().to_str().unwrap());
    let script = format!("for i in 1 2 3; do {0}; {1}; {2}; done", name(&cpuid), name(&loader), name(&large));
    let mut sb = Sandbox::builder().host_system().memory_mib(64).mount(dir, "/progs").build().unwrap();
    let out = sb.run(&Command::new(hvsandbox_tests::BUSYBOX).args(["sh", "-c", &script])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    let text = out.stdout_str();
    // Each start's output ends with its "site:" (cpuid, cpuid_large) or
    // "loader code:" (loader_code) line.
    let mut starts = Vec::new();
    let mut rest = text.as_str();
    while let Some(end) = [rest.find("site: "), rest.find("loader code: ")].into_iter().flatten().min() {
        let line_end = rest[end..].find('\n').map_or(rest.len(), |n| end + n + 1);
        starts.push(&rest[..line_end]);
        rest = &rest[line_end..];
    }
    assert_eq!(starts.len(), 9, "{text}");
    // The large program's first start: as written.
    assert_eq!(starts[2], want, "the first start of cpuid_large");
    // (System-call sites may be rewritten lazily as a program runs, in
    // every start, and ahead at later starts once seen: later starts may
    // differ from the file in more bytes. The loader with no `cpuid`
    // site rewritten differs in a few.)
    let differ = |code: &str| -> u64 { code.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0) };
    let (figures, _) = starts[1].rsplit_once("loader code: ").unwrap();
    for round in 0..3 {
        assert_eq!(rewritten_site(starts[3 * round]), want, "start {} of cpuid", round + 1);
        let (on_figures, on_code) = starts[3 * round + 1].rsplit_once("loader code: ").unwrap();
        assert_eq!(on_figures, figures, "start {}: glibc learns the same from CPUID", round + 1);
        assert!(differ(on_code) > 20, "start {}: the loader's `cpuid` sites are rewritten: {on_code}", round + 1);
        if round > 0 {
            assert_eq!(rewritten_site(starts[3 * round + 2]), want, "start {} of cpuid_large", round + 1);
        }
    }
}
