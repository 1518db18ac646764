"""Reading `.npz` archives defensively: declared sizes are checked before anything is decompressed.

A `.npz` is a zip of `.npy` members. Each member's `.npy` header declares its dtype and shape in
its first bytes; `member_headers` reads only those headers (and the zip's directory), so a small
crafted file that declares gigabytes is refused before NumPy inflates it. Errors name the file:
one that cannot be opened for lack of permission is a `FileAccessError`; one whose content is
not a sound archive is reported through the caller's error class (`damaged`).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CfcoreError, FileAccessError
from ..resources import check_memory


class NpzFileError(CfcoreError, ValueError):
    """An `.npz` file (other than a model: `ModelFileError`) that is damaged or not one of cfcore's."""


@contextlib.contextmanager
def _reading(path: Path, damaged: type[Exception]) -> Iterator[None]:
    """What reading `path` may raise, as cfcore reports it: no permission, a `FileAccessError`;
    content that is not sound (a bad zip or stream, a short read), `damaged` naming the file
    (a `damaged` raised inside passes through as it is)."""
    try:
        yield
    except PermissionError as err:
        raise FileAccessError(f"cannot read {path}: permission denied") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        if isinstance(err, damaged):
            raise
        raise damaged(f"{path} is damaged: {err}") from err


@dataclass(frozen=True)
class MemberHeader:
    """What one `.npy` member of an archive declares.

    Attributes:
        shape: the array's shape.
        dtype: its dtype.
        nbytes: the bytes its data takes once read (`prod(shape) * itemsize`).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def check_readable(path: Path, missing: type[Exception], what: str) -> None:
    """Refuses a path that does not exist (`missing(...)`) or cannot be read (`FileAccessError`)."""
    if not path.exists():
        raise missing(f"{what} {path} does not exist")
    if path.is_dir():
        raise missing(f"{what} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise FileAccessError(f"cannot read {what} {path}: permission denied")


def _read_header(
    f: Any, version: tuple[int, int], path: Path, damaged: type[Exception]
) -> tuple[Any, bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise damaged(f"{path} is damaged: unsupported .npy format version {version}")


def member_headers(path: Path, damaged: type[Exception]) -> dict[str, MemberHeader]:
    """The declared dtype and shape of every member of the archive at `path`, read from headers.

    Args:
        path: the `.npz` file.
        damaged: the error class raised for content that is not a sound `.npz` archive.

    Returns:
        `{member name without ".npy": MemberHeader}`.

    Raises:
        FileAccessError: the file cannot be read (permission).
        damaged: not a zip, a member that is not `.npy`, a header that does not parse, holds
            Python objects (pickles), or disagrees with the zip's own size of the member.
    """
    out: dict[str, MemberHeader] = {}
    with _reading(path, damaged):
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise damaged(f"{path} is not an .npz archive: it holds a single array (.npy)")
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            if isinstance(err, PermissionError):
                raise
            raise damaged(
                f"{path} cannot be read: it is not a valid .npz archive (a damaged or truncated "
                f"file, or another kind of file): {err}"
            ) from err
        with zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = _read_header(f, version, path, damaged)
                    header_len = f.tell()
                if dtype.hasobject:
                    raise damaged(
                        f"{path} is damaged or not a cfcore file: its member {name!r} holds "
                        "Python objects (a pickle), which cfcore never loads"
                    )
                nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if info.file_size != header_len + nbytes:
                    raise damaged(
                        f"{path} is damaged: its member {name!r} declares {dtype} {shape} "
                        f"({nbytes} bytes) but the archive says it holds "
                        f"{info.file_size - header_len} bytes"
                    )
                out[name] = MemberHeader(tuple(int(s) for s in shape), dtype, nbytes)
    return out


def check_total_size(path: Path, headers: dict[str, MemberHeader]) -> None:
    """Refuses an archive whose arrays, once read, would not fit in memory (`ResourceLimitError`)."""
    total = sum(h.nbytes for h in headers.values())
    check_memory(
        total,
        f"reading {path} ({len(headers)} arrays)",
        "the file is damaged or crafted, or was written on a machine with more memory",
    )


def load_arrays(path: Path, damaged: type[Exception], names: Any = None) -> dict[str, np.ndarray]:
    """Every member (or `names`) of the archive at `path`, after the header and size checks.

    Raises:
        FileAccessError: the file cannot be read (permission).
        ResourceLimitError: the declared arrays would not fit in memory.
        damaged: the archive is not sound (see `member_headers`).
    """
    headers = member_headers(path, damaged)
    if names is not None:
        headers = {k: v for k, v in headers.items() if k in set(names)}
    check_total_size(path, headers)
    with _reading(path, damaged), np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in headers}


_CHUNK_BYTES = 1 << 16


@contextlib.contextmanager
def _no_member(path: Path, name: str, damaged: type[Exception]) -> Iterator[None]:
    """A member missing from the zip (`KeyError` of `ZipFile.open`) as `damaged`."""
    try:
        yield
    except KeyError as err:
        raise damaged(f"{path} is damaged: it has no member {name!r}") from err


def read_member(
    path: Path, name: str, damaged: type[Exception], header: MemberHeader | None = None
) -> np.ndarray:
    """One member of the archive at `path`, decompressed straight into its array.

    `numpy.load` reads a compressed member as one `bytes` object grown by concatenation and
    then copied into the array: a peak of about four times the array (measured on a 320 KB
    member). Here the data are read in chunks of 64 KiB into the array's own buffer, so the peak
    is the array plus one chunk: what reading a sharded checkpoint one shard at a time needs.

    Args:
        path: the `.npz` file.
        name: the member, without ".npy".
        damaged: the error class for content that is not sound.
        header: the member's header from `member_headers` (read here if not given).

    Raises:
        FileAccessError: the file cannot be read (permission).
        ResourceLimitError: the array would not fit in memory.
        damaged: the archive or the member is not sound, or has no member `name`.
    """
    if header is None:
        headers = member_headers(path, damaged)
        if name not in headers:
            raise damaged(f"{path} is damaged: it has no member {name!r}")
        header = headers[name]
    check_memory(header.nbytes, f"reading {name!r} of {path}", "the file is damaged or crafted")
    with _reading(path, damaged), _no_member(path, name, damaged):
        with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = _read_header(f, version, path, damaged)
            if tuple(shape) != header.shape or dtype != header.dtype or dtype.hasobject:
                raise damaged(f"{path} is damaged: its member {name!r} changed while read")
            buf = np.empty(header.nbytes, np.uint8)
            done = 0
            while done < header.nbytes:
                chunk = f.read(min(_CHUNK_BYTES, header.nbytes - done))
                if not chunk:
                    raise damaged(
                        f"{path} is damaged: its member {name!r} ends after {done} of "
                        f"{header.nbytes} bytes"
                    )
                buf[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
    return np.ndarray(shape, dtype, buffer=buf, order="F" if fortran else "C")
