//! A process pool: Debian's python3 maps 1,000 small tasks over a
//! `multiprocessing.Pool(2)` (fork start method; tasks and results go
//! through pipes, the pool's locks are POSIX semaphores in shared memory),
//! in a sandbox with the host system beside the same script run natively
//! in the same process. Each figure is a whole run: interpreter start,
//! pool start, the map, teardown.
//!
//! `cargo bench -p hvsandbox-tests --bench process_pool [-- --quick]`

use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox};
use hvsandbox_tests::bench::summarize;

const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import multiprocessing as mp, sys
def task(x):
    return x * x + 1
if __name__ == "__main__":
    n = int(sys.argv[1])
    with mp.Pool(2) as p:
        print(sum(p.map(task, range(n))))
"#;

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !std::path::Path::new(PYTHON).exists() {
        println!("skipped: {PYTHON} does not exist on this host");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 3 } else { 15 };
    let tasks: u64 = 1000;
    let arg = tasks.to_string();
    let expect = format!("{}\n", (0..tasks).map(|x| x * x + 1).sum::<u64>());
    let mut sb = Sandbox::builder().host_system().memory_mib(512).timeout(Duration::from_secs(120)).build().unwrap();
    let (mut native, mut guest) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new(PYTHON).args(["-c", SCRIPT, &arg]).output().unwrap();
        native.push(t.elapsed());
        assert_eq!(String::from_utf8_lossy(&out.stdout), expect, "{}", String::from_utf8_lossy(&out.stderr));
        let t = Instant::now();
        let out = sb.run(&Command::new(PYTHON).args(["-c", SCRIPT, &arg])).unwrap();
        guest.push(t.elapsed());
        assert_eq!(out.stdout_str(), expect, "{}", out.stderr_str());
    }
    let (n, g) = (summarize(native).median, summarize(guest).median);
    println!("python3 multiprocessing.Pool(2).map over {tasks} small tasks, whole run ({runs} runs, medians)");
    println!("  native                 {}", ms(n));
    println!("  sandbox (cold)         {}  {:.2}x native", ms(g), g.as_secs_f64() / n.as_secs_f64());
}
