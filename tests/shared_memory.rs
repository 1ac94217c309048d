//! Shared memory (MAP_SHARED) in the guest: a C program run natively and
//! in the guest with the outputs compared (anonymous shared memory across
//! fork under process-shared semaphores and mutexes, files in /dev/shm and
//! /tmp mapped by several processes, write()/mmap coherence, SIGBUS past
//! the end, futexes across processes, mremap), frames given back when the last
//! mapping goes, and Debian's python3 with the host system: a
//! multiprocessing pool, queue and lock, a process pool executor and
//! SQLite in WAL mode, each compared with the same script run natively.

use std::path::Path;
use std::time::Duration;

use hvsandbox::{Command, ExitStatus, Sandbox};
use hvsandbox_tests::{leak_kib, musl};

fn sandbox_with_timeout(secs: u64) -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(secs)).build().expect("build sandbox")
}

#[test]
fn shared_mappings_behave_like_linux() {
    let prog = musl("shared_memory");
    let native = std::process::Command::new(&prog).output().expect("run natively");
    assert!(native.status.success(), "natively: {:?}", native.status);
    let native = String::from_utf8(native.stdout).unwrap();
    let expect = [
        "anon: children=4 failed=0 by_sem=8000 by_mutex=8000 atomic=8000 private=1",
        "anon: vfork and grandchild: atomic=8011 status=0",
        "dev/zero: shared 42 43 status=0",
        "shm_open: in /dev/shm=yes",
        "shm: status=0 parent sees \"written by the child at page 1 + 100\" and \"written through the inherited mapping\"",
        "shm: read() sees \"written by the child at page 1 + 100\"",
        "coherent: after pwrite mapping sees \"HELLO, file\"",
        "coherent: after store read sees \"HELLO, FILE\" msync=0",
        "coherent: store past the end: status=1007",
        "coherent: after ftruncate grow store=x size=8192",
        "coherent: load past the new end: status=1007",
        "coherent: grown again reads 0",
        "coherent: rw map of read-only fd: EACCES",
        "protect: read-only store status=1011; after mprotect rw status=0 sees cd",
        "futex: waiter woken status=0",
        "mremap: grown kept=aa new zero=1",
        "mremap: moved=1 kept=r old page gone=1",
        "mremap: fixed at target=1 kept=r writable=w",
        "mremap: unaligned EINVAL, unmapped EFAULT",
        "mremap: shared grown sees ABC, read sees Cc",
        "mremap: duplicate differs=1 sees A, original sees !",
        "mremap: anon shared kept=x past its size status=1007",
        "errors: write-only fd EACCES",
        "errors: mremap to 0 EINVAL, bad flags EINVAL, fixed alone EINVAL",
        "errors: msync unmapped ENOMEM",
        "forks: 200 children counted 200 failed=0",
    ];
    for line in expect {
        assert!(native.lines().any(|l| l == line), "natively lacks {line:?}:\n{native}");
    }
    let out = sandbox_with_timeout(30).run(&Command::new(&prog)).unwrap();
    assert_eq!(out.stdout_str(), native, "{}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(out.stats.unknown_syscalls.is_empty(), "{:?}", out.stats.unknown_syscalls);
}

#[test]
fn shared_memory_is_given_back_when_the_last_mapping_goes() {
    // 300 rounds of: an anonymous shared mapping and a /dev/shm file
    // mapping, each touched, shared with a child that exits, unmapped
    // (and the file unlinked and truncated). Free memory is where it was.
    let out = sandbox_with_timeout(60).run(&Command::new(musl("shared_memory")).arg("leak")).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    let kib = leak_kib(&out);
    // The runtime's own bookkeeping may settle a little (its heap grows
    // in groups of 8 pages, 32 KiB: one or two of them); 300 rounds of 80
    // KiB each leaked would be ~23 MiB, and a heap that does not merge
    // freed page runs grew by ~5 MiB (a task's registers are a page run).
    assert!(kib <= 64, "free memory went down by {kib} KiB");
}

// ---- Debian's python3 with the host system --------------------------------------

const PYTHON: &str = "/usr/bin/python3";

/// Runs `script` with python3 natively and in a sandbox with the host
/// system; checks both exit 0, the guest printed what python printed
/// natively, and that holds `expect`. None if there is no python3.
fn python_same_as_native(script: &str, expect: &[&str]) -> Option<String> {
    python_same_as_native_with(script, expect, &[])
}

/// [`python_same_as_native`], where the guest may meet the system calls
/// `unknown_ok` (python falls back when they fail).
fn python_same_as_native_with(script: &str, expect: &[&str], unknown_ok: &[u32]) -> Option<String> {
    if !Path::new(PYTHON).exists() {
        eprintln!("skipped: {PYTHON} does not exist on this host");
        return None;
    }
    // Bounded natively too (coreutils' timeout), as the sandbox's own.
    let native = std::process::Command::new("timeout")
        .args(["60", PYTHON, "-c", script])
        .output()
        .expect("run python3 natively");
    assert!(native.status.success(), "natively: {}", String::from_utf8_lossy(&native.stderr));
    let native = String::from_utf8(native.stdout).unwrap();
    for line in expect {
        assert!(native.lines().any(|l| l == *line), "natively lacks {line:?}:\n{native}");
    }
    let mut sb =
        Sandbox::builder().host_system().memory_mib(512).timeout(Duration::from_secs(60)).build().expect("build");
    let out = sb.run(&Command::new(PYTHON).args(["-c", script])).unwrap();
    assert_eq!(out.stdout_str(), native, "{}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    assert!(out.stats.unknown_syscalls.keys().all(|nr| unknown_ok.contains(nr)), "{:?}", out.stats.unknown_syscalls);
    Some(native)
}

#[test]
fn python_multiprocessing_pool_maps() {
    let script = r#"
import multiprocessing as mp
def sq(x):
    return x * x
if __name__ == "__main__":
    print(mp.get_start_method())
    with mp.Pool(2) as p:
        print("map", sum(p.map(sq, range(100))))
        print("imap", sorted(p.imap_unordered(sq, range(6))))
        print("apply", p.apply_async(pow, (3, 4)).get(timeout=20))
"#;
    python_same_as_native(script, &["fork", "map 328350", "imap [0, 1, 4, 9, 16, 25]", "apply 81"]);
}

#[test]
fn python_multiprocessing_queue_lock_and_value() {
    let script = r#"
import multiprocessing as mp
def producer(q, lock, counter, n):
    for i in range(n):
        with lock:
            counter.value += 1
        q.put(i)
    q.put(None)
if __name__ == "__main__":
    q, lock, counter = mp.Queue(), mp.Lock(), mp.Value("i", 0)
    ps = [mp.Process(target=producer, args=(q, lock, counter, 100)) for _ in range(2)]
    for p in ps:
        p.start()
    got, done = [], 0
    while done < 2:
        v = q.get(timeout=20)
        if v is None:
            done += 1
        else:
            got.append(v)
    for p in ps:
        p.join()
    print("queue", len(got), sum(got), "counter", counter.value, "exit", [p.exitcode for p in ps])
    arr = mp.Array("d", 4)
    p = mp.Process(target=arr.__setitem__, args=(2, 1.5))
    p.start(); p.join()
    print("array", list(arr))
"#;
    python_same_as_native(script, &["queue 200 9900 counter 200 exit [0, 0]", "array [0.0, 0.0, 1.5, 0.0]"]);
}

#[test]
fn python_process_pool_executor() {
    let script = r#"
import concurrent.futures as cf
def sq(x):
    return x * x
if __name__ == "__main__":
    with cf.ProcessPoolExecutor(max_workers=2) as ex:
        print(list(ex.map(sq, range(10))), ex.submit(pow, 2, 10).result())
"#;
    python_same_as_native(script, &["[0, 1, 4, 9, 16, 25, 36, 49, 64, 81] 1024"]);
}

#[test]
fn python_sqlite_in_wal_mode_from_two_connections_and_a_child() {
    let script = r#"
import multiprocessing as mp, os, sqlite3, tempfile
def writer(path, start):
    c = sqlite3.connect(path, timeout=10)
    with c:
        for i in range(start, start + 50):
            c.execute("insert into t values (?, ?)", (i, "child-%d" % i))
    c.close()
if __name__ == "__main__":
    path = os.path.join(tempfile.mkdtemp(), "wal.db")
    c = sqlite3.connect(path)
    print("mode", c.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    c.execute("create table t (k integer primary key, v text)")
    with c:
        c.executemany("insert into t values (?, ?)", [(i, "parent-%d" % i) for i in range(50)])
    c2 = sqlite3.connect(path)
    print("second sees", c2.execute("select count(*) from t").fetchone()[0])
    with c2:
        c2.execute("insert into t values (?, ?)", (1000, "second connection"))
    p = mp.Process(target=writer, args=(path, 100))
    p.start(); p.join()
    print("child", p.exitcode, "shm file", os.path.exists(path + "-shm"))
    print("first sees", c.execute("select count(*), max(k) from t").fetchone(),
          c.execute("select v from t where k = 120").fetchone()[0])
    print("checkpoint", c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
    c.close(); c2.close()
    c3 = sqlite3.connect(path)
    print("reopened", c3.execute("select count(*) from t").fetchone()[0])
"#;
    python_same_as_native(
        script,
        &[
            "mode wal",
            "second sees 50",
            "child 0 shm file True",
            "first sees (101, 1000) child-120",
            "checkpoint (0, 0, 0)",
            "reopened 101",
        ],
    );
}

#[test]
fn python_shared_memory_semaphores_barriers_and_a_spawned_pool() {
    let script = r#"
import mmap, multiprocessing as mp, os, tempfile
from multiprocessing import shared_memory
def fill(name):
    s = shared_memory.SharedMemory(name=name)
    s.buf[3:6] = b"xyz"
    s.close()
if __name__ == "__main__":
    s = shared_memory.SharedMemory(create=True, size=100)
    s.buf[:3] = b"abc"
    p = mp.Process(target=fill, args=(s.name,))
    p.start(); p.join()
    print("shared_memory", bytes(s.buf[:6]), p.exitcode)
    s.close(); s.unlink()
    fd, path = tempfile.mkstemp(dir="/dev/shm")
    os.unlink(path)
    os.write(fd, bytes(4096))
    m = mmap.mmap(fd, 4096)
    m[:5] = b"hello"
    m.resize(3 * 4096)  # ftruncate, then mremap
    m[-1:] = b"!"
    print("mmap", len(m), m[:5], m[-1:], os.pread(fd, 1, 3 * 4096 - 1), os.fstat(fd).st_size)
    sem = mp.Semaphore(0)
    p = mp.Process(target=sem.release)
    p.start()
    print("semaphore", sem.acquire(timeout=20))
    p.join()
    b = mp.Barrier(3)
    ps = [mp.Process(target=b.wait, args=(20,)) for _ in range(2)]
    for p in ps:
        p.start()
    b.wait(timeout=20)
    for p in ps:
        p.join()
    print("barrier", [p.exitcode for p in ps])
    ev = mp.Event()
    p = mp.Process(target=ev.set)
    p.start(); p.join()
    print("event", ev.wait(timeout=20))
    with mp.get_context("spawn").Pool(2) as pool:
        # A spawned worker imports __main__ anew (here `-c`): builtins only.
        print("spawn", sum(pool.map(abs, range(-50, 50))))
"#;
    // close_range (436): python's subprocess closes descriptors one by one without it.
    python_same_as_native_with(
        script,
        &[
            "shared_memory b'abcxyz' 0",
            "mmap 12288 b'hello' b'!' b'!' 12288",
            "semaphore True",
            "barrier [0, 0]",
            "event True",
            "spawn 2500",
        ],
        &[436],
    );
}
