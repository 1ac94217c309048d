"""Arguments from Python users, checked and put in the native module's
form. Wrong types raise ``TypeError``, bad values ``ValueError``, each
naming the argument. Sizes and durations read as the command line reads
them: ``"64M"``, ``"1G"``, ``"512KiB"``, ``4096``; ``"500ms"``, ``"2s"``,
``"1.5m"``, ``2.5`` (seconds), ``datetime.timedelta``."""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native

__all__ = ["File", "Mount", "parse_size", "parse_duration"]

StrOrBytes = Union[str, bytes]
PathLike = Union[str, "os.PathLike[str]"]
#: What may be given as data: bytes-like, or str (encoded as UTF-8).
Data = Union[bytes, bytearray, memoryview, str]
Size = Union[int, str]
Duration = Union[int, float, str, datetime.timedelta]


@dataclass(frozen=True)
class File:
    """Contents of a file placed in the guest, with its permission bits."""

    data: Data
    mode: int = _native.DEFAULT_FILE_MODE


@dataclass(frozen=True)
class Mount:
    """A read-only host directory shown in the guest. With ``kernel_fs``,
    kernel filesystems (procfs, sysfs, ...) below it are entered too."""

    host: PathLike
    kernel_fs: bool = False


_SIZE_SHIFTS = {"k": 10, "m": 20, "g": 30}


def parse_size(value: Size, what: str = "size") -> int:
    """Bytes from an int or a string with an optional K/M/G suffix (binary
    units, optional trailing B or iB), as the command line reads them."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what} must be an int (bytes) or a str like '64M', not {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value}")
        return value
    lower = value.strip().lower()
    body = lower[:-2] if lower.endswith("ib") else lower[:-1] if lower.endswith("b") else lower
    shift = _SIZE_SHIFTS.get(body[-1:], 0)
    digits = body[:-1] if shift else body
    digits = digits.strip()
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"invalid {what} {value!r} (expected e.g. 64M, 1G, 4096)")
    n = int(digits) << shift
    if n >= 1 << 64:
        raise ValueError(f"{what} {value!r} is too large")
    return n


_UNITS = {"ms": 1e-3, "": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "us": 1e-6}


def parse_duration(value: Duration, what: str = "duration") -> float:
    """Seconds from a number, a ``datetime.timedelta`` or a string with a
    unit (us, ms, s, m, h; none means seconds); must be positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, datetime.timedelta)):
        raise TypeError(f"{what} must be seconds (int or float), a timedelta or a str like '2s', not {type(value).__name__}")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip()
        split = len(text)
        for i, c in enumerate(text):
            if not (c.isdigit() or c == "."):
                split = i
                break
        number, unit = text[:split], text[split:].strip()
        if unit not in _UNITS:
            raise ValueError(f"invalid {what} unit {unit!r} in {value!r} (use ms, s, m or h)")
        try:
            seconds = float(number) * _UNITS[unit]
        except ValueError:
            raise ValueError(f"invalid {what} {value!r} (expected e.g. 500ms, 2s, 1.5m)") from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return seconds


def to_bytes(value: Any, what: str) -> bytes:
    """Bytes-like as bytes; str as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _os_bytes(value: Any, what: str) -> bytes:
    """A str, bytes or path-like as the bytes the OS would see."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        return os.fsencode(value)
    raise TypeError(f"{what} must be str, bytes or a path, not {type(value).__name__}")


def _guest_path(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes) or hasattr(value, "__fspath__"):
        return os.fsdecode(value)
    raise TypeError(f"{what} must be a str (a guest path), not {type(value).__name__}")


def _mapping(value: Any, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping (dict), not {type(value).__name__}")
    return value


def env_pairs(value: Optional[Mapping[StrOrBytes, StrOrBytes]]) -> Optional[List[Tuple[bytes, bytes]]]:
    if value is None:
        return None
    out = []
    for k, v in _mapping(value, "env").items():
        key = _os_bytes(k, "env names")
        if not key or b"=" in key or b"\0" in key:
            raise ValueError(f"invalid environment variable name {k!r}")
        out.append((key, _os_bytes(v, f"env[{k!r}]")))
    return out


def file_list(value: Optional[Mapping[str, Union[Data, File]]]) -> Optional[List[Tuple[str, bytes, int]]]:
    if value is None:
        return None
    out = []
    for path, content in _mapping(value, "files").items():
        guest = _guest_path(path, "file paths")
        if isinstance(content, File):
            mode = content.mode
            if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
                raise ValueError(f"files[{path!r}]: mode must be permission bits (0..0o7777), got {mode!r}")
            out.append((guest, to_bytes(content.data, f"files[{path!r}]"), mode))
        else:
            out.append((guest, to_bytes(content, f"files[{path!r}]"), _native.DEFAULT_FILE_MODE))
    return out


def mount_list(value: Optional[Mapping[str, Union[PathLike, Mount]]]) -> Optional[List[Tuple[str, str, bool]]]:
    if value is None:
        return None
    out = []
    for guest, host in _mapping(value, "mounts (guest path -> host directory)").items():
        m = host if isinstance(host, Mount) else Mount(host)
        if not isinstance(m.host, str) and not hasattr(m.host, "__fspath__"):
            raise TypeError(f"mounts[{guest!r}] must be a host directory (str or path), not {type(m.host).__name__}")
        out.append((os.fspath(m.host), _guest_path(guest, "mount points"), bool(m.kernel_fs)))
    return out


def _count(value: Any, what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    return value


_SECCOMP = ("enforce", "log", "off")


def _seccomp(value: Any, what: str) -> str:
    if value not in _SECCOMP:
        raise ValueError(f"{what} must be one of {_SECCOMP}, got {value!r}")
    return str(value)


_HUGE_PAGES = ("off", "prefer", "require")


def _huge_pages(value: Any, what: str) -> str:
    if value not in _HUGE_PAGES:
        raise ValueError(f"{what} must be one of {_HUGE_PAGES}, got {value!r}")
    return str(value)


#: How each setting of a sandbox is checked and converted (None: unset).
_SANDBOX_OPTIONS: Dict[str, Callable[[Any, str], Any]] = {
    "memory": parse_size,
    "timeout": parse_duration,
    "cpu_time": parse_duration,
    "max_output": parse_size,
    "fail_on_output_limit": lambda v, what: bool(v),
    "env": lambda v, what: env_pairs(v),
    "cwd": _guest_path,
    "files": lambda v, what: file_list(v),
    "mounts": lambda v, what: mount_list(v),
    "seccomp": _seccomp,
    "huge_pages": _huge_pages,
    "max_processes": _count,
    "max_open_files": _count,
    "max_input": parse_size,
    "max_collect_bytes": parse_size,
    "max_collect_files": _count,
}


def sandbox_options(**options: Any) -> Dict[str, Any]:
    """The native options dict of a sandbox (the settings of :class:`Sandbox`)."""
    out = {}
    for name, value in options.items():
        convert = _SANDBOX_OPTIONS.get(name)
        if convert is None:
            raise TypeError(f"unknown sandbox option {name!r}")
        out[name] = None if value is None else convert(value, name)
    return out


def command(
    args: Optional[Sequence[Any]],
    *,
    resume: bool,
    input: Optional[Data] = None,
    env: Optional[Mapping[StrOrBytes, StrOrBytes]] = None,
    env_clear: bool = False,
    cwd: Optional[str] = None,
    files: Optional[Mapping[str, Union[Data, File]]] = None,
    collect: Optional[Sequence[str]] = None,
    image: Optional[Data] = None,
    unlimited_streaming: bool = False,
    encoding: Optional[str] = None,
) -> "_native.Command":
    """The native command: a program and its arguments, or for a sandbox
    built from a snapshot, the arguments its resumed program gets."""
    if isinstance(args, (str, bytes)) or hasattr(args, "__fspath__"):
        raise TypeError(f"args must be a list of arguments, not a single {type(args).__name__} (did you mean [{args!r}]?)")
    if args is None:
        argv: List[bytes] = []
    else:
        try:
            argv = [_os_bytes(a, "each argument") for a in args]
        except TypeError as e:
            if not hasattr(args, "__iter__"):
                raise TypeError(f"args must be a list of arguments, not {type(args).__name__}") from None
            raise e
    if resume:
        if image is not None:
            raise TypeError("a sandbox built from a snapshot runs the snapshot's program: image cannot be given")
        program, rest = b"", argv
    else:
        if not argv:
            raise ValueError("args must name the program to run (args[0])")
        program, rest = argv[0], argv[1:]
    if isinstance(input, str):
        stdin: Optional[bytes] = input.encode(encoding or "utf-8")
    else:
        stdin = None if input is None else to_bytes(input, "input")
    if collect is not None and (isinstance(collect, (str, bytes)) or not hasattr(collect, "__iter__")):
        raise TypeError("collect must be a list of guest paths")
    return _native.Command(
        program,
        rest,
        image=None if image is None else to_bytes(image, "image"),
        resume=resume,
        env=env_pairs(env),
        env_clear=bool(env_clear),
        stdin=stdin,
        files=file_list(files),
        cwd=None if cwd is None else _guest_path(cwd, "cwd"),
        collect=None if collect is None else [_guest_path(c, "collect paths") for c in collect],
        unlimited_streaming=bool(unlimited_streaming),
    )
