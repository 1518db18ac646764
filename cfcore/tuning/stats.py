"""The intervals of `cfcore experiment`: a t-interval of the mean over seeds, and of paired
differences between two contenders over the same seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentValueError

LEVEL = 0.95
"""The confidence level of every interval."""


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided t-interval.

    Attributes:
        n: the values (seeds).
        mean: their mean.
        half: the interval's half-width, `t(1 - (1 - LEVEL)/2, n - 1) · s / √n` with `s` the
            sample standard deviation; None when `n` is 1 (no interval).
    """

    n: int
    mean: float
    half: float | None

    @property
    def low(self) -> float | None:
        """The interval's lower end (None without an interval)."""
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        """The interval's upper end (None without an interval)."""
        return None if self.half is None else self.mean + self.half

    def text(self, digits: int = 4) -> str:
        """`0.9123 ± 0.0041`, or `0.9123 (n=1, no interval)`."""
        if self.half is None:
            return f"{self.mean:.{digits}f} (n=1, no interval)"
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"


def t_interval(values: Sequence[float] | np.ndarray) -> Interval:
    """The mean of `values` `[n]` and its 95% t-interval (scipy's Student t quantile).

    Raises:
        ArgumentValueError: no values.
    """
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise ArgumentValueError("an interval needs at least one value")
    mean = float(v.mean())
    if v.size == 1:
        return Interval(1, mean, None)
    from scipy.stats import t  # scikit-learn's dependency: always installed with cfcore

    quantile = float(t.ppf(1 - (1 - LEVEL) / 2, v.size - 1))
    return Interval(int(v.size), mean, quantile * float(v.std(ddof=1)) / math.sqrt(v.size))


def paired_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """The mean of `a - b` `[n]` (the same seeds, in the same order) and its 95% t-interval.

    Raises:
        ArgumentValueError: lengths differ, or no values.
    """
    if len(a) != len(b):
        raise ArgumentValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    return t_interval(np.asarray(a, np.float64) - np.asarray(b, np.float64))
