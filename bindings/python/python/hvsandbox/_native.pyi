# Stubs of the native module (checked against it by mypy.stubtest in
# bindings/python/test.sh). Private: use the hvsandbox facade.
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, final

_Bytes = Union[bytes, bytearray]
_Output = Tuple[
    Optional[int],  # exit code
    Optional[int],  # signal
    bytes,  # stdout
    bytes,  # stderr
    bool,  # stdout truncated
    bool,  # stderr truncated
    Optional[FaultInfo],
    Dict[str, bytes],  # collected files
    bool,  # files truncated
    Stats,
]

DEFAULT_MEMORY: int
DEFAULT_TIMEOUT: float
DEFAULT_MAX_OUTPUT: int
DEFAULT_MAX_INPUT: int
DEFAULT_MAX_PROCESSES: int
DEFAULT_MAX_OPEN_FILES: int
DEFAULT_MAX_COLLECT_BYTES: int
DEFAULT_MAX_COLLECT_FILES: int
DEFAULT_FILE_MODE: int
__version__: str
__all__ = [
    "Command",
    "Sandbox",
    "Snapshot",
    "SandboxPool",
    "Process",
    "Stats",
    "FaultInfo",
    "set_error_factory",
    "set_blank_vms",
    "DEFAULT_MEMORY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_MAX_INPUT",
    "DEFAULT_MAX_PROCESSES",
    "DEFAULT_MAX_OPEN_FILES",
    "DEFAULT_MAX_COLLECT_BYTES",
    "DEFAULT_MAX_COLLECT_FILES",
    "DEFAULT_FILE_MODE",
    "__version__",
]

def set_error_factory(factory: Callable[[str, str, Dict[str, Any]], BaseException]) -> None: ...
def set_blank_vms(n: int) -> None: ...
@final
class Stats:
    """Statistics of one run."""

    @property
    def wall(self) -> float:
        """Wall time of the run, seconds (boot included)."""
    @property
    def cpu(self) -> float:
        """CPU time the vCPU thread used, seconds."""
    @property
    def exits(self) -> int: ...
    @property
    def syscalls(self) -> int: ...
    @property
    def memory_used(self) -> int: ...
    @property
    def page_faults(self) -> int: ...
    @property
    def processes(self) -> int: ...
    @property
    def rewritten_sites(self) -> int: ...
    @property
    def slow_syscalls(self) -> int: ...
    @property
    def stdout_bytes(self) -> int: ...
    @property
    def stderr_bytes(self) -> int: ...
    @property
    def unknown_syscalls(self) -> Dict[int, int]:
        """System calls the runtime does not implement: number -> count."""

@final
class FaultInfo:
    """Where a program faulted when a CPU exception ended it."""

    @property
    def vector(self) -> int: ...
    @property
    def error_code(self) -> int: ...
    @property
    def rip(self) -> int: ...
    @property
    def address(self) -> Optional[int]: ...

@final
class Command:
    def __new__(
        cls,
        program: _Bytes,
        args: List[bytes],
        *,
        image: Optional[_Bytes] = None,
        resume: bool = False,
        env: Optional[List[Tuple[bytes, bytes]]] = None,
        env_clear: bool = False,
        stdin: Optional[_Bytes] = None,
        files: Optional[List[Tuple[str, bytes, int]]] = None,
        cwd: Optional[str] = None,
        collect: Optional[List[str]] = None,
        unlimited_streaming: bool = False,
    ) -> Command: ...

@final
class Snapshot:
    """A frozen guest sandboxes start from (cheap to share)."""

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        """Writes the snapshot to a file."""
    @staticmethod
    def load(path: Union[str, os.PathLike[str]]) -> Snapshot:
        """Reads a snapshot file written by save()."""
    @staticmethod
    def from_bytes(data: _Bytes) -> Snapshot:
        """Reads a snapshot from the bytes of a file written by save()."""
    def copy_memory(self, copy: bool = True) -> None:
        """Whether VMs made from now on for this snapshot get their own copy
        of its memory instead of sharing it copy-on-write: a fresh VM's first
        run is faster (on shadow-paging hosts, ~3x for python3 from a
        snapshot file), at the cost of the copy and of memory per clone.
        For a snapshot that runs once or a few times; pools should share."""
    @property
    def point(self) -> str:
        """'entry' or 'checkpoint'."""
    @property
    def memory_bytes(self) -> int: ...
    @property
    def resident_bytes(self) -> int: ...
    @property
    def max_processes(self) -> int: ...
    @property
    def max_open_files(self) -> int: ...
    @property
    def args(self) -> List[bytes]:
        """The arguments (after argv[0]) its program was started with."""
    @property
    def env(self) -> List[Tuple[bytes, bytes]]:
        """The environment its program was started with."""
    @property
    def mounts(self) -> List[Tuple[str, str]]:
        """Its guest's mounts as (host directory when taken, guest path)."""

@final
class Process:
    def next_event(self) -> Tuple[int, Optional[bytes]]: ...
    def try_next_event(self) -> Optional[Tuple[int, Optional[bytes]]]: ...
    def read(self, fd: int, size: int) -> bytes: ...
    def write_stdin(self, data: _Bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def wait(self) -> _Output: ...
    def try_wait(self) -> Optional[Tuple[Optional[int], Optional[int]]]: ...
    def kill(self) -> None: ...

@final
class Sandbox:
    def __new__(cls, options: Optional[Dict[str, Any]] = None, snapshot: Optional[Snapshot] = None) -> Sandbox: ...
    def run(self, command: Command) -> _Output: ...
    def spawn(self, command: Command) -> Process: ...
    def snapshot(self, command: Command, point: str) -> Snapshot: ...
    def warm(self) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def poisoned(self) -> bool: ...
    @property
    def busy(self) -> bool: ...
    @property
    def from_snapshot(self) -> bool: ...

@final
class SandboxPool:
    def __new__(cls, snapshot: Snapshot, size: int, options: Optional[Dict[str, Any]] = None) -> SandboxPool: ...
    def get(self) -> Sandbox: ...
    def close(self) -> None: ...
    @property
    def ready(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def closed(self) -> bool: ...
