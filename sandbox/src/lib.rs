//! hvsandbox: run untrusted Linux programs in millisecond KVM micro-VMs.
//!
//! Each run boots a fresh micro-VM whose guest runtime — a small library
//! OS running at CPL3 — loads the program and serves its system calls.
//! Use it like `std::process::Command`, except the child is a VM:
//!
//! ```no_run
//! use hvsandbox::{Command, Sandbox};
//! use std::time::Duration;
//!
//! let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(2)).build()?;
//! let out = sb.run(&Command::new("/bin/busybox").args(["echo", "hi"]))?;
//! assert_eq!(out.status.code(), Some(0));
//! assert_eq!(out.stdout, b"hi\n");
//! # Ok::<(), hvsandbox::Error>(())
//! ```

mod command;
mod config;
mod control;
mod end_notify;
mod error;
mod exec_path;
mod fs;
mod host_system;
mod image_cache;
pub mod jail;
mod live;
mod output;
mod pool;
mod prefault;
mod prepare;
mod process;
mod program;
mod runner;
mod sandbox;
mod snapshot;
mod syscall_names;
mod vcpu_thread;
mod vm_factory;
mod worker;

pub use command::{Command, DEFAULT_FILE_MODE};
pub use config::{
    SandboxBuilder, DEFAULT_MAX_COLLECT_BYTES, DEFAULT_MAX_COLLECT_FILES, DEFAULT_MAX_INPUT, DEFAULT_MAX_OPEN_FILES,
    DEFAULT_MAX_OUTPUT, DEFAULT_MAX_PROCESSES, DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT, MAX_PROGRAM_SIZE,
};
pub use control::InterruptHandle;
pub use end_notify::end_event_fd;
pub use error::{Error, ErrorKind, PartialOutput, Result};
pub use hvsandbox_core::HugePages;
pub use jail::SeccompMode;
pub use output::{ExitStatus, FaultInfo, Output, Stats};
pub use pool::{PooledSandbox, SandboxPool};
pub use prefault::{prefault_counts, set_prefault_limit, PrefaultCounts};
pub use prepare::ProgramFile;
pub use process::{OutputReader, Process, ProcessEvent, ProcessKillHandle, ProcessStdin};
pub use sandbox::Sandbox;
pub use snapshot::{reseal_for_fuzzing, Snapshot, SnapshotPoint};
pub use vm_factory::{set_background_vm_thread, set_blank_vms, wait_for_reaper};
