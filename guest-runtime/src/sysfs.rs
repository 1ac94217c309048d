//! `/sys`: the few files programs read to learn the machine and their
//! limits — the CPUs (one), transparent huge pages, and a cgroup v2 root
//! at `/sys/fs/cgroup` that states the sandbox's memory limit and use,
//! as a container's own cgroup does (libuv, the JVM and .NET size
//! themselves by `memory.max`; `lscpu` and glibc read the CPU lists).
//! The files are `vfs::SYS_FILES`; each read says what holds then.

use alloc::vec::Vec;

use crate::procfs::Out;

/// The text of `/sys/<path>`, one of `vfs::SYS_FILES`.
pub fn file(path: &[u8]) -> Option<Vec<u8>> {
    let mut o = Out(Vec::new());
    match path {
        // One vCPU.
        b"devices/system/cpu/online" | b"devices/system/cpu/possible" | b"devices/system/cpu/present" => {
            o.s(b"0\n");
        }
        b"kernel/mm/transparent_hugepage/enabled" => {
            o.s(b"always [madvise] never\n");
        }
        b"kernel/mm/transparent_hugepage/hpage_pmd_size" => {
            o.n(hvsandbox_abi::HUGE_PAGE_SIZE).s(b"\n");
        }
        b"fs/cgroup/cgroup.controllers" | b"fs/cgroup/cgroup.subtree_control" => {
            o.s(b"cpu memory\n");
        }
        b"fs/cgroup/cgroup.procs" => {
            let mut pids: Vec<u32> = crate::task::live_processes().iter().map(|p| p.pid).collect();
            pids.sort_unstable();
            for pid in pids {
                o.n(pid as u64).s(b"\n");
            }
        }
        // No CPU quota: the run's deadline bounds its time instead.
        b"fs/cgroup/cpu.max" => {
            o.s(b"max 100000\n");
        }
        b"fs/cgroup/cpu.weight" => {
            o.s(b"100\n");
        }
        b"fs/cgroup/memory.max" | b"fs/cgroup/memory.high" => {
            o.n(crate::rt::boot().mem_size).s(b"\n");
        }
        b"fs/cgroup/memory.current" => {
            let total = crate::rt::boot().mem_size;
            o.n(total.saturating_sub(crate::mm::spare_frames() * crate::mm::PAGE)).s(b"\n");
        }
        b"fs/cgroup/memory.peak" => {
            o.n(crate::mm::peak_bytes()).s(b"\n");
        }
        b"fs/cgroup/memory.swap.max" | b"fs/cgroup/memory.swap.current" => {
            o.s(b"0\n");
        }
        _ => return None,
    }
    Some(o.0)
}
