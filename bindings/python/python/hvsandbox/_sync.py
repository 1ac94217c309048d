"""The synchronous API: ``run``, ``Sandbox``, ``Process``, ``SandboxPool``."""

from __future__ import annotations

import codecs
import functools
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _native, _options, _threads
from ._errors import CalledProcessError, SandboxError
from ._native import FaultInfo, Snapshot, Stats
from ._options import Data, Duration, File, Mount, PathLike, Size, StrOrBytes

__all__ = ["CompletedRun", "Event", "Process", "ProcessStdin", "ProcessOutput", "Sandbox", "SandboxPool", "run"]

Args = Sequence[Union[str, bytes, PathLike]]
Output = Union[bytes, str]
Callback = Callable[[Any], object]


class CompletedRun:
    """The result of a run that completed, whatever the program's status;
    shaped like ``subprocess.CompletedProcess``."""

    __slots__ = (
        "args",
        "returncode",
        "stdout",
        "stderr",
        "stats",
        "signal",
        "stdout_truncated",
        "stderr_truncated",
        "fault",
        "files",
        "files_truncated",
    )

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: Output,
        stderr: Output,
        stats: Stats,
        *,
        signal: Optional[int] = None,
        stdout_truncated: bool = False,
        stderr_truncated: bool = False,
        fault: Optional[FaultInfo] = None,
        files: Optional[Dict[str, bytes]] = None,
        files_truncated: bool = False,
    ) -> None:
        #: The arguments the run was given.
        self.args = args
        #: The exit code, or -N for death by signal N (as ``subprocess``).
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        #: Statistics: wall and CPU seconds, syscalls, memory, ...
        self.stats = stats
        #: The signal that ended the program, if one did.
        self.signal = signal
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        #: Where the program faulted, when a CPU exception ended it.
        self.fault = fault
        #: Files sent back (``collect=``), by guest path.
        self.files: Dict[str, bytes] = files if files is not None else {}
        self.files_truncated = files_truncated

    @property
    def truncated(self) -> bool:
        """True if stdout or stderr was cut at ``max_output``."""
        return self.stdout_truncated or self.stderr_truncated

    def check_returncode(self) -> None:
        """Raises :class:`CalledProcessError` if the exit code is not 0."""
        if self.returncode != 0:
            raise CalledProcessError(self)

    def __repr__(self) -> str:
        return (
            f"CompletedRun(args={self.args!r}, returncode={self.returncode!r}, "
            f"stdout={self.stdout!r}, stderr={self.stderr!r})"
        )


class _Text:
    """How a run's output is given back: bytes, or text decoded with
    ``encoding`` and ``errors`` (``text=True`` means UTF-8)."""

    __slots__ = ("encoding", "errors")

    def __init__(self, text: bool, encoding: Optional[str], errors: Optional[str]) -> None:
        self.encoding = encoding or ("utf-8" if text or errors else None)
        self.errors = errors or "strict"
        if self.encoding is not None:
            codecs.lookup(self.encoding)

    def decode(self, data: bytes) -> Output:
        return data if self.encoding is None else data.decode(self.encoding, self.errors)

    def decoder(self) -> Callable[[bytes, bool], Output]:
        if self.encoding is None:
            return _as_is
        decode: Callable[[bytes, bool], str] = codecs.getincrementaldecoder(self.encoding)(self.errors).decode
        return decode


def _as_is(data: bytes, final: bool = False) -> Output:
    return data


def _completed(args: Any, out: Tuple[Any, ...], text: _Text, prefix: Tuple[bytes, bytes] = (b"", b"")) -> CompletedRun:
    code, signal, stdout, stderr, stdout_trunc, stderr_trunc, fault, files, files_trunc, stats = out
    return CompletedRun(
        args,
        code if code is not None else -(signal or 0),
        text.decode(prefix[0] + stdout if prefix[0] else stdout),
        text.decode(prefix[1] + stderr if prefix[1] else stderr),
        stats,
        signal=signal,
        stdout_truncated=stdout_trunc,
        stderr_truncated=stderr_trunc,
        fault=fault,
        files=files,
        files_truncated=files_trunc,
    )


class Event(NamedTuple):
    """A chunk of output of a spawned process: ``stream`` is "stdout" or
    "stderr"; ``data`` bytes (str in text mode)."""

    stream: str
    data: Output


_STREAMS = ("", "stdout", "stderr")


class ProcessStdin:
    """A spawned process's stdin: ``write`` waits while the guest is behind
    (bounded); ``close`` is the end of input."""

    def __init__(self, native: _native.Process, text: _Text) -> None:
        self._native = native
        self._encoding = text.encoding or "utf-8"
        self.closed = False

    def write(self, data: Data) -> int:
        """Writes all of ``data`` (str is encoded); returns its length.
        Raises ``BrokenPipeError`` once the process has ended."""
        if self.closed:
            raise ValueError("write to a closed stdin")
        raw = data.encode(self._encoding) if isinstance(data, str) else _options.to_bytes(data, "data")
        self._native.write_stdin(raw)
        return len(data)

    def writelines(self, lines: Sequence[Data]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Written data is already on its way: nothing to do."""

    def close(self) -> None:
        """Ends the program's input (its reads return 0 once it has read
        what was written)."""
        if not self.closed:
            self.closed = True
            self._native.close_stdin()

    def __enter__(self) -> "ProcessStdin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ProcessOutput:
    """One output stream of a spawned process, read as it is produced:
    ``read()`` and line iteration. What is read here is not in events or
    in ``wait()``'s result."""

    def __init__(self, native: _native.Process, fd: int, text: _Text) -> None:
        self._native = native
        self._fd = fd
        self._text = text
        self._decode = text.decoder()

    def read(self, size: int = -1) -> Output:
        """Up to ``size`` bytes, waiting for some (all of it to the end
        with ``size`` < 0); empty at the end."""
        if size < 0:
            parts = []
            while True:
                chunk = self._native.read(self._fd, 1 << 16)
                if not chunk:
                    break
                parts.append(chunk)
            return self._decode(b"".join(parts), True)
        return self._decode(self._native.read(self._fd, size), False)

    def __iter__(self) -> Iterator[Output]:
        """Lines as they are written (with their newline)."""
        pending = b""
        while True:
            chunk = self._native.read(self._fd, 1 << 16)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield self._decode(line + b"\n", False)
        if pending:
            yield self._decode(pending, True)


class Process:
    """A program running in a sandbox (from :meth:`Sandbox.spawn`): its
    output as it is produced (iterate it, or ``stdout``/``stderr``), its
    ``stdin`` while it runs, ``kill()`` from any thread, ``wait()``."""

    def __init__(self, native: _native.Process, args: Any, text: _Text, owner: Any) -> None:
        self._native = native
        self._text = text
        # The sandbox must outlive its process (closing it kills the process).
        self._owner = owner
        self.args = args
        #: The exit status once known (as ``CompletedRun.returncode``).
        self.returncode: Optional[int] = None
        self.stdin = ProcessStdin(native, text)
        self.stdout = ProcessOutput(native, 1, text)
        self.stderr = ProcessOutput(native, 2, text)
        self._decoders = (text.decoder(), text.decoder())

    def __iter__(self) -> Iterator[Event]:
        """Output chunks of both streams in the order written, to the end."""
        while True:
            fd, data = self._native.next_event()
            if fd == 0 or data is None:
                return
            yield Event(_STREAMS[fd], self._decoders[fd - 1](data, False))

    def try_next_event(self) -> Optional[Event]:
        """The next output chunk if one is there, without waiting; None
        when there is none yet (or the output has ended, or another thread
        is waiting for events)."""
        ev = self._native.try_next_event()
        if ev is None:
            return None
        fd, data = ev
        if fd == 0 or data is None:
            return None
        return Event(_STREAMS[fd], self._decoders[fd - 1](data, False))

    def wait(self, *, check: bool = False) -> CompletedRun:
        """Waits for the end: the run's result holding what was not read
        through events or streams; raises the run's error. Closes stdin
        first unless it was written to or closed."""
        try:
            out = self._native.wait()
        except SandboxError as e:
            e.cmd = self.args
            raise
        result = _completed(self.args, out, self._text)
        self.returncode = result.returncode
        if check:
            result.check_returncode()
        return result

    def poll(self) -> Optional[int]:
        """The return code if the process has ended, else None; raises
        the run's error if it did not complete."""
        status = self._native.try_wait()
        if status is not None:
            code, signal = status
            self.returncode = code if code is not None else -(signal or 0)
        return self.returncode

    def kill(self) -> None:
        """Stops the program now (callable from any thread); ``wait()``
        then raises :class:`Cancelled` with the partial output."""
        self._native.kill()

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        try:
            self._native.wait()
        except SandboxError:
            pass


class Sandbox:
    """A sandbox: runs programs one at a time, each in a fresh micro-VM
    (or from its snapshot). Use it as a context manager; any thread may
    use it (calls take turns) and ``kill()`` works while another thread
    waits in ``run``."""

    def __init__(
        self,
        *,
        memory: Optional[Size] = None,
        timeout: Optional[Duration] = None,
        cpu_time: Optional[Duration] = None,
        max_output: Optional[Size] = None,
        fail_on_output_limit: bool = False,
        env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
        cwd: Optional[str] = None,
        files: Optional[Mapping[str, Union[Data, File]]] = None,
        mounts: Optional[Mapping[str, Union[PathLike, Mount]]] = None,
        seccomp: Optional[str] = None,
        huge_pages: Optional[str] = None,
        max_processes: Optional[int] = None,
        max_open_files: Optional[int] = None,
        max_input: Optional[Size] = None,
        max_collect_bytes: Optional[Size] = None,
        max_collect_files: Optional[int] = None,
        _snapshot: Optional[Snapshot] = None,
        _native_sandbox: Optional[_native.Sandbox] = None,
    ) -> None:
        if _native_sandbox is not None:
            self._native = _native_sandbox
            return
        if _snapshot is not None and not isinstance(_snapshot, Snapshot):
            raise TypeError(f"snapshot must be a hvsandbox.Snapshot, not {type(_snapshot).__name__}")
        options = _options.sandbox_options(
            memory=memory,
            timeout=timeout,
            cpu_time=cpu_time,
            max_output=max_output,
            fail_on_output_limit=fail_on_output_limit,
            env=env,
            cwd=cwd,
            files=files,
            mounts=mounts,
            seccomp=seccomp,
            huge_pages=huge_pages,
            max_processes=max_processes,
            max_open_files=max_open_files,
            max_input=max_input,
            max_collect_bytes=max_collect_bytes,
            max_collect_files=max_collect_files,
        )
        self._native = _native.Sandbox(options, _snapshot)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, **options: Any) -> "Sandbox":
        """A sandbox whose runs all start from ``snapshot``; ``run(args)``
        passes ``args`` to the resumed program. Memory, ``max_processes``
        and ``max_open_files`` are the snapshot's; the snapshot's mount
        points need host directories (``mounts=``) when it was loaded
        from a file."""
        return cls(_snapshot=snapshot, **options)

    def _command(self, args: Optional[Args], **kw: Any) -> _native.Command:
        resume = self._native.from_snapshot
        if args is None and not resume:
            raise TypeError("args is required: the program and its arguments, e.g. ['/bin/busybox', 'true']")
        return _options.command(args, resume=resume, **kw)

    def run(
        self,
        args: Optional[Args] = None,
        *,
        input: Optional[Data] = None,
        env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
        env_clear: bool = False,
        cwd: Optional[str] = None,
        files: Optional[Mapping[str, Union[Data, File]]] = None,
        collect: Optional[Sequence[str]] = None,
        image: Optional[Data] = None,
        check: bool = False,
        text: bool = False,
        encoding: Optional[str] = None,
        errors: Optional[str] = None,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
    ) -> CompletedRun:
        """Runs a program to completion. A non-zero exit is data
        (``returncode``) unless ``check=True``. ``on_stdout``/``on_stderr``
        are called with each chunk of output as it is produced (the
        result still holds all of it)."""
        mode = _Text(text, encoding, errors)
        streaming = on_stdout is not None or on_stderr is not None
        for name, cb in (("on_stdout", on_stdout), ("on_stderr", on_stderr)):
            if cb is not None and not callable(cb):
                raise TypeError(f"{name} must be callable")
        cmd = self._command(
            args,
            input=b"" if streaming and input is None else input,
            env=env,
            env_clear=env_clear,
            cwd=cwd,
            files=files,
            collect=collect,
            image=image,
            encoding=mode.encoding,
        )
        if streaming:
            result = self._run_streaming(args, cmd, mode, on_stdout, on_stderr)
        else:
            try:
                out = self._native.run(cmd)
            except SandboxError as e:
                e.cmd = args
                raise
            result = _completed(args, out, mode)
        if check:
            result.check_returncode()
        return result

    def _run_streaming(
        self, args: Any, cmd: _native.Command, mode: _Text, on_stdout: Optional[Callback], on_stderr: Optional[Callback]
    ) -> CompletedRun:
        p = self._native.spawn(cmd)
        taken: Tuple[List[bytes], List[bytes]] = ([], [])
        decoders = (mode.decoder(), mode.decoder())
        callbacks: Tuple[Optional[Callback], Optional[Callback]] = (on_stdout, on_stderr)
        try:
            while True:
                fd, data = p.next_event()
                if fd == 0 or data is None:
                    break
                taken[fd - 1].append(data)
                cb = callbacks[fd - 1]
                if cb is not None:
                    cb(decoders[fd - 1](data, False))
        except BaseException:
            p.kill()
            try:
                p.wait()
            except SandboxError:
                pass
            raise
        prefix = (b"".join(taken[0]), b"".join(taken[1]))
        try:
            out = p.wait()
        except SandboxError as e:
            e.cmd = args
            e.stdout = prefix[0] + (e.stdout or b"")
            e.stderr = prefix[1] + (e.stderr or b"")
            raise
        return _completed(args, out, mode, prefix)

    def spawn(
        self,
        args: Optional[Args] = None,
        *,
        input: Optional[Data] = None,
        env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
        env_clear: bool = False,
        cwd: Optional[str] = None,
        files: Optional[Mapping[str, Union[Data, File]]] = None,
        collect: Optional[Sequence[str]] = None,
        image: Optional[Data] = None,
        unlimited_streaming: bool = False,
        text: bool = False,
        encoding: Optional[str] = None,
        errors: Optional[str] = None,
    ) -> Process:
        """Starts a program and returns at once: its output streams as it
        is produced and its stdin is written while it runs (unless
        ``input`` is given). The sandbox runs nothing else until it ends."""
        mode = _Text(text, encoding, errors)
        cmd = self._command(
            args,
            input=input,
            env=env,
            env_clear=env_clear,
            cwd=cwd,
            files=files,
            collect=collect,
            image=image,
            unlimited_streaming=unlimited_streaming,
            encoding=mode.encoding,
        )
        return Process(self._native.spawn(cmd), args, mode, self)

    def snapshot(
        self,
        args: Args,
        *,
        point: str = "entry",
        input: Optional[Data] = None,
        env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
        env_clear: bool = False,
        cwd: Optional[str] = None,
        files: Optional[Mapping[str, Union[Data, File]]] = None,
        image: Optional[Data] = None,
    ) -> Snapshot:
        """Runs a program up to ``point`` and freezes it there: "entry"
        (right after it is loaded: each run brings its own arguments and
        environment) or "checkpoint" (where it first reads
        ``/dev/hvsandbox/checkpoint``, e.g. after its imports)."""
        if point not in ("entry", "checkpoint"):
            raise ValueError(f"point must be 'entry' or 'checkpoint', got {point!r}")
        if self._native.from_snapshot:
            raise TypeError("a sandbox built from a snapshot cannot take another snapshot")
        cmd = _options.command(
            args, resume=False, input=input, env=env, env_clear=env_clear, cwd=cwd, files=files, image=image
        )
        return self._native.snapshot(cmd, point)

    def warm(self) -> None:
        """For a sandbox from a snapshot: makes its next VM now."""
        self._native.warm()

    def kill(self) -> None:
        """Stops the run in progress (from any thread); it raises
        :class:`Cancelled`. Does nothing when idle and never affects a
        later run, nor a call that has not started its guest yet (``busy``
        turns true a moment before): kill again until the call returns.
        Cancelling an awaiting asyncio task does that."""
        self._native.kill()

    def close(self) -> None:
        """Ends the sandbox: a process still running is killed; a pooled
        sandbox goes back to its pool. Later calls raise :class:`SandboxClosed`."""
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def poisoned(self) -> bool:
        """True once a failure made the sandbox unusable."""
        return self._native.poisoned

    @property
    def busy(self) -> bool:
        """True while a call or a spawned process runs."""
        return self._native.busy

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "busy" if self.busy else "idle"
        return f"<hvsandbox.Sandbox {state}{' from snapshot' if self._native.from_snapshot else ''}>"


class SandboxPool:
    """Up to ``size`` warm sandboxes of one snapshot, refilled in the
    background; usable from any thread. ``get()`` lends one (a context
    manager: closing it gives it back); ``run()`` borrows one for a run."""

    def __init__(self, snapshot: Snapshot, size: int = 4, **options: Any) -> None:
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a hvsandbox.Snapshot, not {type(snapshot).__name__}")
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if not 1 <= size <= 1024:
            raise ValueError(f"size must be 1..=1024, got {size}")
        self._native = _native.SandboxPool(snapshot, size, _options.sandbox_options(**options))

    def get(self) -> Sandbox:
        """A warm sandbox on loan (made now if none is ready)."""
        return Sandbox(_native_sandbox=self._native.get())

    def run(self, args: Optional[Args] = None, **kw: Any) -> CompletedRun:
        """Runs on a sandbox of the pool (see :meth:`Sandbox.run`)."""
        with self.get() as sb:
            return sb.run(args, **kw)

    async def run_async(self, args: Optional[Args] = None, **kw: Any) -> CompletedRun:
        """:meth:`run` for asyncio: cancelling the awaiting task kills the guest."""
        sandbox = await _threads.call(self.get, lambda: None)
        try:
            return await _threads.call(functools.partial(sandbox.run, args, **kw), sandbox.kill)
        finally:
            sandbox.close()

    @property
    def ready(self) -> int:
        """Sandboxes ready now."""
        return self._native.ready

    @property
    def size(self) -> int:
        return self._native.size

    @property
    def closed(self) -> bool:
        return self._native.closed

    def close(self) -> None:
        """Stops refilling and drops the ready sandboxes."""
        self._native.close()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run(
    args: Args,
    *,
    input: Optional[Data] = None,
    timeout: Optional[Duration] = None,
    cpu_time: Optional[Duration] = None,
    memory: Size = "64M",
    env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
    cwd: Optional[str] = None,
    files: Optional[Mapping[str, Union[Data, File]]] = None,
    mounts: Optional[Mapping[str, Union[PathLike, Mount]]] = None,
    max_output: Size = _native.DEFAULT_MAX_OUTPUT,
    check: bool = False,
    text: bool = False,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    on_stdout: Optional[Callback] = None,
    on_stderr: Optional[Callback] = None,
    collect: Optional[Sequence[str]] = None,
    image: Optional[Data] = None,
    **options: Any,
) -> CompletedRun:
    """Runs a program in a new sandbox, like ``subprocess.run``: returns a
    :class:`CompletedRun`; a limit or a kill raises a :class:`SandboxError`
    (``timeout`` raises :class:`TimeoutExpired`). ``timeout`` defaults to
    10 s; ``options`` are the other settings of :class:`Sandbox`."""
    with Sandbox(memory=memory, timeout=timeout, cpu_time=cpu_time, max_output=max_output, mounts=mounts, **options) as sb:
        return sb.run(
            args,
            input=input,
            env=env,
            cwd=cwd,
            files=files,
            collect=collect,
            image=image,
            check=check,
            text=text,
            encoding=encoding,
            errors=errors,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )
