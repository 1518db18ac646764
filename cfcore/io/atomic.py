"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

`atomic_write(path, write)` writes a hidden temporary file beside `path`
(`.<name>.<pid>.<random>.tmp`), flushes it to disk (`fsync`), renames it over `path`
(`os.replace`, atomic on POSIX and Windows) and flushes the folder, so that after a crash or a
power cut `path` is the complete old file or the complete new one. The new file gets the
permissions of any new file (`0o666` less the umask), not the `0o600` of `tempfile.mkstemp`, so
a model saved into a shared folder can be read by the others.

A process killed mid-write (`kill -9`) leaves its temporary file behind; the next save of the
same path removes the temporary files of that path whose writer is no longer running.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import FileAccessError

# A temporary file whose name carries no process id (older cfcore) is stale after this long.
_STALE_AFTER_S = 3600.0


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """`path` as a `Path`, after refusing what can never be written as a file.

    Refused: an empty path, a NUL byte, an existing folder, a path under an existing file, and
    a folder (existing, or the nearest existing ancestor of one to be created) that this process
    may not write into.

    Raises:
        FileAccessError: naming the path and what is wrong with it.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise FileAccessError(f"the output path is empty ({text!r}): give a file name")
    if "\0" in text:
        raise FileAccessError(f"the output path {text!r} contains a NUL byte")
    p = Path(text)
    if p.is_dir():
        raise FileAccessError(f"{p} is a folder: give a file name inside it")
    ancestor = p.parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link: mkdir would fail on it
            raise FileAccessError(f"cannot write {p}: {ancestor} is a broken link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FileAccessError(f"cannot write {p}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FileAccessError(f"cannot write {p}: permission denied on the folder {ancestor}")
    return p


def _pid_of(name: str, prefix: str) -> int | None:
    parts = name[len(prefix) :].split(".")
    return int(parts[0]) if len(parts) == 3 and parts[0].isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else (EPERM), or cannot tell
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Removes the temporary files of `path` left by writers that were killed; returns them.

    A temporary file is stale when the process id in its name is not running on this machine,
    or, for a name without a process id, when it is over an hour old. Files that cannot be
    removed are left alone.
    """
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid = _pid_of(entry.name, prefix)
        try:
            stale = (
                not _alive(pid) if pid is not None else now - entry.stat().st_mtime > _STALE_AFTER_S
            )
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def remove_own_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Removes the temporary files this process has left in `folder`; returns them.

    For a process about to exit on a signal: an `atomic_write` interrupted between creating its
    temporary file and the `try` that removes it on failure would otherwise leave it behind (the
    next save removes it only once this process has ended). Only names `atomic_write` gives
    (`.<name>.<this pid>.<random>.tmp`) are touched; a missing folder removes nothing.
    """
    marker = f".{os.getpid()}."
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp") and marker in name):
            continue
        owner = name[1 : name.rindex(marker)]
        if not owner or _pid_of(name, f".{owner}.") != os.getpid():
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _create_temporary(path: Path) -> Path:
    """A new empty file beside `path`, created with mode 0o666 so the umask applies."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileAccessError(
        errno.EEXIST, "no free temporary file name", str(path)
    )  # pragma: no cover


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Not possible on Windows (folders cannot be opened).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it over `path`.

    What `write` returns (e.g. `Path.write_text`'s count) is ignored.

    The temporary file is removed if `write` fails, so nothing partial is left behind; temporary
    files of `path` left by killed writers are removed first.

    Raises:
        FileAccessError: `path` cannot be written (see `check_output_path`), or creating the
            folder, the temporary file or the rename failed for lack of permission or space.
    """
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp_path = _create_temporary(path)
    except OSError as err:
        raise FileAccessError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        write(tmp_path)
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, FileAccessError):
            raise FileAccessError(f"cannot write {path}: {err.strerror or err}") from err
        raise
    _fsync_dir(path.parent)
    return path
