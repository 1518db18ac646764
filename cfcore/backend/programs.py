"""Compiled programs kept for reuse, a bounded number of them.

A compiled program stays loaded while anything references it: XLA keeps its machine code in
memory mappings of its own (about three per executable), and a process may hold only
`vm.max_map_count` mappings (65,530 by default on Linux). A process that trains models of many
shapes one after another (a notebook, a long `tune`, a test suite) would otherwise keep every
program it ever compiled and, past the limit, crash inside the compiler. The caches below keep
the most recently used programs and drop the rest; a dropped program is compiled again when it
is next needed (from the persistent compilation cache when it is on).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, MutableMapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_CACHES: list[weakref.ref] = []

TRAINING_LOOPS = 32
"""Compiled training chunks kept by `cfcore.train.session` (one per model spec, optimizer kind,
batch layout and placement; each holds a program per data shape it has run on)."""

MAPPED_LOOPS = 8
"""Compiled loops of several models at once kept by `cfcore.train.batch`."""

BACKEND_FUNCTIONS = 128
"""Compiled helper functions (evaluation, prediction, solves) kept per bound backend."""


def remembered(cache: MutableMapping[K, T], key: K, make: Callable[[], T], limit: int) -> T:
    """`cache[key]`, made by `make()` if missing; keeps at most `limit` entries, dropping the
    least recently used.

    `cache` is any mapping that keeps insertion order (a `dict`): a hit moves its entry to the
    end, so the first entry is always the least recently used.
    """
    if key in cache:
        value = cache.pop(key)
    else:
        value = make()
        while len(cache) >= limit:
            del cache[next(iter(cache))]
    cache[key] = value
    return value


class ProgramCache(dict):
    """A dict of compiled programs that `forget_programs` empties (held weakly: a plain `dict`
    cannot be)."""

    def __init__(self) -> None:
        super().__init__()
        _CACHES[:] = [ref for ref in _CACHES if ref() is not None]
        _CACHES.append(weakref.ref(self))


def forget_programs() -> None:
    """Drops every compiled program cfcore keeps for reuse (the next use compiles again).

    For a long-running process that is done with a set of shapes and wants their memory back
    now rather than when newer programs push them out; the framework's own caches (for
    example `jax.clear_caches()`) are the framework's to clear.
    """
    for ref in _CACHES:
        cache = ref()
        if cache is not None:
            cache.clear()
