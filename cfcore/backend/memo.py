"""Inputs placed once while several models prepare the same training data (`cfcore.fit_many`).

Each model's `fit` places its training data on the device (`Placement.data`, `device_batch`
with its pair layout). K models fitted together on one `Ratings` would place K copies and build
K pair layouts; inside `shared_inputs()` the second and later requests for the same host object
get the first one's native arrays, which `fit_many` then passes once to the batched loop.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_MEMO: ContextVar[dict[tuple, tuple[Any, Any]] | None] = ContextVar("cfcore_memo", default=None)


@contextmanager
def shared_inputs() -> Iterator[None]:
    """Within it, `shared(source, key, make)` makes each value once per source and key."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def shared(source: Any, key: Hashable, make: Callable[[], Any]) -> Any:
    """`make()`, or inside `shared_inputs()` the value made earlier for the same `source`
    object (by identity; held, so its identity is not reused) and `key`."""
    memo = _MEMO.get()
    if memo is None:
        return make()
    full = (id(source), key)
    hit = memo.get(full)
    if hit is not None and hit[0] is source:
        return hit[1]
    value = make()
    memo[full] = (source, value)
    return value
