//! CPU-time clocks and timers: ITIMER_VIRTUAL/ITIMER_PROF on a loop that
//! spins without system calls, POSIX timers (signal, none, thread id,
//! absolute, intervals with overruns, CPU clocks, SIGEV_THREAD),
//! timerfds, signalfds, sigtimedwait, and CPU clocks that advance while
//! spinning and not while sleeping. The C program runs natively and in
//! the guest and the outputs are compared (counts within ranges, never
//! times); then real programs: Debian's python3 and coreutils with the
//! host system mounted. Also the small /proc and FIFO gaps: an O_RDWR
//! named pipe, /proc/<pid>/cwd, /proc/<pid>/task and file names in
//! /proc/<pid>/maps.

use std::path::Path;
use std::time::Duration;

use hvsandbox::{Command, ExitStatus, Sandbox};
use hvsandbox_tests::same_as_native;

fn sandbox(secs: u64) -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(secs)).build().expect("build sandbox")
}

#[test]
fn cpu_clocks_posix_timers_and_timerfds_work_like_linux() {
    let expect = [
        "virtual: fired >=3: 1",
        "virtual while sleeping: fired 0",
        "spinning 50ms of CPU: process >= thread 1, wall >= CPU 1",
        "sleeping 100ms: process +<30ms 1",
        "children: >=50ms 1",
        "interval: ticks>=5 1, code SI_TIMER 1, value 42, interval 5000000 ns",
        "blocked 60ms: coalesced 1, overrun >= 3 1, getoverrun is the last one's 1",
        "abstime: fired 1, value 7, disarmed 1",
        "cpu timer: fired 1, value 9",
        "thread cpu timer: fired 1, value 10",
        "child: gettime: -1 EINVAL",
        "timerfd poll: 1 revents 1",
        "timerfd epoll: 1 data 77",
        "after exec: the timer: -1 EINVAL",
        "signalfd SIGCHLD: poll 1 read 128 signo 17",
        "signalfd timer: poll 1 read 128 signo-rtmin 1 code SI_TIMER 1 int 55",
        "sigtimedwait nothing: -1 EAGAIN",
        "sigwaitinfo timer: rtmin+2 code SI_TIMER 1 value 66",
        "SIGEV_THREAD: ticks>=3 1",
    ];
    same_as_native(&mut sandbox(60), "cpu_timers", &expect);
}

fn host_system(secs: u64) -> Option<Sandbox> {
    if !Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3 on this host");
        return None;
    }
    Some(Sandbox::builder().host_system().memory_mib(256).timeout(Duration::from_secs(secs)).build().unwrap())
}

#[test]
fn python_interval_timers_and_process_time() {
    let Some(mut sb) = host_system(30) else { return };
    let script = r#"
import signal, time, os
hits = []
signal.signal(signal.SIGVTALRM, lambda s, f: hits.append(s))
signal.setitimer(signal.ITIMER_VIRTUAL, 0.01, 0.01)
x = 0
while len(hits) < 3:
    x += 1
signal.setitimer(signal.ITIMER_VIRTUAL, 0)
print("vtalrm", len(hits) >= 3)
t0 = time.process_time()
end = t0 + 0.05
while time.process_time() < end:
    pass
print("process_time advanced", time.process_time() - t0 >= 0.05)
t1 = time.process_time()
time.sleep(0.1)
print("not while sleeping", time.process_time() - t1 < 0.03)
print("thread_time", time.thread_time() > 0)
print("times", os.times().user > 0)
"#;
    let out = sb.run(&Command::new("python3").args(["-c", script])).unwrap();
    assert_eq!(
        out.stdout_str(),
        "vtalrm True\nprocess_time advanced True\nnot while sleeping True\nthread_time True\ntimes True\n",
        "{}",
        out.stderr_str()
    );
    assert_eq!(out.status, ExitStatus::Code(0));
}

#[test]
fn coreutils_timeout_ends_a_sleep_with_124() {
    let Some(mut sb) = host_system(20) else { return };
    if !Path::new("/usr/bin/timeout").exists() {
        eprintln!("skipped: no /usr/bin/timeout");
        return;
    }
    let out = sb.run(&Command::new("timeout").args(["0.3", "sleep", "5"])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(124), "{}", out.stderr_str());
    // And a command that ends in time keeps its status.
    let out = sb.run(&Command::new("timeout").args(["5", "sh", "-c", "exit 3"])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(3), "{}", out.stderr_str());
}

#[test]
fn read_write_fifos_proc_cwd_task_dirs_and_maps_names_work_like_linux() {
    let expect = [
        "O_RDWR open: ok",
        "read back: 3 abc",
        "reader reads: 3 xyz",
        "from a child: 10 from child",
        "/proc/self/cwd: 4 /tmp",
        "child's cwd: /",
        "tasks with a thread: 2",
        "thread stat starts with its tid: 1",
        "thread status: pid 1 tgid 1",
        "no such thread: -1 ENOENT",
        "maps: found 1 offset 00001000 perms r--p",
        "maps: name /tmp/maps-file inode>0 1",
        "after unmapping the first page: offset 00002000 name /tmp/maps-file",
    ];
    same_as_native(&mut sandbox(30), "proc_fifo", &expect);
}
