"""Atomic file writes: moved to `cfcore.io.atomic`; the benchmarks still import this path."""

from .io.atomic import atomic_write as atomic_write
