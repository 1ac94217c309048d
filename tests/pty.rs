//! Pseudo-terminals: /dev/ptmx and /dev/pts/N with a line discipline
//! (canonical mode with echo and erase, raw mode, ^C to the foreground
//! process group, ^Z stopping the foreground job, hang-ups). The C program runs natively and in the
//! guest and the outputs are compared; then Debian's python3 with the
//! host system mounted: `os.openpty` round trips and `pty.spawn`, and
//! util-linux's `script` running a command on a terminal.

use std::path::Path;
use std::time::Duration;

use hvsandbox::{Command, ExitStatus, Sandbox};
use hvsandbox_tests::same_as_native;

#[test]
fn pseudo_terminals_work_like_linux() {
    let expect = [
        "stdin isatty: 0",
        "open before unlockpt: -1 EIO",
        "slave: chr 1 isatty 1 master isatty 1",
        "ttyname = ptsname: 1",
        "slave reads: 4 \"abd\\n\"",
        "echo: 9 \"abc\\x08 \\x08d\\r\\n\"",
        "^D alone: 0",
        "slave output: 5 \"out\\r\\n\"",
        "raw slave reads: 4 \"x\\r\\x03\\x7f\"",
        "master reads: 2 \"\\x13\\x11\"",
        "tcflow -1: -1 EINVAL",
        "child: signaled 1 sig 2",
        "after ^Z: 24 \"^Zjob stopped 1 sig 20\\r\\n\"",
        "master after hang-up: -1 EIO",
        "slave write after master closed: -1 EIO",
        "session leader after hang-up: signaled 1 sig 1",
    ];
    let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(30)).build().unwrap();
    same_as_native(&mut sb, "pty", &expect);
}

fn python() -> Option<Sandbox> {
    if !Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3 on this host");
        return None;
    }
    Some(Sandbox::builder().host_system().memory_mib(256).timeout(Duration::from_secs(30)).build().unwrap())
}

#[test]
fn python_openpty_and_pty_spawn() {
    let Some(mut sb) = python() else { return };
    let script = r#"
import os, sys, tty, termios, pty
m, s = os.openpty()
print(os.isatty(s), os.ttyname(s).startswith("/dev/pts/"))
os.write(m, b"hi\r")
print(os.read(s, 100), os.read(m, 100))
tty.setraw(s)
os.write(m, b"\x03x")
print(os.read(s, 100))
os.close(s); os.close(m)
sys.stdout.flush()
code = "import os; print('in pty', os.isatty(0), os.isatty(1), os.get_terminal_size(1).columns >= 0)"
status = pty.spawn([sys.executable, "-c", code])
print("status", status)
"#;
    let out = sb.run(&Command::new("python3").args(["-c", script])).unwrap();
    assert_eq!(
        out.stdout_str(),
        "True True\nb'hi\\n' b'hi\\r\\n'\nb'\\x03x'\nin pty True True True\r\nstatus 0\n",
        "{}",
        out.stderr_str()
    );
    assert_eq!(out.status, ExitStatus::Code(0));
}

#[test]
fn script_runs_a_command_on_a_terminal() {
    let Some(mut sb) = python() else { return };
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("skipped: no /usr/bin/script");
        return;
    }
    let cmd = "tty; test -t 0 && echo stdin is a tty; stty size";
    let out = sb.run(&Command::new("script").args(["-qec", cmd, "/dev/null"])).unwrap();
    let text = out.stdout_str().replace('\r', "");
    assert!(text.starts_with("/dev/pts/"), "{text:?} {}", out.stderr_str());
    assert!(text.contains("stdin is a tty\n"), "{text:?}");
    assert_eq!(out.status, ExitStatus::Code(0), "{text:?} {}", out.stderr_str());
}

/// An interactive bash's job control on a terminal, as natively: ^Z stops
/// the foreground job, `jobs` lists it stopped, `bg` continues it in the
/// background, `kill %1` ends it (`bash_jobs.py` drives bash through a
/// pty). Before, stop signals were dropped: ^Z did nothing.
#[test]
fn bash_job_control_on_a_terminal_as_natively() {
    let Some(mut sb) = python() else { return };
    if !Path::new("/bin/bash").exists() {
        eprintln!("skipped: no /bin/bash");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/guest-programs/bash_jobs.py");
    let code = std::fs::read_to_string(script).unwrap();
    let native = std::process::Command::new("/usr/bin/python3").args(["-c", &code]).output().unwrap();
    let native = String::from_utf8(native.stdout).unwrap();
    assert_eq!(native, "after ^Z: True\njobs: True\nbg: True\nrunning: True\nkilled: True\nbash exit: 0\n", "natively");
    let out = sb.run(&Command::new("python3").args(["-c", &code])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), native);
}
