"""Memory estimates made before allocating, so that a size mistake is refused with a reason.

Without them a typo such as `embedding_dim=10**9` reaches NumPy or the framework, which try to
allocate terabytes and fail with a bare `MemoryError` or `RESOURCE_EXHAUSTED` (after minutes of
swapping, at worst). The estimates here are of the arrays cfcore itself is about to create; they
are compared with the memory the process may use:

* `CFCORE_MEMORY_LIMIT` (bytes; suffixes K, M, G, T accepted), if set;
* else the smaller of the machine's physical memory and the cgroup limit (a container's).

An estimate above that is refused with `ResourceLimitError` naming the estimate, the limit and
what to change. Accelerator memory is not queried (that would import the framework): a model that
fits in host memory may still not fit on a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ResourceLimitError

MEMORY_LIMIT_ENV = "CFCORE_MEMORY_LIMIT"

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def format_bytes(n: float) -> str:
    """`n` bytes in binary units: `"3.4 GiB"`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def parse_size(text: str, env: str = MEMORY_LIMIT_ENV) -> int:
    """The bytes a size setting such as `"2G"` names (`env`: the variable, for messages)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _SUFFIXES and t[-1:] else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number) * _SUFFIXES[unit]
    except ValueError:
        raise ResourceLimitError(
            f"{env}={text!r} is not a size: give bytes, or a number with K, M, G or T"
        ) from None
    if value <= 0:
        raise ResourceLimitError(f"{env}={text!r} must be positive")
    return int(value)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text)
    return None


def memory_limit() -> tuple[int | None, str]:
    """The bytes cfcore's estimates are compared with, and where that number comes from.

    Returns:
        `(bytes or None when unknown, description)`.
    """
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env:
        return parse_size(env), f"{MEMORY_LIMIT_ENV}={env}"
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = None
    cgroup = _cgroup_limit()
    if cgroup is not None and (physical is None or cgroup < physical):
        return cgroup, "the container's memory limit"
    return physical, "this machine's memory"


def check_memory(nbytes: float, what: str, advice: str) -> None:
    """Refuses an allocation of about `nbytes` that cannot fit, before it is attempted.

    Args:
        nbytes: the estimated size.
        what: what would be allocated, e.g. "the embeddings (943 + 1682 rows x d=10^9, float32)".
        advice: what to change, e.g. "lower embedding_dim".

    Raises:
        ResourceLimitError: `nbytes` exceeds `memory_limit()`.
    """
    limit, source = memory_limit()
    if limit is not None and nbytes > limit:
        raise ResourceLimitError(
            f"{what} would need about {format_bytes(nbytes)}, more than {source} "
            f"({format_bytes(limit)}); {advice}",
            nbytes=int(nbytes),
            available=int(limit),
        )


def optimizer_slots(optimizer: object) -> int:
    """Arrays of optimizer state per parameter: SGD 0, Adagrad 1, Adam 2, none for closed-form
    sweeps (`None`), others: 2 (a guess)."""
    if optimizer is None:
        return 0
    name = getattr(optimizer, "name", None)
    return {"sgd": 0, "adagrad": 1, "adam": 2}.get(name if isinstance(name, str) else "", 2)
