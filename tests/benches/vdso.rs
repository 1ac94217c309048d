//! Clock reads in the guest beside the same reads made natively:
//! `clock_gettime(CLOCK_MONOTONIC)` through libc (the vDSO), the same
//! clock as a real system call, and gettimeofday through the vsyscall
//! page (guest only). `cargo bench -p hvsandbox-tests --bench vdso`.
use hvsandbox::{Command, Sandbox};
use hvsandbox_tests::musl;

fn parse(b: &[u8]) -> Vec<f64> {
    String::from_utf8_lossy(b).split_whitespace().map(|w| w.parse().unwrap_or(f64::NAN)).collect()
}

/// The program's figures in the guest.
fn guest_costs() -> hvsandbox::Output {
    let mut sb = Sandbox::builder().build().unwrap();
    sb.run(&Command::new(musl("clock_cost")).arg("vsyscall")).unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--guest-only") {
        print!("{}", guest_costs().stdout_str());
        return;
    }
    let native = std::process::Command::new(musl("clock_cost")).output().unwrap();
    let guest = guest_costs();
    let (g, n) = (parse(&guest.stdout), parse(&native.stdout));
    if g.len() < 3 || n.len() < 3 {
        eprintln!(
            "unexpected output: guest {:?}, native {:?}",
            guest.stdout_str(),
            String::from_utf8_lossy(&native.stdout)
        );
        std::process::exit(1);
    }
    println!("clock_gettime via the vDSO in the guest: {:.1} ns; native: {:.1} ns ({:.2}x)", g[0], n[0], g[0] / n[0]);
    println!(
        "clock_gettime as a system call in the guest: {:.0} ns; native: {:.0} ns ({:.1}x)",
        g[1],
        n[1],
        g[1] / n[1]
    );
    println!("gettimeofday through the vsyscall page in the guest: {:.1} ns", g[2]);
    // A site left as it is: rewriting off, in a child process (the setting
    // is read once a process).
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe).arg("--guest-only").env("HVSANDBOX_REWRITE", "0").output().unwrap();
    if let Some(u) = parse(&child.stdout).get(1) {
        println!(
            "  the same system call from a site left as it is (HVSANDBOX_REWRITE=0): {u:.0} ns ({:.1}x)",
            u / n[1]
        );
    }
}
