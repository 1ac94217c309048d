"""hvsandbox: run untrusted Linux programs in millisecond KVM micro-VMs,
with ``subprocess`` habits.

>>> import hvsandbox
>>> r = hvsandbox.run(["/bin/busybox", "echo", "hi"], timeout=2, memory="64M")
>>> r.returncode, r.stdout
(0, b'hi\\n')
"""

from __future__ import annotations

from . import _errors, _native
from ._async import AsyncProcess, AsyncProcessOutput, AsyncProcessStdin, AsyncSandbox, run_async
from ._errors import (
    CalledProcessError,
    Cancelled,
    GuestCrashed,
    InternalError,
    InvalidConfig,
    InvalidProgram,
    JailViolation,
    KvmUnavailable,
    MemoryLimitExceeded,
    OutputLimitExceeded,
    SandboxBusy,
    SandboxClosed,
    SandboxError,
    SandboxPoisoned,
    SnapshotInvalid,
    TimeoutExpired,
)
from ._native import DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY, DEFAULT_TIMEOUT, FaultInfo, Snapshot, Stats, set_blank_vms
from ._options import File, Mount, parse_duration, parse_size
from ._sync import CompletedRun, Event, Process, ProcessOutput, ProcessStdin, Sandbox, SandboxPool, run

__version__: str = _native.__version__

_native.set_error_factory(_errors.make_error)

__all__ = [
    "AsyncProcess",
    "AsyncProcessOutput",
    "AsyncProcessStdin",
    "AsyncSandbox",
    "CalledProcessError",
    "Cancelled",
    "CompletedRun",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_MEMORY",
    "DEFAULT_TIMEOUT",
    "Event",
    "FaultInfo",
    "File",
    "GuestCrashed",
    "InternalError",
    "InvalidConfig",
    "InvalidProgram",
    "JailViolation",
    "KvmUnavailable",
    "MemoryLimitExceeded",
    "Mount",
    "OutputLimitExceeded",
    "Process",
    "ProcessOutput",
    "ProcessStdin",
    "Sandbox",
    "SandboxBusy",
    "SandboxClosed",
    "SandboxError",
    "SandboxPool",
    "SandboxPoisoned",
    "Snapshot",
    "SnapshotInvalid",
    "Stats",
    "TimeoutExpired",
    "parse_duration",
    "parse_size",
    "run",
    "run_async",
    "set_blank_vms",
]
