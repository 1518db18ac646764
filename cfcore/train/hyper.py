"""A model's coefficients as run-time inputs of the compiled step, so that a search over them
compiles once.

A spec declares its run-time coefficients in its class attribute `runtime_fields` (a tuple of
field names; e.g. `MFSpec.runtime_fields == ("regularization_coeff", "gravity_coeff")`). They
only scale terms of the objective (λ of L2, λb of the biases, λg of gravity; iALS's α₀, α and ν
too): they are passed to the compiled chunk with the training data
(`data["hyper"]`, float32 scalars) and read there through `Coefficients`, while the chunk's cache
key (`spec_key`) keeps only what changes the program: every other field, and whether each
coefficient is zero (a zero coefficient drops its term, e.g. `MFSpec.regularized`). Gradient
steps and ALS sweeps (`cfcore.models.als`, `cfcore.models.biased`) both read them so.

Example:
    >>> from cfcore.specs import MFSpec
    >>> spec_key(MFSpec(8, regularization_coeff=0.1)) == spec_key(MFSpec(8, regularization_coeff=0.3))
    True
    >>> spec_key(MFSpec(8, regularization_coeff=0.1)) == spec_key(MFSpec(8))
    False
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ArgumentValueError

HYPER = "hyper"
"""The entry of the training data that carries them (`{field: float32 scalar}`)."""


def _runtime_fields(spec: Any) -> tuple[str, ...]:
    """The fields `spec` declares as read at run time: its class attribute `runtime_fields`
    (none if it declares none), each a field of the spec."""
    names = getattr(type(spec), "runtime_fields", ())
    fields = {f.name for f in dataclasses.fields(spec)}
    for name in names:
        if name not in fields:
            raise ArgumentValueError(
                f"{type(spec).__name__}.runtime_fields names {name!r}, which is not a field"
            )
    return tuple(names)


def spec_key(spec: Any) -> tuple:
    """What of `spec` the compiled program depends on: its class, every field but the run-time
    coefficients, and for those whether each is zero."""
    runtime = set(_runtime_fields(spec))
    fields = tuple(
        (f.name, getattr(spec, f.name) == 0 if f.name in runtime else getattr(spec, f.name))
        for f in dataclasses.fields(spec)
    )
    return (type(spec).__name__, fields)


def hyper_values(spec: Any) -> dict[str, np.ndarray]:
    """`spec`'s run-time coefficients as float32 host scalars (to place with the data)."""
    return {f: np.asarray(getattr(spec, f), np.float32) for f in _runtime_fields(spec)}


class Coefficients:
    """`spec` as the compiled step sees it: its run-time coefficients read from `values` (native
    float32 scalars, the data's `"hyper"` entry), every other attribute from the spec itself.

    Args:
        spec: the model's spec (a frozen dataclass).
        values: `{field: scalar}` as `hyper_values` made them, placed on the device.
    """

    def __init__(self, spec: Any, values: dict[str, Any]) -> None:
        self._spec = spec
        self._values = values

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__["_values"]
        if name in values:
            return values[name]
        return getattr(self.__dict__["_spec"], name)


def with_coefficients(spec: Any, batch: Any) -> Any:
    """`spec` with the coefficients a batch carries (`Coefficients`), or `spec` itself when the
    batch has none (a step or evaluation called without them)."""
    if isinstance(batch, dict) and HYPER in batch:
        return Coefficients(spec, batch[HYPER])
    return spec
