//! One run on the vCPU thread: gets its VM ready, runs it, and serves its
//! exits and hypercalls (output, input, the guest's host filesystem,
//! snapshot and resume) until the program ends or a limit stops it.
//! Beside it: `stream` (passing a spawned process's output on as it is
//! produced) and `fs_calls` (the guest's host filesystem hypercalls).

mod fs_calls;
mod stream;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hvsandbox_core::{abi, thread_cpu_time, BootParams, ProgramImage, VcpuState, Vm, VmError, VmExit};

use crate::config::Config;
use crate::control::{jail_violation, RunControl};
use crate::error::{Error, Result};
use crate::fs::FsEntry;
use crate::live::{Input, Live};
use crate::output::{ExitStatus, FaultInfo, Output, Stats};
use crate::prepare::Prepared;
use crate::snapshot::{Snapshot, SnapshotPoint};
use crate::vcpu_thread::Kit;
use crate::vm_factory::{self, clone_vm, ResetAid};
use stream::guest_buffers;

/// Linux's signal for each CPU exception a program can cause.
fn signal_for_vector(vector: u64) -> i32 {
    abi::signal_for_vector(vector) as i32
}

/// How often a streamed run's guest is stopped to pass its output on and
/// tell it of input, and to end a time slice (the guest takes no timer
/// interrupts).
const STREAM_TICK: Duration = Duration::from_millis(2);
/// How often any other run's guest is stopped: a time slice when it has
/// more than one task (one exit per slice when it has one).
const SLICE_TICK: Duration = Duration::from_millis(10);

/// What a run does with its output and input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Output is collected into the run's `Output`; stdin is whole.
    Collect,
    /// Output goes to the process's reader as it is produced, up to
    /// `max_output` per stream unless `unlimited`; stdin is whole or
    /// (`interactive`) written while the program runs.
    Live { unlimited: bool, interactive: bool },
}

/// Where a run's VM comes from.
pub(crate) enum VmSource<'a> {
    /// A cold run: the blank VM made ahead of it (`spare`), else one from
    /// the process-wide pool, else a new one. `loaded`: the program's image
    /// is in the spare's RAM already (its `RamLoader`'s).
    Blank { spare: Option<Vm>, loaded: bool },
    /// A run from a snapshot: the sandbox's VM, already in the snapshot's
    /// state (`kept`), else a clone; `aid` for resetting in place.
    Snapshot { snap: Snapshot, kept: Option<Vm>, aid: Option<&'a ResetAid> },
}

/// One run on the worker thread.
pub(crate) struct Runner<'a> {
    config: &'a Config,
    control: &'a RunControl,
    kit: &'a Kit,
    /// What the caller's thread prepared for the run.
    input: Prepared,
    /// Take a snapshot at this point instead of finishing the run.
    take: Option<SnapshotPoint>,
    /// Where the VM comes from (taken when the run starts).
    source: Option<VmSource<'a>>,
    /// The run starts from a snapshot.
    restored: bool,
    /// The guest measures the pages this run touches (see
    /// `prefault::measures`).
    measure: bool,
    /// The vCPU thread's CPU time when the run started.
    cpu_start: Duration,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    stdin_pos: usize,
    exits: u64,
    fault: Option<FaultInfo>,
    /// Reused buffer for file reads and writes.
    scratch: Vec<u8>,
    /// The process this run serves, if any.
    live: Option<Arc<Live>>,
    stream: Stream,
    /// Bytes passed to the process's reader, per stream.
    streamed: [usize; 2],
    /// The guest was told there is no input yet and not told since.
    input_awaited: bool,
    /// The guest asked for time slices since the loop last looked.
    slices_asked: bool,
    /// Looks at a streamed run since one found output or told of input
    /// (see `stream_tick`).
    quiet_looks: u32,
    /// When the guest's current time slice began (its last preemption,
    /// or the run's start): a streamed run is looked at every
    /// `STREAM_TICK`, its program preempted only every `SLICE_TICK`.
    slice_began: Instant,
}

/// How a run's guest stopped.
enum Stop {
    Exit(ExitStatus),
    Snapshot(Box<VcpuState>),
}

/// What a run produced.
pub(crate) enum Ended {
    Output(Box<Output>),
    /// Stopped at its snapshot point: the VM (for the caller to copy its
    /// memory), the vCPU's registers and the guest's host file handles.
    Snapshot(Box<(Vm, VcpuState, Vec<FsEntry>)>),
}

/// What one run is asked to do.
pub(crate) struct RunSpec {
    /// What the caller's thread prepared for the run.
    pub(crate) input: Prepared,
    /// Take a snapshot at this point instead of finishing the run.
    pub(crate) take: Option<SnapshotPoint>,
    /// The process the run serves, if any.
    pub(crate) live: Option<Arc<Live>>,
    pub(crate) stream: Stream,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(
        config: &'a Config,
        control: &'a RunControl,
        kit: &'a Kit,
        spec: RunSpec,
        source: VmSource<'a>,
    ) -> Self {
        let RunSpec { input, take, live, stream } = spec;
        // Streaming needs somewhere to stream to.
        let stream = if live.is_some() { stream } else { Stream::Collect };
        Runner {
            config,
            control,
            kit,
            input,
            take,
            restored: matches!(source, VmSource::Snapshot { .. }),
            measure: matches!(&source, VmSource::Snapshot { snap, .. } if crate::prefault::measures(snap)),
            source: Some(source),
            cpu_start: Duration::ZERO,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdin_pos: 0,
            exits: 0,
            fault: None,
            scratch: Vec::new(),
            live,
            stream,
            streamed: [0; 2],
            input_awaited: false,
            slices_asked: false,
            slice_began: Instant::now(),
            quiet_looks: 0,
        }
    }

    fn streaming(&self) -> Option<&Arc<Live>> {
        match self.stream {
            Stream::Live { .. } => self.live.as_ref(),
            Stream::Collect => None,
        }
    }

    fn interactive(&self) -> bool {
        matches!(self.stream, Stream::Live { interactive: true, .. })
    }

    /// Attaches the output of a stopped run to its error: what reached the
    /// host plus what was still buffered in the guest.
    fn with_partial_output(&mut self, mut e: Error, vm: Option<&Vm>) -> Error {
        // Output cut at its limit has nothing more to take from the guest.
        let salvage = !matches!(e, Error::OutputLimitExceeded { .. });
        if e.partial_output().is_none() {
            return e;
        }
        if let (true, Some(vm)) = (salvage, vm) {
            self.salvage_guest_buffers(vm);
        }
        if let Some(partial) = e.partial_output_mut() {
            partial.stdout = std::mem::take(&mut self.stdout);
            partial.stderr = std::mem::take(&mut self.stderr);
        }
        e
    }

    /// Takes output the guest runtime had buffered but not sent (the
    /// buffers' place is published in its stats page; every length read
    /// from the guest is checked).
    fn salvage_guest_buffers(&mut self, vm: &Vm) {
        for b in guest_buffers(vm, Self::out_buffers(vm)) {
            // Up to the cap; a stopped run has no error left to report.
            let _ = self.append_output(vm, b.fd, b.data, b.len, &|| true);
        }
    }

    /// Appends `len` bytes of guest memory at `gpa` to stream `fd` (1 or
    /// 2), up to the output cap. Returns whether anything was dropped
    /// ("full" only then, so output of exactly the cap is not flagged as
    /// truncated); an error instead when the config asks for one.
    fn append_output(&mut self, vm: &Vm, fd: u64, gpa: u64, len: u64, stop: &dyn Fn() -> bool) -> Result<bool> {
        if let Some(live) = self.streaming().cloned() {
            return self.stream_out(vm, &live, fd, gpa, len, Some(stop));
        }
        let (buf, truncated) = if fd == 1 {
            (&mut self.stdout, &mut self.stdout_truncated)
        } else {
            (&mut self.stderr, &mut self.stderr_truncated)
        };
        let room = self.config.max_output.saturating_sub(buf.len());
        let take = (len as usize).min(room);
        if take > 0 {
            let at = buf.len();
            buf.resize(at + take, 0);
            if let Err(e) = vm.read_bytes(gpa, &mut buf[at..]) {
                buf.truncate(at);
                return Err(Error::from(e));
            }
        }
        if take == len as usize {
            return Ok(false);
        }
        *truncated = true;
        if self.config.output_limit_error {
            let stream = if fd == 1 { "stdout" } else { "stderr" };
            return Err(Error::OutputLimitExceeded { stream, limit: self.config.max_output, partial: Box::default() });
        }
        Ok(true)
    }

    /// Runs the program; returns the VM too (unless the run ended in a
    /// snapshot, which holds it) so the caller can reset or destroy it after
    /// handing back the result.
    pub(crate) fn run(mut self) -> (Result<Ended>, Option<Vm>) {
        let generation = self.control.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let started = Instant::now();
        let cpu_start = thread_cpu_time();
        // A timeout too long to represent is a deadline far enough away.
        let deadline = started
            .checked_add(self.config.timeout)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut vm = None;
        self.cpu_start = cpu_start;
        let result = self.run_inner(generation, deadline, &mut vm);
        let _ = self.kit.timer.disarm();
        let _ = self.kit.cpu_timer.disarm();
        let result = result.map_err(|e| self.with_partial_output(e, vm.as_ref()));
        self.control.generation.fetch_add(1, Ordering::SeqCst);
        let result = result.and_then(|stop| {
            let status = match stop {
                Stop::Exit(status) => status,
                Stop::Snapshot(state) => {
                    let Some(vm) = vm.take() else {
                        return Err(Error::Internal { context: "snapshot without a VM".into(), source: None });
                    };
                    return Ok(Ended::Snapshot(Box::new((vm, *state, self.input.fs.export()))));
                }
            };
            let Some(vm) = vm.as_ref() else {
                return Err(Error::Internal { context: "a finished run has no VM".into(), source: None });
            };
            let rs = vm.runtime_stats().map_err(Error::from)?;
            let unknown_syscalls: BTreeMap<u32, u64> = rs
                .unknown_by_nr
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(nr, &n)| (nr as u32, n as u64))
                .collect();
            let (files, files_truncated) = self.input.collector.take();
            let stdout_bytes = (self.stdout.len() + self.streamed[0]) as u64;
            let stderr_bytes = (self.stderr.len() + self.streamed[1]) as u64;
            Ok(Ended::Output(Box::new(Output {
                status,
                stdout: std::mem::take(&mut self.stdout),
                stderr: std::mem::take(&mut self.stderr),
                stdout_truncated: self.stdout_truncated,
                stderr_truncated: self.stderr_truncated,
                fault: self.fault,
                files,
                files_truncated,
                stats: Stats {
                    wall: started.elapsed(),
                    cpu: thread_cpu_time().saturating_sub(cpu_start),
                    exits: self.exits,
                    syscalls: rs.syscalls,
                    memory_used: rs.frames_used_peak.saturating_mul(abi::PAGE_SIZE),
                    page_faults: rs.page_faults,
                    processes: rs.processes,
                    rewritten_sites: rs.rewritten_sites,
                    slow_syscalls: rs.slow_syscalls.min(rs.syscalls),
                    stdout_bytes,
                    stderr_bytes,
                    unknown_syscalls,
                },
            })))
        });
        (result, vm)
    }

    fn run_inner(&mut self, generation: u64, deadline: Instant, slot: &mut Option<Vm>) -> Result<Stop> {
        let boot_start = Instant::now();
        let vm = match (self.source.take(), &self.input.image) {
            // Start from the snapshot: reuse the last run's VM (everything
            // it changed is thrown away) or make one; no boot.
            (Some(VmSource::Snapshot { snap, kept, aid }), _) => {
                let vm = match kept {
                    Some(vm) => vm,
                    None => clone_vm(&snap, aid, None, self.config.huge_pages)?,
                };
                let vm = slot.insert(vm);
                if snap.0.from_file {
                    // Taken elsewhere, perhaps on another host: the
                    // runtime answers `cpuid` with this vCPU's leaves.
                    vm.write_cpuid_page().map_err(Error::from)?;
                }
                // The guest resumes from its snapshot hypercall: this run's
                // inputs wait in the resume area when they fit (no exit to
                // fetch them), else the guest asks for them.
                // A small stdin comes along too (no exits to read it).
                let fits = |blob: &Vec<u8>| blob.len() as u64 <= abi::RESUME_MAX - 8;
                let whole = (!self.interactive()).then_some(&self.input.stdin[..]);
                let mut blob = resume_info(vm, &self.input, whole, self.measure);
                if whole.is_some() && fits(&blob) {
                    self.stdin_pos = self.input.stdin.len();
                } else {
                    blob = resume_info(vm, &self.input, None, self.measure);
                }
                let result = if fits(&blob) {
                    let mut area = Vec::with_capacity(8 + blob.len());
                    area.extend_from_slice(&(blob.len() as u64).to_le_bytes());
                    area.extend_from_slice(&blob);
                    vm.write_bytes(abi::RESUME_GPA, &area).map_err(Error::from)?;
                    abi::hc::RESUMED_WITH_INFO
                } else {
                    abi::hc::RESUMED
                };
                vm.set_hypercall_result(result).map_err(Error::from)?;
                vm
            }
            (Some(VmSource::Blank { spare, loaded }), Some(image)) => {
                let (memory, huge) = (self.config.memory, self.config.huge_pages);
                // (Only the spare has the image loaded.)
                let (vm, loaded) = match spare {
                    Some(vm) => (vm, loaded),
                    None => match vm_factory::take_blank(memory, huge) {
                        Some(vm) => (vm, false),
                        None => (vm_factory::fresh_vm(memory, huge)?, false),
                    },
                };
                let vm = slot.insert(vm);
                let params = BootParams {
                    image: if loaded {
                        ProgramImage::Loaded { len: image.boot_image().len() }
                    } else {
                        image.boot_image()
                    },
                    argv: &self.input.argv,
                    envp: &self.input.envp,
                    random_seed: self.input.seed,
                    manifest: &self.input.manifest,
                    max_processes: self.config.max_processes,
                    max_open_files: self.config.max_open_files,
                    snapshot_at_entry: self.take == Some(SnapshotPoint::Entry),
                    image_ino: self.input.image_ino,
                };
                vm.boot(&params).map_err(|e| match e {
                    // The program file changed (got shorter) since it was checked.
                    VmError::ImageRead(e) => Error::InvalidProgram {
                        program: self.input.program.clone(),
                        reason: format!("cannot read it: {e}"),
                    },
                    e => Error::from(e),
                })?;
                vm
            }
            _ => return Err(Error::Internal { context: "a run without a program".into(), source: None }),
        };
        let mut trace = trace_enabled().then(|| Trace { boot: boot_start.elapsed(), ..Trace::default() });
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::timeout(self.config.timeout));
        }
        // A streamed run is looked at all along; another only while its
        // guest has more than one task (it says so with a SLICES hypercall;
        // a snapshot may hold several already).
        let tick = if self.streaming().is_some() { STREAM_TICK } else { SLICE_TICK };
        let slicing = self.streaming().is_some() || Self::guest_tasks(vm) > 1;
        let next_tick = Cell::new(if slicing { now + tick } else { deadline });
        self.kit.timer.arm(deadline.min(next_tick.get()) - now).map_err(Error::from)?;

        let cpu_limit = self.config.cpu_time;
        if let Some(limit) = cpu_limit {
            self.kit
                .cpu_timer
                .arm(limit.saturating_sub(thread_cpu_time().saturating_sub(self.cpu_start)))
                .map_err(Error::from)?;
        }
        let cpu_start = self.cpu_start;
        let cpu_over = || cpu_limit.is_some_and(|l| thread_cpu_time().saturating_sub(cpu_start) >= l);
        let control = self.control;
        let killed = self.live.clone();
        let is_killed = move || killed.as_ref().is_some_and(|l| l.is_killed());
        let should_stop = || {
            control.cancelled.load(Ordering::SeqCst) == generation
                || is_killed()
                || Instant::now() >= deadline
                || cpu_over()
        };
        loop {
            let now = Instant::now();
            let start_slicing = std::mem::take(&mut self.slices_asked) && next_tick.get() >= deadline;
            if start_slicing || (now >= next_tick.get() && now < deadline) {
                let keep = start_slicing || self.tick(vm, now)?;
                let tick = if self.streaming().is_some() { self.stream_tick() } else { tick };
                next_tick.set(if keep { now + tick } else { deadline });
                self.kit
                    .timer
                    .arm(deadline.min(next_tick.get()).saturating_duration_since(now))
                    .map_err(Error::from)?;
            }
            let run_start = Instant::now();
            let exit = vm.run(|| should_stop() || Instant::now() >= next_tick.get()).map_err(Error::from)?;
            if let Some(t) = trace.as_mut() {
                t.guest += run_start.elapsed();
            }
            if exit != VmExit::Interrupted {
                self.exits += 1;
            }
            if let Some(e) = jail_violation(self.control) {
                return Err(e);
            }
            match exit {
                VmExit::Hypercall(nr) => {
                    let hc_start = Instant::now();
                    let flow = self.hypercall(vm, nr, &should_stop);
                    if let Some(t) = trace.as_mut() {
                        let e = t.hypercalls.entry(nr).or_default();
                        e.0 += 1;
                        e.1 += hc_start.elapsed();
                        if !matches!(flow, Ok(None)) {
                            if let Ok(rs) = vm.runtime_stats() {
                                t.page_faults = rs.page_faults;
                                t.cr3_loads = rs.cr3_loads;
                                t.page_flushes = rs.page_flushes;
                            }
                            t.print();
                        }
                    }
                    match flow.map_err(|e| match e {
                        Error::InvalidProgram { program, reason } if program.is_empty() => {
                            Error::InvalidProgram { program: self.input.program.clone(), reason }
                        }
                        e => e,
                    })? {
                        None => {}
                        Some(stop) => return Ok(stop),
                    }
                }
                VmExit::Fault { frame, cr2 } => {
                    if vm.runtime().contains_code(frame.rip) {
                        return Err(Error::GuestCrashed {
                            detail: format!(
                                "exception {} (error {:#x}) in the runtime at {:#x}, address {cr2:#x}",
                                frame.vector, frame.error_code, frame.rip
                            ),
                        });
                    }
                    self.fault = Some(FaultInfo {
                        vector: frame.vector as u8,
                        error_code: frame.error_code,
                        rip: frame.rip,
                        address: (frame.vector == abi::vector::PAGE_FAULT).then_some(cr2),
                    });
                    return Ok(Stop::Exit(ExitStatus::Signal(signal_for_vector(frame.vector))));
                }
                VmExit::Interrupted => {
                    if control.cancelled.load(Ordering::SeqCst) == generation || is_killed() {
                        return Err(Error::cancelled());
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::timeout(self.config.timeout));
                    }
                    if let Some(limit) = cpu_limit.filter(|_| cpu_over()) {
                        return Err(Error::cpu_timeout(limit));
                    }
                }
                VmExit::Shutdown => {
                    return Err(Error::GuestCrashed {
                        detail: "triple fault (the guest's fault handling failed)".into(),
                    })
                }
                VmExit::InternalError { suberror } => {
                    return Err(Error::GuestCrashed {
                        detail: format!("KVM could not run the guest (internal error {suberror})"),
                    })
                }
                VmExit::Unexpected(what) => return Err(Error::GuestCrashed { detail: what }),
            }
        }
    }

    /// Serves hypercall `nr`: None when the guest goes on, else how it
    /// stopped; an error ends the run (a hostile request is
    /// `GuestCrashed`).
    fn hypercall(&mut self, vm: &mut Vm, nr: u64, should_stop: &dyn Fn() -> bool) -> Result<Option<Stop>> {
        let hostile = |what: String| Error::GuestCrashed { detail: what };
        let args = vm.hypercall_args().map_err(Error::from)?.args;
        match nr {
            abi::hc::WRITE => {
                let (fd, va, len) = (args[0], args[1], args[2]);
                let gpa = vm
                    .physmap_range(va, len, abi::HCALL_MAX_LEN)
                    .map_err(|_| hostile(format!("write hypercall with a bad buffer {va:#x}+{len:#x}")))?;
                if fd != 1 && fd != 2 {
                    return Err(hostile(format!("write hypercall to stream {fd}")));
                }
                let full = if self.append_output(vm, fd, gpa, len, should_stop)? { abi::WRITE_STREAM_FULL } else { 0 };
                vm.set_hypercall_result(full).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::READ => {
                let (va, len) = (args[1], args[2]);
                let gpa = vm
                    .physmap_range(va, len, abi::HCALL_MAX_LEN)
                    .map_err(|_| hostile(format!("read hypercall with a bad buffer {va:#x}+{len:#x}")))?;
                let stdin = &self.input.stdin;
                let rest = &stdin[self.stdin_pos.min(stdin.len())..];
                let n = rest.len().min(len as usize);
                let ret = match &self.live {
                    Some(live) if n == 0 && self.interactive() => match live.read_input(len as usize) {
                        Input::Bytes(b) => {
                            vm.write_bytes(gpa, &b).map_err(Error::from)?;
                            b.len() as u64
                        }
                        Input::End => 0,
                        Input::NothingYet => {
                            self.input_awaited = true;
                            abi::READ_NOTHING_YET
                        }
                    },
                    _ => {
                        vm.write_bytes(gpa, &rest[..n]).map_err(Error::from)?;
                        self.stdin_pos += n;
                        n as u64
                    }
                };
                vm.set_hypercall_result(ret).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::EXIT => {
                let (code, signal) = (args[0] as i32 & 0xff, args[1]);
                // The run's last output comes with the exit (args[2]: where
                // the runtime's output buffers are).
                for b in guest_buffers(vm, args[2]) {
                    self.append_output(vm, b.fd, b.data, b.len, should_stop)?;
                }
                Ok(Some(Stop::Exit(if signal != 0 && signal < 65 {
                    ExitStatus::Signal(signal as i32)
                } else {
                    ExitStatus::Code(code)
                })))
            }
            abi::hc::PROGRAM_FAULT => {
                // The guest's own account of its program's fault: it can
                // only choose how its program dies, so it is taken as said
                // once the vector is checked.
                let [vector, error_code, rip, cr2, _rsp, _] = args;
                if vector >= 32 {
                    return Err(hostile(format!("fault report with vector {vector}")));
                }
                self.fault = Some(FaultInfo {
                    vector: vector as u8,
                    error_code,
                    rip,
                    address: (vector == abi::vector::PAGE_FAULT).then_some(cr2),
                });
                Ok(Some(Stop::Exit(ExitStatus::Signal(signal_for_vector(vector)))))
            }
            abi::hc::SNAPSHOT => {
                if self.take.is_some() && !self.restored {
                    // Guests restored from this snapshot read RESUMED here
                    // (or RESUMED_WITH_INFO, set when they start).
                    vm.set_hypercall_result(abi::hc::RESUMED).map_err(Error::from)?;
                    vm.complete_pending_exit().map_err(Error::from)?;
                    let state = vm.save_vcpu().map_err(Error::from)?;
                    return Ok(Some(Stop::Snapshot(Box::new(state))));
                }
                // Not taking a snapshot: the guest goes on.
                vm.set_hypercall_result(0).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::RESUME_INFO => {
                let (va, len) = (args[0], args[1]);
                let blob = resume_info(vm, &self.input, None, self.measure);
                if !self.restored {
                    return Err(hostile("resume info asked for by a guest that was not restored".into()));
                }
                if blob.len() as u64 <= len {
                    vm.write_virt(va, &blob).map_err(|_| hostile(format!("resume info to a bad buffer {va:#x}")))?;
                }
                vm.set_hypercall_result(blob.len() as u64).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::OUT_OF_MEMORY => {
                Err(Error::MemoryLimitExceeded { limit: self.config.memory, partial: Box::default() })
            }
            abi::hc::EXEC_FAILED => {
                let (va, len) = (args[1], args[2].min(1024));
                let mut msg = vec![0u8; len as usize];
                if let Ok(gpa) = vm.physmap_range(va, len, 1024) {
                    let _ = vm.read_bytes(gpa, &mut msg);
                }
                // The caller names the program.
                Err(Error::InvalidProgram {
                    program: String::new(),
                    reason: String::from_utf8_lossy(&msg).into_owned(),
                })
            }
            abi::hc::PANIC => {
                let (va, len) = (args[1], args[2].min(1024));
                let mut msg = vec![0u8; len as usize];
                if let Ok(gpa) = vm.physmap_range(va, len, 1024) {
                    let _ = vm.read_bytes(gpa, &mut msg);
                }
                Err(hostile(format!("runtime panic: {}", String::from_utf8_lossy(&msg))))
            }
            abi::hc::SLEEP => {
                match self.live.clone() {
                    Some(live) if self.streaming().is_some() => {
                        // The guest waits: what it wrote goes out first.
                        self.take_guest_output(vm, &live)?;
                        let until = Instant::now().checked_add(Duration::from_nanos(args[0]));
                        let until_input = args[1] & abi::SLEEP_UNTIL_INPUT != 0;
                        // A tick may have told the guest input came (the
                        // flag raised, `input_awaited` cleared) after it last
                        // looked and before it chose to sleep: it must not
                        // sleep past news it has not seen (that lost wake-up
                        // left a reader waiting until the deadline).
                        let untold = vm.hypercall_args().map_err(Error::from)?.host_flags & abi::HOST_FLAG_STDIN != 0;
                        if !(until_input && untold) {
                            live.sleep(until, until_input && self.input_awaited, should_stop);
                        }
                        self.tell_input(vm, &live)?;
                        // Awake again: it may answer what woke it.
                        self.quiet_looks = 0;
                    }
                    _ => sleep_interruptible(Duration::from_nanos(args[0]), should_stop),
                }
                vm.set_hypercall_result(0).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::SLICES => {
                self.slices_asked = true;
                vm.set_hypercall_result(0).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::LOG => {
                vm.set_hypercall_result(0).map_err(Error::from)?;
                Ok(None)
            }
            abi::hc::FS_LOOKUP..=abi::hc::FILE_OUT | abi::hc::FS_READ_FRAMES | abi::hc::FS_WALK => {
                let ret = self.fs_hypercall(vm, nr, args)?;
                vm.set_hypercall_result(ret).map_err(Error::from)?;
                Ok(None)
            }
            other => Err(hostile(format!("unknown hypercall {other:#x}"))),
        }
    }
}

/// What a restored guest learns about its run: clocks, fresh randomness,
/// argv/envp, the run's filesystem manifest, and (`stdin`) all of its
/// input when that comes along; `measure`: the pages the run touches are
/// measured.
fn resume_info(vm: &Vm, boot: &Prepared, stdin: Option<&[u8]>, measure: bool) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut args = Vec::new();
    for s in boot.argv.iter().chain(&boot.envp) {
        args.extend_from_slice(s);
        args.push(0);
    }
    let info = abi::ResumeInfo {
        tsc_khz: vm.tsc_khz_value(),
        // SAFETY: rdtsc has no preconditions.
        tsc: unsafe { core::arch::x86_64::_rdtsc() },
        realtime_ns: now.as_nanos() as u64,
        random_seed: boot.seed,
        argc: boot.argv.len() as u32,
        envc: boot.envp.len() as u32,
        args_len: args.len() as u64,
        manifest_len: boot.manifest.len() as u64,
        stdin_len: stdin.map_or(0, |s| s.len() as u64),
        flags: if stdin.is_some() { abi::RESUME_STDIN_WHOLE } else { 0 }
            | if measure { abi::RESUME_MEASURE_TOUCHED } else { 0 },
    };
    // SAFETY: ResumeInfo is repr(C) integers; viewing it as bytes is fine.
    let head = unsafe {
        std::slice::from_raw_parts(
            (&info as *const abi::ResumeInfo).cast::<u8>(),
            std::mem::size_of::<abi::ResumeInfo>(),
        )
    };
    let mut out = head.to_vec();
    out.extend_from_slice(&args);
    out.extend_from_slice(&boot.manifest);
    out.extend_from_slice(stdin.unwrap_or_default());
    out
}

/// Per-run timing printed to stderr when `HVSANDBOX_TRACE` is set: a
/// debugging aid for finding where a run spends its time.
#[derive(Default)]
struct Trace {
    boot: Duration,
    guest: Duration,
    page_faults: u64,
    cr3_loads: u64,
    page_flushes: u64,
    hypercalls: std::collections::BTreeMap<u64, (u64, Duration)>,
}

impl Trace {
    fn print(&self) {
        let mut line = format!(
            "hvsandbox trace: boot {:?}, in guest {:?}, page faults {}, cr3 loads {}, page flushes {}",
            self.boot, self.guest, self.page_faults, self.cr3_loads, self.page_flushes
        );
        for (nr, (n, d)) in &self.hypercalls {
            line.push_str(&format!(", hc{nr} x{n} {d:?}"));
        }
        eprintln!("{line}");
    }
}

fn trace_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("HVSANDBOX_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Sleeps up to `d`, returning early when `should_stop` turns true (the
/// kick signal interrupts the sleep).
fn sleep_interruptible(d: Duration, should_stop: &dyn Fn() -> bool) {
    // An "infinite" sleep (no end representable) lasts until the deadline.
    let end = Instant::now().checked_add(d);
    loop {
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) || should_stop() {
            return;
        }
        let left = end.map_or(Duration::MAX, |end| end - now).min(Duration::from_millis(50));
        let ts =
            libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long };
        // SAFETY: nanosleep reads the timespec we own; a null remainder is allowed.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}
