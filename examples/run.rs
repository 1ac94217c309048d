//! Runs a static Linux program in a sandbox and prints what it did:
//! `cargo run --release --example run -- /bin/busybox echo hi`
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().ok_or("usage: run PROGRAM [ARGS...]")?;
    let mut sandbox = hvsandbox::Sandbox::builder().memory_mib(64).build()?;
    let out = sandbox.run(&hvsandbox::Command::new(program).args(args))?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    eprintln!(
        "[{}; {:?} wall, {} syscalls, {} exits, unknown syscalls {:?}]",
        out.status, out.stats.wall, out.stats.syscalls, out.stats.exits, out.stats.unknown_syscalls
    );
    Ok(())
}
