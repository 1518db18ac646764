"""Finding the line of a data file that was refused, so the error can name file and line.

`pandas.read_csv` reports a malformed row as "Expected 4 fields in line 3, saw 5" at best, and a
bad value in a typed column as "invalid literal for int() with base 10: 'x'" or "Integer column
has NA values in column 2", with no line at all. When a read fails (or the parsed frame fails a
check: a rating off the release's scale, ...), `first_bad_line` reads the file again, one line at
a time, with the `csv` module (the same quoting rules) or a plain split (a multi-character
separator such as `::`), and finds the first line that is not valid text, has the wrong number of
fields, a missing value in a required column, a value that does not parse as its column's type,
a field over `MAX_FIELD_CHARS`, or a value a check refuses. Lines are read as they come, so a
bad file is never held whole; the line quoted in a message is cut to its first 200 characters.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .bounded import MAX_FIELD_CHARS, shorten

_MISSING = {"", "na", "nan", "n/a", "null", "none", "<na>", "-nan", "#n/a"}
_INT64 = (-(2**63), 2**63 - 1)
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _kind(dtype: Any) -> str | None:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    if np.issubdtype(dt, np.integer):
        return "int"
    if np.issubdtype(dt, np.floating):
        return "float"
    return None


def _problem(value: str, kind: str | None) -> str | None:
    text = value.strip()
    if text.lower() in _MISSING:
        return "is missing"
    try:
        if kind == "int" and not _INT64[0] <= int(text) <= _INT64[1]:
            return f"is {shorten(text)}, outside the 64-bit integer range"
        if kind == "float" and not math.isfinite(float(text)):
            return f"is {shorten(text)}, not a finite number"
    except ValueError:
        return f"is {shorten(text)}, not {'an integer' if kind == 'int' else 'a number'}"
    return None


class _Undecodable(Exception):
    def __init__(self, line: int, err: UnicodeDecodeError) -> None:
        super().__init__(line, err)
        self.line, self.err = line, err


class _Lines:
    """The decoded lines of a file, numbered; `record` holds those of the row being read."""

    def __init__(self, source: str | Iterable[bytes], encoding: str) -> None:
        self._source = source.splitlines(keepends=True) if isinstance(source, str) else source
        self._encoding = encoding
        self.number = 0
        self.record: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for raw in self._source:
            if isinstance(raw, bytes):
                try:
                    line = raw.decode(self._encoding)
                except UnicodeDecodeError as err:
                    raise _Undecodable(self.number + 1, err) from None
            else:
                line = raw
            # A lone '\r' ends a line for pandas too (old Mac files): count the pieces as lines.
            pieces = [p for p in _LONE_CR.split(line) if p] if "\r" in line else [line]
            for piece in pieces:
                self.number += 1
                self.record.append(piece)
                yield piece

    def first(self) -> int:
        """The number of the first line of the current row."""
        return self.number - len(self.record) + 1


def _split(lines: _Lines, sep: str, quoting: bool) -> Iterator[list[str]]:
    if quoting and len(sep) == 1:
        yield from csv.reader(lines, delimiter=sep)
        return
    for line in lines:
        text = line.rstrip("\r\n")
        yield text.split(sep) if text else []


def first_bad_line(
    text: str | Iterable[bytes],
    *,
    sep: str = ",",
    names: list[str] | None = None,
    dtype: Mapping[str, Any] | None = None,
    required: Iterable[str] = (),
    checks: Mapping[str, Callable[[str], str | None]] | None = None,
    encoding: str = "utf-8",
    quoting: bool = True,
) -> str | None:
    """Describes the first bad line of a delimited text, or None if every line looks sound.

    Args:
        text: the file's content, or its lines as bytes (a binary file object), read lazily.
        sep: the field separator; a multi-character one (`"::"`) splits lines as they are.
        names: the column names of a file without a header row (None: the first row is one).
        dtype: the type expected of some columns (integer and float types are checked).
        required: columns that must not be missing.
        checks: per column, a function of the field's text returning what is wrong with it
            (e.g. "is '7', outside the release's scale (whole stars 1 to 5)") or None.
        encoding: the text's encoding (for bytes).
        quoting: whether fields may be quoted (`"a, b"`), as `csv` reads them.

    Returns:
        e.g. `"line 3 has 5 fields, expected 4 (user_id, item_id, rating, timestamp): '1\\t2\\t3\\t4\\t5'"`.
    """
    lines = _Lines(text, encoding)
    rows = _split(lines, sep, quoting)
    try:
        return _scan(lines, rows, sep, names, dtype, required, checks or {})
    except _Undecodable as bad:
        err = bad.err
        return (
            f"line {bad.line} is not {encoding} text (byte 0x{err.object[err.start]:02x} at "
            f"position {err.start + 1}: {err.reason})"
        )
    except csv.Error as err:  # a NUL byte, a field over csv's own limit, ...
        return f"line {lines.number} cannot be read as {'CSV' if sep == ',' else 'text'}: {err}"


def _scan(
    lines: _Lines,
    rows: Iterator[list[str]],
    sep: str,
    names: list[str] | None,
    dtype: Mapping[str, Any] | None,
    required: Iterable[str],
    checks: Mapping[str, Callable[[str], str | None]],
) -> str | None:
    cols = list(names) if names is not None else next(rows, [])
    lines.record.clear()
    required = list(required)
    types = {c: _kind(t) for c, t in (dtype or {}).items() if c in cols}
    checked = {c: types.get(c) for c in [*types, *required] if c in cols}
    for row in rows:
        number, shown = lines.first(), shorten("".join(lines.record).rstrip("\r\n"))
        lines.record.clear()
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # pandas skips blank lines too
        if len(row) != len(cols):
            return (
                f"line {number} has {len(row)} fields, expected {len(cols)} "
                f"({', '.join(cols)}): {shown}"
            )
        for col, value in zip(cols, row, strict=True):
            if len(value) > MAX_FIELD_CHARS:
                return (
                    f"line {number}: {col} has {len(value):,} characters, more than the "
                    f"{MAX_FIELD_CHARS:,} cfcore reads: {shown}"
                )
            if len(sep) > 1 and sep[0] in value:  # `::` files: a lone ':' splits no field
                return (
                    f"line {number}: {col} is {shorten(value)}, which holds a {sep[0]!r}: {shown}"
                )
        for col, kind in checked.items():
            problem = _problem(row[cols.index(col)], kind)
            if problem is not None and (kind is not None or col in required):
                return f"line {number}: {col} {problem}: {shown}"
        for col, check in checks.items():
            problem = check(row[cols.index(col)].strip())
            if problem is not None:
                return f"line {number}: {col} {problem}: {shown}"
    return None
