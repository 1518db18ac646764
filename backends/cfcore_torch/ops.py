"""The array namespace (`xp`) that core's mathematics is written in, on torch, and array conversion.

Importing this module sets torch's float32 matmuls to full precision, process-wide: on GPUs the
default may use TF32 (and on CPUs reduced-precision modes exist), which would lose agreement with
the other backends and the float64 reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def strict_float32() -> None:
    """Full float32 precision for matmuls and convolutions, process-wide (no TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


strict_float32()

_DTYPES = {"float32": torch.float32, "int32": torch.int32, "bool": torch.bool}
_NP_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


def _default_device() -> torch.device:
    # As JAX and TF do, arrays go to the accelerator when there is one (unless the user chose a
    # default device with torch.set_default_device).
    device = torch.get_default_device()
    if device.type == "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return device


DEVICE = _default_device()


def to_tensor(x: Any, dtype: str | None = None) -> torch.Tensor:
    """A tensor on `DEVICE` from NumPy data, a Python scalar or a tensor (see `Backend.asarray`)."""
    if isinstance(x, torch.Tensor):
        if dtype is not None:
            x = x.to(_DTYPES[dtype])
        elif x.dtype == torch.float64:
            x = x.to(torch.float32)
        elif x.dtype == torch.int64:
            x = x.to(torch.int32)
        return x if x.device == DEVICE else x.to(DEVICE)
    a = np.asarray(x)
    if dtype is not None:
        target = _NP_DTYPES[dtype]
    elif a.dtype.kind == "f":
        target = np.float32
    elif a.dtype.kind in "iu":
        target = np.int32
    else:
        target = a.dtype
    # A C-ordered copy: never aliases the caller's (possibly read-only or negatively strided) data.
    return torch.from_numpy(np.array(a, dtype=target, order="C", copy=True)).to(DEVICE)


def floats(x: Any) -> torch.Tensor:
    """`x` as float32 (a float32 tensor is returned as is, keeping its autograd history)."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.device == DEVICE:
        return x
    return to_tensor(x, "float32")


def indices(x: Any) -> torch.Tensor:
    """`x` as int32 indices."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.int32 and x.device == DEVICE:
        return x
    return to_tensor(x, "int32")


# ---------------------------------------------------------------- ArrayNamespace (20 functions)
square = torch.square
sqrt = torch.sqrt
exp = torch.exp
log = torch.log
tanh = torch.tanh
isfinite = torch.isfinite
matmul = torch.matmul
zeros_like = torch.zeros_like
full_like = torch.full_like


def sum(x, axis: int | None = None):  # noqa: A001  (the array-API names are the contract)
    return torch.sum(x) if axis is None else torch.sum(x, dim=axis)


def mean(x, axis: int | None = None):
    return torch.mean(x) if axis is None else torch.mean(x, dim=axis)


def max(x, axis: int | None = None):  # noqa: A001
    # amax, not torch.max: the latter returns (values, indices) when given a dim.
    return torch.amax(x) if axis is None else torch.amax(x, dim=axis)


def maximum(x, y):
    # torch.maximum (not clamp) for every case: NaN propagates and a tie splits the gradient
    # evenly, as in jax.numpy.
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
    return torch.maximum(x, y)


def where(condition, x, y):
    return torch.where(torch.as_tensor(condition, device=DEVICE), x, y)


def all(x):  # noqa: A001
    return torch.all(x)


def transpose(x):
    return x.mT


def take(x, indices, axis: int = 0):
    indices = torch.as_tensor(indices, device=x.device)
    axis = axis % x.dim()
    if axis == 0 and x.dim() == 2:
        # Rows of a table: embedding's batching rule gathers a vmapped batch of index arrays
        # from the one table (index_select's was several times slower under vmap).
        return torch.nn.functional.embedding(indices, x)
    # index_select takes 1-D indices; reshape to numpy.take's shape for N-D ones.
    out = torch.index_select(x, axis, indices.reshape(-1))
    return out.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1 :])


def concat(xs: Sequence[Any], axis: int = 0):
    return torch.cat(list(xs), dim=axis)


def reshape(x, shape: Sequence[int]):
    return torch.reshape(x, tuple(shape))


def astype(x, dtype: str):
    return torch.as_tensor(x).to(_DTYPES[dtype])
