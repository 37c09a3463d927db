"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, fsync, then rename over `path` (same folder, so rename is atomic).

    The file gets the mode a plain `open()` gives (0o666 less the umask), whatever `write` does, not 0o600 as
    from mkstemp: a run directory is read by other users and by containers running under another uid."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_file(path)
    mode = tmp_path.stat().st_mode  # 0o666 less the umask, as the kernel made it
    try:
        with naming(path):
            write(tmp_path)
            if tmp_path.stat().st_mode != mode:  # a writer that made its own file (safetensors: 0o600)
                os.chmod(tmp_path, mode)
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError inside names `path`: the file the user knows (not the hidden temporary one of an atomic write, nor
    none, as from a write to an open file), with its errno kept (ENOSPC, EROFS, EACCES, EFBIG), so that a caller
    can say in one line which file could not be written, and why. Libraries written in Rust (safetensors) raise
    their own exception type, saying "(os error 28)": that is made the OSError it was."""
    try:
        yield
    except OSError as e:
        if e.errno is None or e.filename == os.fspath(path):
            raise
        raise OSError(e.errno, e.strerror, os.fspath(path)) from e
    except Exception as e:
        rust = _RUST_OS_ERROR.search(str(e))
        if rust is None:
            raise
        errno = int(rust.group(1))
        raise OSError(errno, os.strerror(errno), os.fspath(path)) from e


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _new_file(beside: Path) -> Path:
    """A new empty hidden file next to `beside`, created as open() creates one (mode 0o666, less the umask)."""
    while True:
        tmp = beside.with_name(f".{beside.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    """numpy / torch scalars and arrays, Paths -> plain JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
