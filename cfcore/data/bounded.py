"""Reading data files with a byte budget and a line-length cap, counted as the bytes stream.

A release zip can hold a member that inflates a thousandfold (200 MB of NUL bytes compress to
0.2 MB), and a folder can hold a file of any size. Each file cfcore reads therefore has a budget:
its declared size (the zip header's `file_size`, or the folder's `stat`) is compared with it before
anything is read, and the bytes are counted again as they are read (a header can lie), as are the
bytes of the current line (a file of a few valid-looking bytes can be one 200 MB line, which a
parser holds whole). Over either limit the read stops with the caller's error class naming the
file and the limit.

Limits (documented in the user guide, docs/user-guide.md):

* a file of a known release: its size in that release with a margin (see `file_budget`);
* any other file: `UNKNOWN_FILE_BYTES` (1 GiB);
* `$CFCORE_DATA_FILE_LIMIT` (bytes; suffixes K, M, G, T), when set, replaces every file budget;
* a line: `MAX_LINE_BYTES` (64 KiB; the longest line of any MovieLens release is under 1 KiB),
  and a field (a quoted field may span lines): `MAX_FIELD_CHARS` (4,096 characters).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..resources import format_bytes, parse_size

FILE_LIMIT_ENV = "CFCORE_DATA_FILE_LIMIT"
UNKNOWN_FILE_BYTES = 1 << 30
MAX_LINE_BYTES = 1 << 16
MAX_FIELD_CHARS = 1 << 12
SHOWN_CHARS = 200  # characters of a bad line quoted in an error message


def file_budget(known_size: int | None) -> tuple[int, str]:
    """The most bytes read of a file, and where that number comes from (for messages).

    Args:
        known_size: the file's size in the release (bytes), or None for a file of unknown size.

    Returns:
        `(bytes, reason)`: `$CFCORE_DATA_FILE_LIMIT` when set; else 1.5 times the known size
        plus 1 MiB (copies re-saved with other line endings or re-encoded still fit); else
        `UNKNOWN_FILE_BYTES`.
    """
    env = os.environ.get(FILE_LIMIT_ENV)
    if env:
        return parse_size(env, FILE_LIMIT_ENV), f"{FILE_LIMIT_ENV}={env}"
    if known_size is None:
        return UNKNOWN_FILE_BYTES, "the limit for files of unknown size"
    return known_size * 3 // 2 + (1 << 20), "1.5 times its size in the release, plus 1 MiB"


def shorten(text: str, keep: int = SHOWN_CHARS) -> str:
    """`repr(text)`, cut to its first `keep` characters with the total length said after."""
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep]!r}... ({len(text):,} characters)"


class Readable(Protocol):
    """A binary stream (a file, a zip member)."""

    def read(self, size: int = -1, /) -> bytes: ...


class BoundedReader(io.RawIOBase):
    """A binary stream that refuses to deliver more than `limit` bytes or a line over `max_line`.

    Args:
        raw: the stream read (a file, or a zip member).
        where: the file's name in messages.
        limit: the budget in bytes, and `reason`, what it is (for the message).
        error: the error class raised.
        max_line: the longest line accepted, in bytes (without its newline); None: no limit
            (a file copied, not parsed).
    """

    def __init__(
        self,
        raw: Readable,
        where: str,
        limit: tuple[int, str],
        error: type[Exception],
        max_line: int | None = MAX_LINE_BYTES,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._where = where
        self._limit, self._reason = limit
        self._error = error
        self._max_line = max_line
        self._count = 0  # bytes delivered
        self._line = 0  # bytes of the current (unfinished) line
        self._lines = 0  # newlines seen

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to `size` bytes (all that is left when negative), checked before they are given.

        Overridden (rather than `readinto` alone) so that a parser reading chunks gets the
        stream's own bytes, without the copies of a buffer in between.
        """
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        # One byte more than the budget may be read, so that a file of exactly the budget passes.
        data = self._raw.read(min(size, self._limit + 1 - self._count))
        self._count += len(data)
        if self._count > self._limit:
            raise self._error(too_large(self._where, self._limit, self._reason, "holds more than"))
        if data and self._max_line is not None and not self._short_lines(data):
            self._check_lines(np.frombuffer(data, np.uint8))
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _short_lines(self, data: bytes) -> bool:
        """Whether every line `data` ends or continues is within the cap, found by a few C-level
        searches (then the line count and the unfinished line's length are updated); False when
        that cannot be shown this way, to be settled by `_check_lines`.

        If each block of `max_line // 2` bytes between the first and the last newline holds a
        newline, no two consecutive newlines are `max_line` bytes apart.
        """
        assert self._max_line is not None
        first, last = data.find(b"\n"), data.rfind(b"\n")
        if first < 0 or self._line + first > self._max_line:
            return False
        tail = len(data) - last - 1
        block = self._max_line // 2
        if tail > self._max_line or any(
            data.find(b"\n", start, start + block) < 0 for start in range(first + 1, last, block)
        ):
            return False
        # numpy counts many times faster than `bytes.count`, which goes byte by byte.
        self._lines += int(np.count_nonzero(np.frombuffer(data, np.uint8) == 10))
        self._line = tail
        return True

    def _check_lines(self, chunk: np.ndarray) -> None:
        assert self._max_line is not None
        ends = np.flatnonzero(chunk == 10)
        # Lengths of the lines this chunk ends (the first continues the previous chunk's last
        # line) and of the line it leaves unfinished.
        lengths = np.empty(len(ends) + 1, np.int64)
        if len(ends):
            lengths[0] = self._line + ends[0]
            lengths[1:-1] = np.diff(ends) - 1
            lengths[-1] = len(chunk) - ends[-1] - 1
        else:
            lengths[0] = self._line + len(chunk)
        over = lengths > self._max_line
        if over.any():
            raise self._error(
                f"{self._where}: line {self._lines + 1 + int(np.argmax(over)):,} is longer than "
                f"{self._max_line:,} bytes, the longest line cfcore reads (a damaged or crafted "
                "file, or not a data file)"
            )
        self._lines += len(ends)
        self._line = int(lengths[-1])


def too_large(where: str, limit: int, reason: str, verb: str) -> str:
    """The message for a file over its budget."""
    hint = (
        ""
        if reason.startswith(FILE_LIMIT_ENV)
        else f"; if the file is genuine, set {FILE_LIMIT_ENV} to a larger size (bytes, or with "
        "K, M, G) to read it"
    )
    return (
        f"{where} {verb} {format_bytes(limit)} ({limit:,} bytes), the most cfcore reads of it "
        f"({reason}): a damaged or crafted file, or the wrong one{hint}"
    )


def bounded(
    raw: Readable,
    where: str,
    limit: tuple[int, str],
    error: type[Exception],
    max_line: int | None = MAX_LINE_BYTES,
) -> BoundedReader:
    """`raw` behind a `BoundedReader`: read it in chunks (`read(n)`, as parsers do), or wrap it
    in `io.BufferedReader` to read lines."""
    return BoundedReader(raw, where, limit, error, max_line)


def check_size(path: Path, limit: tuple[int, str], error: type[Exception]) -> None:
    """Raises `error` when the file at `path` is larger than its budget `limit`, before any of
    it is read (the bytes are counted again while they stream)."""
    size = path.stat().st_size
    if size > limit[0]:
        raise error(too_large(str(path), *limit, f"is {size:,} bytes, more than"))


def read_csv(path: Path, error: type[Exception]) -> Any:
    """A CSV file of unknown size (one cfcore wrote, or a user's) as a pandas frame, read within
    `file_budget(None)` and `MAX_LINE_BYTES`; a file over its budget raises `error`.

    Parse errors are the caller's to word (pandas' `ValueError` / `ParserError` pass through).
    """
    import pandas as pd

    limit = file_budget(None)
    check_size(path, limit, error)
    with open(path, "rb") as f:
        return pd.read_csv(bounded(f, str(path), limit, error))
