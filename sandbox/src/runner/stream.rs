//! The host's periodic look at a running guest (it takes no timer
//! interrupts): a spawned process's output passed on as it is produced
//! (from the guest's write hypercalls and from its buffers), input
//! announced, and time slices ended while the guest has several tasks.

use std::time::{Duration, Instant};

use hvsandbox_core::{abi, Vm};

use super::{Runner, Stream};
use crate::error::{Error, Result};
use crate::live::Live;

impl Runner<'_> {
    /// Passes `len` bytes of guest memory at `gpa` of stream `fd` to the
    /// process's reader, waiting while it is behind (with `stop`, until
    /// it turns true): as `append_output`, counting against `max_output`
    /// unless unlimited.
    pub(super) fn stream_out(
        &mut self,
        vm: &Vm,
        live: &Live,
        fd: u64,
        gpa: u64,
        len: u64,
        stop: Option<&dyn Fn() -> bool>,
    ) -> Result<bool> {
        let i = (fd == 2) as usize;
        let unlimited = matches!(self.stream, Stream::Live { unlimited: true, .. });
        let room = if unlimited { usize::MAX } else { self.config.max_output.saturating_sub(self.streamed[i]) };
        let take = (len as usize).min(room);
        if take > 0 {
            let mut bytes = vec![0u8; take];
            vm.read_bytes(gpa, &mut bytes).map_err(Error::from)?;
            self.streamed[i] += take;
            live.push_output(fd, bytes, stop);
        }
        if take == len as usize {
            return Ok(false);
        }
        if i == 0 {
            self.stdout_truncated = true;
        } else {
            self.stderr_truncated = true;
        }
        if self.config.output_limit_error {
            let stream = if fd == 1 { "stdout" } else { "stderr" };
            return Err(Error::OutputLimitExceeded { stream, limit: self.config.max_output, partial: Box::default() });
        }
        Ok(true)
    }

    /// Where the runtime's output buffers are (published at its start).
    pub(super) fn out_buffers(vm: &Vm) -> u64 {
        let at = abi::STATS_GPA + std::mem::offset_of!(abi::RuntimeStats, out_buffers_gpa) as u64;
        vm.read_obj::<u64>(at).unwrap_or(0)
    }

    /// Passes what the guest has buffered to the process's reader now,
    /// for each stream the runtime is not changing at this instant (it
    /// marks its buffer while it does; the vCPU is stopped) and that the
    /// reader has room for. Returns whether there was output, and
    /// whether a stream was left for the runtime to send.
    pub(super) fn take_guest_output(&mut self, vm: &Vm, live: &Live) -> Result<(bool, bool)> {
        let (mut some, mut left) = (false, false);
        for b in guest_buffers(vm, Self::out_buffers(vm)) {
            some = true;
            if b.writing || !live.has_room(b.fd) {
                left = true;
                continue;
            }
            let full = self.stream_out(vm, live, b.fd, b.data, b.len, None)?;
            vm.write_bytes(b.header, &0u64.to_le_bytes()).map_err(Error::from)?;
            if full {
                let discard = std::mem::offset_of!(abi::OutBuffer, discard) as u64;
                vm.write_bytes(b.header + discard, &1u64.to_le_bytes()).map_err(Error::from)?;
            }
        }
        Ok((some, left))
    }

    /// The guest's task count at its last system call (see
    /// [`abi::RuntimeStats::tasks`]).
    pub(super) fn guest_tasks(vm: &Vm) -> u64 {
        let at = abi::STATS_GPA + std::mem::offset_of!(abi::RuntimeStats, tasks) as u64;
        vm.read_obj::<u64>(at).unwrap_or(0)
    }

    /// The periodic look at a run's guest at `now`: end the program's time
    /// slice if another task could run and the slice has lasted
    /// `SLICE_TICK`; for a streamed run (looked at more often), also pass
    /// its output on (or, for a stream the runtime is changing, ask it to
    /// send it at its next system call) and tell it input came. Returns
    /// whether to look again (a run that is not streamed: while it has
    /// several tasks).
    pub(super) fn tick(&mut self, vm: &mut Vm, now: Instant) -> Result<bool> {
        if let Some(live) = self.streaming().cloned() {
            let told = self.tell_input(vm, &live)?;
            let (some, left) = self.take_guest_output(vm, &live)?;
            if left {
                vm.raise_host_flags(abi::HOST_FLAG_FLUSH).map_err(Error::from)?;
            }
            self.quiet_looks = if told || some { 0 } else { self.quiet_looks.saturating_add(1) };
        }
        let several = Self::guest_tasks(vm) > 1;
        // (A preemption costs the guest an exit and two address-space
        // switches, ~0.1 ms here: every 2 ms, a shell's loop of short
        // processes lost a tenth of its time to them.)
        if several && now.saturating_duration_since(self.slice_began) >= super::SLICE_TICK {
            self.slice_began = now;
            if !vm.preempt().map_err(Error::from)? {
                // Stopped inside the runtime: it yields at its next system call.
                vm.raise_host_flags(abi::HOST_FLAG_YIELD).map_err(Error::from)?;
            }
        }
        Ok(several || self.streaming().is_some())
    }

    /// Tells the guest input came, if it was told there was none; returns
    /// whether it told it.
    pub(super) fn tell_input(&mut self, vm: &Vm, live: &Live) -> Result<bool> {
        if self.input_awaited && live.input_ready() {
            self.input_awaited = false;
            vm.raise_host_flags(abi::HOST_FLAG_STDIN).map_err(Error::from)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// How long until the next look at a streamed run's guest:
    /// `STREAM_TICK` while output flows or input comes, twice as long
    /// after each look that found neither, up to `SLICE_TICK`. (A look
    /// costs the guest an exit, ~70 µs here: at every 2 ms, a program
    /// computing in silence lost 3.5% of its time to them.)
    pub(super) fn stream_tick(&self) -> Duration {
        (super::STREAM_TICK * (1 << self.quiet_looks.min(3))).min(super::SLICE_TICK)
    }
}

/// One of the runtime's output buffers with bytes in it.
pub(super) struct GuestBuffer {
    /// The stream: 1 or 2.
    pub(super) fd: u64,
    /// Guest-physical addresses of the buffer (its header) and its bytes.
    pub(super) header: u64,
    pub(super) data: u64,
    pub(super) len: u64,
    /// The runtime was changing it when the vCPU stopped.
    pub(super) writing: bool,
}

/// The output the guest runtime has buffered and not sent, for each
/// stream with something to take, given where the two
/// [`abi::OutBuffer`]s are (guest-physical). Every value read from the
/// guest is checked (a bad one yields nothing).
pub(super) fn guest_buffers(vm: &Vm, buffers: u64) -> Vec<GuestBuffer> {
    let mut found = Vec::new();
    if buffers == 0 {
        return found;
    }
    let stride = std::mem::size_of::<abi::OutBuffer>() as u64;
    let data_at = std::mem::offset_of!(abi::OutBuffer, data);
    for fd in 1..=2u64 {
        let Some(header) = buffers.checked_add((fd - 1) * stride) else { break };
        let mut head = [0u8; 24];
        if vm.read_bytes(header, &mut head[..data_at]).is_err() {
            break;
        }
        let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
        let (len, discard) = (word(0), word(8));
        let writing = word(std::mem::offset_of!(abi::OutBuffer, writing)) != 0;
        if discard == 0 && len > 0 && len <= abi::OUT_BUF_SIZE as u64 {
            found.push(GuestBuffer { fd, header, data: header + data_at as u64, len, writing });
        }
    }
    found
}
