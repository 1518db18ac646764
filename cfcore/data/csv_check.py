"""Finding the line of a data file that pandas refused, so the error can name file and line.

`pandas.read_csv` reports a malformed row as "Expected 4 fields in line 3, saw 5" at best, and a
bad value in a typed column as "invalid literal for int() with base 10: 'x'" or "Integer column
has NA values in column 2", with no line at all. When a read fails, `first_bad_line` reads the
text again with the `csv` module (the same quoting rules) and finds the first row with the wrong
number of fields, a missing value in a required column, or a value that does not parse as its
column's type.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

_MISSING = {"", "na", "nan", "n/a", "null", "none", "<na>", "-nan", "#n/a"}


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
        if kind == "int":
            int(text)
        elif kind == "float" and not math.isfinite(float(text)):
            return f"is {text!r}, not a finite number"
    except ValueError:
        return f"is {text!r}, not {'an integer' if kind == 'int' else 'a number'}"
    return None


def first_bad_line(
    text: str,
    *,
    sep: str = ",",
    names: list[str] | None = None,
    dtype: Mapping[str, Any] | None = None,
    required: Iterable[str] = (),
) -> str | None:
    """Describes the first bad line of a delimited text, or None if every line looks sound.

    Args:
        text: the file's content.
        sep: the field separator.
        names: the column names of a file without a header row (None: the first row is one).
        dtype: the type expected of some columns (integer and float types are checked).
        required: columns that must not be missing.

    Returns:
        e.g. `"line 3 has 5 fields, expected 4 (user_id, item_id, rating, timestamp): '1\\t2\\t3\\t4\\t5'"`.
    """
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    cols = list(names) if names is not None else next(reader, [])
    types = {c: _kind(t) for c, t in (dtype or {}).items() if c in cols}
    checked = {c: types.get(c) for c in [*types, *required] if c in cols}
    for row in reader:
        lineno = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # pandas skips blank lines too
        shown = lines[lineno - 1] if lineno - 1 < len(lines) else sep.join(row)
        if len(row) != len(cols):
            return (
                f"line {lineno} has {len(row)} fields, expected {len(cols)} "
                f"({', '.join(cols)}): {shown!r}"
            )
        for col, kind in checked.items():
            problem = _problem(row[cols.index(col)], kind)
            if problem is not None and (kind is not None or col in required):
                return f"line {lineno}: {col} {problem}: {shown!r}"
    return None
