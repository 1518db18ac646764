"""Ratings as arrays (`Batch`) and, for imports written before `cfcore.backend`, the Protocol.

Conventions: index arrays are int32 `[n]`, ratings float32 `[n]`; the operations a backend
implements are in `cfcore.backend.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backend.protocol import Backend as Backend


@dataclass(frozen=True)
class Batch:
    """Observed ratings as arrays, host (NumPy) or device (native).

    Attributes:
        users: int32 `[n]`.
        items: int32 `[n]`.
        values: float32 `[n]`.
    """

    users: Any
    items: Any
    values: Any

    @classmethod
    def from_ratings(cls, ratings: Any) -> Batch:
        return cls(ratings.users, ratings.items, ratings.values)
