"""One validator for scalar arguments, shared by every public entry point.

The rules, the same everywhere:

* an int argument accepts Python and NumPy integers and refuses bools (`True` is not a size) and
  floats, even integral ones (`3.0` steps is a mistake worth naming);
* a float argument accepts Python and NumPy integers and floats and refuses bools and strings;
* a wrong type is an `ArgumentTypeError` (a `TypeError`, also a `ValueError`), a value out of range
  an `ArgumentValueError` (a `ValueError`); both name the argument and the value given.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import ArgumentTypeError, ArgumentValueError


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _int_expected(minimum: int | None, maximum: int | None) -> str:
    if minimum == 1 and maximum is None:
        return "a positive int"
    if minimum is not None and maximum is not None:
        return f"an int in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an int >= {minimum}"
    if maximum is not None:
        return f"an int <= {maximum}"
    return "an int"


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    expected: str | None = None,
) -> int:
    """`value` as a Python int, after checking its type and range.

    Args:
        name: the argument's name, for the message.
        value: the value given.
        minimum: the smallest value allowed (None: no bound).
        maximum: the largest value allowed (None: no bound).
        expected: how to word what is allowed (default: from the bounds, "a positive int").

    Returns:
        `int(value)`.

    Raises:
        ArgumentTypeError: `value` is a bool or not an integer (Python or NumPy).
        ArgumentValueError: `value` is outside `[minimum, maximum]`.
    """
    expected = expected or _int_expected(minimum, maximum)
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ArgumentTypeError(f"{name} must be {expected}, got {_shown(value)}")
    out = int(value)
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise ArgumentValueError(f"{name} must be {expected}, got {out}")
    return out


def _float_expected(lo: float | None, lo_open: bool, hi: float | None, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"a finite number {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"a finite number {'<' if hi_open else '<='} {hi:g}"
    return "a finite number"


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
    exclusive_maximum: float | None = None,
    expected: str | None = None,
) -> float:
    """`value` as a finite Python float, after checking its type and range.

    Args:
        name: the argument's name, for the message.
        value: the value given: a Python or NumPy int or float.
        minimum, exclusive_minimum: lower bound, inclusive or strict (None: no bound).
        maximum, exclusive_maximum: upper bound, inclusive or strict (None: no bound).
        expected: how to word what is allowed (default: from the bounds, "in (0, 1)").

    Returns:
        `float(value)`.

    Raises:
        ArgumentTypeError: `value` is a bool, a string or another non-real type.
        ArgumentValueError: `value` is NaN, infinite or out of range.
    """
    lo = exclusive_minimum if exclusive_minimum is not None else minimum
    hi = exclusive_maximum if exclusive_maximum is not None else maximum
    lo_open, hi_open = exclusive_minimum is not None, exclusive_maximum is not None
    expected = expected or _float_expected(lo, lo_open, hi, hi_open)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be {expected}, got {_shown(value)}")
    out = float(value)
    ok = math.isfinite(out)
    if ok and lo is not None:
        ok = out > lo if lo_open else out >= lo
    if ok and hi is not None:
        ok = out < hi if hi_open else out <= hi
    if not ok:
        raise ArgumentValueError(f"{name} must be {expected}, got {value!r}")
    return out
