"""Checks done in core before any dispatch to a backend: shapes, index dtypes and ranges, k.

Backends never import these: core validates, then calls the backend's operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArgumentTypeError, ArgumentValueError


def _shape(x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    return tuple(np.shape(x)) if shape is None else tuple(shape)


def check_embeddings(user_emb: Any, item_emb: Any) -> None:
    """Both embeddings are 2-D with the same dimension d."""
    su, sv = _shape(user_emb), _shape(item_emb)
    if len(su) != 2 or len(sv) != 2:
        raise ArgumentValueError(f"embeddings must be 2-D [rows, d]; got user {su} and item {sv}")
    if su[1] != sv[1]:
        raise ArgumentValueError(
            f"embedding dimensions differ: user embeddings are {su} (d={su[1]}) and item embeddings "
            f"{sv} (d={sv[1]}); both need the same d"
        )


def _dtype_kind(x: Any) -> str | None:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return np.asarray(x).dtype.kind
    try:
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).kind
    except TypeError:
        name = str(dtype).rsplit(".", 1)[-1]  # e.g. torch.int32
        return "i" if "int" in name else "f" if "float" in name else "b" if "bool" in name else None


def check_indices(x: Any, what: str) -> None:
    """`x` holds integers (NumPy, Python or native): float indices are refused, never truncated."""
    kind = _dtype_kind(x)
    if kind is not None and kind not in "iu":
        raise ArgumentTypeError(
            f"{what} must be integers (int32 indices), got an array of dtype "
            f"{getattr(x, 'dtype', np.asarray(x).dtype)}"
        )


def check_pairs(user_emb: Any, item_emb: Any, users: Any, items: Any, ratings: Any) -> None:
    """Index and rating arrays are 1-D of one length, indices integers; host indices in range."""
    check_embeddings(user_emb, item_emb)
    check_indices(users, "users")
    check_indices(items, "items")
    shapes = {"users": _shape(users), "items": _shape(items), "ratings": _shape(ratings)}
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise ArgumentValueError(
            f"users, items and ratings must be 1-D of one length, got shapes {shapes}"
        )
    if shapes["users"][0] == 0:
        raise ArgumentValueError(
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
                raise ArgumentValueError(
                    f"{name} index {bad} is out of range for {size} {name}s (valid: 0..{size - 1})"
                )


def host_ints(x: Any) -> np.ndarray | None:
    """`x` as NumPy if it is on the host; None for arrays already on a device (checking those
    would synchronise)."""
    return np.asarray(x) if isinstance(x, np.ndarray | list | tuple) else None


def check_index_range(idx: np.ndarray, size: int, what: str, of: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = int(idx.min() if idx.min() < 0 else idx.max())
        raise ArgumentValueError(
            f"{what} {bad} is out of range for {size} {of} (valid: 0..{size - 1})"
        )


def check_softmax_inputs(query_emb: Any, item_emb: Any, labels: Any, log_q: Any = None) -> None:
    """Shapes of a softmax loss's arguments, integer labels, and host labels in range.

    Raises:
        ValueError: naming the bad shape or label and what was expected.
    """
    sq, sv, sl = _shape(query_emb), _shape(item_emb), _shape(labels)
    if len(sq) != 2 or len(sv) != 2:
        raise ArgumentValueError(
            f"query and item embeddings must be 2-D [rows, d]; got query {sq} and item {sv}"
        )
    if sq[1] != sv[1]:
        raise ArgumentValueError(
            f"the query embedding dimension {sq[1]} (query embeddings {sq}) must equal the item "
            f"embedding dimension {sv[1]} (item embeddings {sv})"
        )
    if len(sl) != 1 or sl[0] != sq[0]:
        raise ArgumentValueError(
            f"labels must be 1-D with one label per query row ({sq[0]}), got {sl}"
        )
    if sq[0] == 0:
        raise ArgumentValueError("the batch is empty: the mean loss over no examples is undefined")
    if log_q is not None and tuple(_shape(log_q)) != (sv[0],):
        raise ArgumentValueError(
            f"log_q must have one entry per item, shape ({sv[0]},), got {_shape(log_q)}"
        )
    check_indices(labels, "labels")
    host = host_ints(labels)
    if host is not None:
        check_index_range(host, sv[0], "label", "items")


def check_bag_inputs(table: Any, ids: Any, weights: Any, combiner: str = "mean") -> None:
    """Shapes of a bag-of-words lookup, host ids in range, and the combiner's name.

    `ids` and `weights` are `[..., L]`; or `ids` is None and `weights` `[..., V]` (dense bags).
    """
    st, sw = _shape(table), _shape(weights)
    if len(st) != 2:
        raise ArgumentValueError(f"the embedding table must be 2-D [vocabulary, d], got {st}")
    if combiner not in ("mean", "sum"):
        raise ArgumentValueError(f"combiner must be 'mean' or 'sum', got {combiner!r}")
    if ids is None:
        if len(sw) < 1 or sw[-1] != st[0]:
            raise ArgumentValueError(
                f"dense bags need weights [..., {st[0]}] (one count per token of the table {st}), "
                f"got {sw}"
            )
        return
    si = _shape(ids)
    if si != sw or len(si) < 1:
        raise ArgumentValueError(f"ids and weights must have one shape [..., L], got {si} and {sw}")
    check_indices(ids, "token ids")
    host = host_ints(ids)
    if host is not None:
        check_index_range(host, st[0], "token id", "tokens in the vocabulary")


def check_k(k: object, size: int | None = None, what: str = "catalogue size") -> int:
    """`k` as an int in `[1, size]` (`k >= 1` when `size` is None), else a ValueError.

    The one check of a top-`k` argument (retrieval, ranking metrics, exploration tables).

    Args:
        k: the value to check; an int or NumPy integer (not a bool).
        size: the largest valid `k`, or None for no upper bound.
        what: what `size` counts, as the error names it ("catalogue size": the items).

    Example:
        >>> check_k(3, 10)
        3
        >>> check_k(11, 10)
        Traceback (most recent call last):
        ...
        cfcore.errors.ArgumentValueError: k=11 is out of range: it must be between 1 and the catalogue size 10
        >>> check_k(0)
        Traceback (most recent call last):
        ...
        cfcore.errors.ArgumentValueError: k must be a positive int, got 0
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ArgumentValueError(f"k must be a positive int, got {k!r}")
    if size is None:
        if k < 1:
            raise ArgumentValueError(f"k must be a positive int, got {k!r}")
    elif not 1 <= k <= size:
        raise ArgumentValueError(
            f"k={k} is out of range: it must be between 1 and the {what} {size}"
        )
    return int(k)
