"""Exceptions: one class per stable error code of the Rust API.

Every sandbox failure is a :class:`SandboxError` whose ``code`` is the Rust
``ErrorKind::code()`` string. Classes also derive from the standard library's
exception for the same situation where there is one, so code written for
``subprocess`` keeps working. A run stopped by a limit or a kill carries
the output it produced until then (``stdout``/``output`` and ``stderr``).
"""

from __future__ import annotations

import subprocess
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "SandboxError",
    "TimeoutExpired",
    "Cancelled",
    "MemoryLimitExceeded",
    "OutputLimitExceeded",
    "GuestCrashed",
    "InvalidProgram",
    "InvalidConfig",
    "KvmUnavailable",
    "SandboxPoisoned",
    "SandboxBusy",
    "SnapshotInvalid",
    "JailViolation",
    "InternalError",
    "SandboxClosed",
    "CalledProcessError",
]


class SandboxError(Exception):
    """A run that did not complete, or a sandbox that could not be used."""

    #: Stable code of the error kind (the Rust ``ErrorKind::code()``).
    code: str = "SANDBOX_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        stdout: Optional[bytes] = None,
        stderr: Optional[bytes] = None,
        info: Optional[Mapping[str, Any]] = None,
    ) -> None:
        Exception.__init__(self, message)
        self.message = message
        if code is not None:
            self.code = code
        #: The partial stdout of a stopped run (None if the error has none).
        self.output: Optional[bytes] = stdout
        #: The partial stderr of a stopped run.
        self.stderr: Optional[bytes] = stderr
        #: The error's fields (e.g. ``limit``, ``stream``, ``program``).
        self.info: Dict[str, Any] = dict(info or {})
        #: The arguments of the run, when known.
        self.cmd: Any = None

    @property
    def stdout(self) -> Optional[bytes]:
        """Alias of ``output``, as on ``subprocess.TimeoutExpired``."""
        return self.output

    @stdout.setter
    def stdout(self, value: Optional[bytes]) -> None:
        self.output = value

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.message, self.code, self.output, self.stderr, self.info))


def _rebuild(cls: Type[SandboxError], message: str, code: str, stdout: Any, stderr: Any, info: Any) -> SandboxError:
    return cls(message, code=code, stdout=stdout, stderr=stderr, info=info)


class TimeoutExpired(SandboxError, subprocess.TimeoutExpired, TimeoutError):
    """The run exceeded its wall-clock ``timeout`` (or its ``cpu_time``
    when ``cpu`` is true). Also a ``subprocess.TimeoutExpired`` and a
    ``TimeoutError``; ``timeout`` is the limit in seconds."""

    code = "TIMEOUT"

    def __init__(self, message: str, **kw: Any) -> None:
        SandboxError.__init__(self, message, **kw)
        self.timeout: float = float(self.info.get("limit", 0.0))
        #: True if the limit was on guest CPU time, not wall-clock time.
        self.cpu: bool = bool(self.info.get("cpu", False))


class Cancelled(SandboxError):
    """The run was stopped by ``kill()`` (or its awaiting task was cancelled)."""

    code = "CANCELLED"


class MemoryLimitExceeded(SandboxError):
    """The program needed more memory than the sandbox has."""

    code = "MEMORY_LIMIT_EXCEEDED"


class OutputLimitExceeded(SandboxError):
    """A stream exceeded ``max_output`` with ``fail_on_output_limit=True``."""

    code = "OUTPUT_LIMIT_EXCEEDED"


class GuestCrashed(SandboxError):
    """The guest runtime itself failed (a program's fault is a signal exit)."""

    code = "GUEST_CRASHED"


class InvalidProgram(SandboxError):
    """The program cannot run: not found, not an x86-64 ELF, unreadable."""

    code = "INVALID_PROGRAM"


class InvalidConfig(SandboxError, ValueError):
    """A setting is out of range or inconsistent (also a ``ValueError``)."""

    code = "INVALID_CONFIG"


class KvmUnavailable(SandboxError):
    """/dev/kvm is missing or not accessible; the message says what to do."""

    code = "KVM_UNAVAILABLE"


class SandboxPoisoned(SandboxError):
    """An earlier failure made the sandbox unusable: create a new one."""

    code = "SANDBOX_POISONED"


class SandboxBusy(SandboxError):
    """The sandbox still runs a spawned process: wait for it or kill it."""

    code = "SANDBOX_BUSY"


class SnapshotInvalid(SandboxError):
    """A snapshot file is not one, is corrupted or is for another build,
    or a run meant to take a snapshot ended first."""

    code = "SNAPSHOT_INVALID"


class JailViolation(SandboxError):
    """The vCPU thread made a system call its seccomp filter forbids."""

    code = "JAIL_VIOLATION"


class InternalError(SandboxError):
    """An unexpected host-side failure."""

    code = "INTERNAL"


class SandboxClosed(SandboxError, ValueError):
    """The sandbox or pool was closed (also a ``ValueError``, like I/O on
    a closed file). Its code, ``SANDBOX_CLOSED``, is the Python package's
    own."""

    code = "SANDBOX_CLOSED"


class CalledProcessError(subprocess.CalledProcessError):
    """``check=True`` and the program exited non-zero or died of a signal.
    A ``subprocess.CalledProcessError``; ``result`` is the whole
    :class:`~hvsandbox.CompletedRun`."""

    def __init__(self, result: Any) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.result = result

    def __reduce__(self) -> Any:
        return (type(self), (self.result,))


_BY_CODE: Dict[str, Type[SandboxError]] = {
    cls.code: cls
    for cls in (
        TimeoutExpired,
        Cancelled,
        MemoryLimitExceeded,
        OutputLimitExceeded,
        GuestCrashed,
        InvalidProgram,
        InvalidConfig,
        KvmUnavailable,
        SandboxPoisoned,
        SandboxBusy,
        SnapshotInvalid,
        JailViolation,
        InternalError,
        SandboxClosed,
    )
}


def make_error(code: str, message: str, info: Dict[str, Any]) -> SandboxError:
    """The exception for an error of the native module (its factory)."""
    cls = _BY_CODE.get(code, SandboxError)
    return cls(message, code=code, stdout=info.pop("stdout", None), stderr=info.pop("stderr", None), info=info)
