"""Argument checks shared by every backend's functional API, done on shapes before any compute."""

from __future__ import annotations

from typing import Any

import numpy as np


def _shape(x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    return tuple(np.shape(x)) if shape is None else tuple(shape)


def check_embeddings(user_emb: Any, item_emb: Any) -> None:
    """Both embeddings are 2-D with the same dimension d."""
    su, sv = _shape(user_emb), _shape(item_emb)
    if len(su) != 2 or len(sv) != 2:
        raise ValueError(f"embeddings must be 2-D [rows, d]; got user {su} and item {sv}")
    if su[1] != sv[1]:
        raise ValueError(
            f"embedding dimensions differ: user embeddings are {su} (d={su[1]}) and item embeddings "
            f"{sv} (d={sv[1]}); both need the same d"
        )


def check_pairs(user_emb: Any, item_emb: Any, users: Any, items: Any, ratings: Any) -> None:
    """Index and rating arrays are 1-D of one length; host (NumPy) indices are in range."""
    check_embeddings(user_emb, item_emb)
    shapes = {"users": _shape(users), "items": _shape(items), "ratings": _shape(ratings)}
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise ValueError(f"users, items and ratings must be 1-D of one length, got shapes {shapes}")
    if shapes["users"][0] == 0:
        raise ValueError(
            "users, items and ratings are empty: the mean over no ratings is undefined"
        )
    # Indices already on a device are not pulled back to check (that would sync); host ones are.
    for name, idx, size in (
        ("user", users, _shape(user_emb)[0]),
        ("item", items, _shape(item_emb)[0]),
    ):
        if isinstance(idx, np.ndarray | list | tuple):
            arr = np.asarray(idx)
            if arr.min() < 0 or arr.max() >= size:
                bad = arr.min() if arr.min() < 0 else arr.max()
                raise ValueError(
                    f"{name} index {bad} is out of range for {size} {name}s (valid: 0..{size - 1})"
                )
