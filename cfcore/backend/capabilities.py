"""The optional half of the backend boundary: capabilities a backend may offer.

`cfcore.backend.protocol.Backend` lists what every backend must implement. `Capabilities` lists,
with their signatures, the members a backend *may* add: core uses each one when present and works
without it (slower, or refusing only the feature that needs it, with a clear error). Core never
probes a backend with `getattr` outside `cfcore.backend`: it asks `capability(be, name)`, which
resolves the name in this one place (on the wrapped operations of a bound backend, never through
the bound backend's own conveniences) and returns the member or None.

A backend declares a capability simply by having the member (structural typing, as for the
required ones). `OPTIONAL_MEMBERS` names them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, get_args

from ..errors import ArgumentValueError
from .protocol import Array, MapFn, Tree
from .sharding import RowSharding

CapabilityName = Literal[
    "pair_layout",
    "native_optimizer",
    "sync",
    "compile_map",
    "compile_parts",
    "concurrent_parts",
    "row_sharding",
    "strict_float32",
    "vmap",
    "row_dots",
    "row_sums",
    "row_grams",
]
"""The name of one member of `Capabilities`."""


class Capabilities(Protocol):
    """Every optional member of a backend, with its signature (a backend has any subset)."""

    def pair_layout(self, users: Array, items: Array, num_users: int, num_items: int) -> Tree:
        """A precomputed arrangement of observed pairs for a faster `pair_dot`, or None.

        The trainer calls this once per training set (on the host, outside any compiled
        function) and passes the result into every compiled full-batch step with the data, as
        `pair_dot(..., layout=...)`. It depends only on the ids. Without this member (or when it
        returns None) `pair_dot` is called without `layout`.

        Args:
            users: int32 `[n]` (NumPy, range-checked by core), n ≥ 1.
            items: int32 `[n]`.
            num_users: N, rows of the user table.
            num_items: M, rows of the item table.

        Returns:
            None, or a dict tree of native arrays (on the default device) that only this
            backend's `pair_dot` reads. Core moves it like the ratings (`Placement.data`) but
            never slices or indexes it: minibatch steps run without a layout.
        """
        ...

    def native_optimizer(self, optimizer: Any) -> Any:
        """The framework's own optimizer object as a pure pair, or None if it is not one.

        Without this member only `cfcore.optimizers` specs are accepted by `fit`.

        Args:
            optimizer: an object a user of the framework would pass (an optax
                `GradientTransformation`, a Keras 3 optimizer, ...).

        Returns:
            None when the backend does not recognise `optimizer`; else an object with
            `init(params) -> state` and `update(grads, state, params) -> (new_params, state)`, both
            usable inside `compile_loop`. Not bound to cfcore's cross-backend trajectories.
        """
        ...

    def sync(self, tree: Tree) -> Tree:
        """Waits until every array of `tree` is computed (for timing); returns `tree`.

        Without this member the bound backend waits by fetching every leaf with `to_numpy`.
        """
        ...

    def compile_map(self, fn: MapFn) -> Callable[..., Tree]:
        """`run(data, xs, start=0, stop=None) -> ys`: `fn(data, xs[i])` for each i in the range.

        From `start` to `stop - 1` (default: all) along the leading axis of `xs`' leaves, each
        output leaf stacked along a new leading axis (JAX's `lax.map`); usable inside compiled
        code. The ALS half-sweep maps its blocks of rows with it; without it, it writes each
        block into the bucket's output by a select over the whole output (a cost quadratic in the
        number of blocks). A range is one part's blocks (`compile_parts`).
        """
        ...

    def compile_parts(self, fns: Sequence[Callable[..., Any]]) -> Callable[..., list[Any]]:
        """`run(*args) -> [fns[0](*args), ...]`: independent computations run at once.

        None reads another's output; each is compiled apart, and the framework may run them at
        once on one device (TensorFlow: XLA calls from a non-XLA graph, on its inter-op
        threads); usable inside compiled code. Needs `concurrent_parts` (and `compile_map`).
        """
        ...

    def concurrent_parts(self) -> int:
        """How many `compile_parts` parts run at once in the code being traced now.

        1: cut nothing (e.g. inside one compiled program that runs on one core).
        """
        ...

    def row_sharding(self, backend: Any, devices: Any) -> RowSharding:
        """The row-sharding primitives of `fit(..., devices=devices)`: tables spread by rows
        over several devices.

        The backend offers primitives only (`cfcore.backend.sharding.RowSharding`: put rows on
        devices, a per-device map, fetch rows, an all-reduce of the map's outputs, reading
        back); core builds the placement on them (`cfcore.train.placement.RowShardedPlacement`:
        padding, splitting, each device's ALS row blocks and the ALS half-sweep).

        Args:
            backend: the bound backend (what `get_backend` returns).
            devices: an int k (the first k devices) or a sequence of the framework's devices.

        Returns:
            A `RowSharding` subclass over the chosen devices. Without this member `devices=` is
            refused with a `NotSupportedError`.
        """
        ...

    def strict_float32(self) -> None:
        """Turns off reduced-precision float32 matmuls process-wide (TF32, bfloat16 passes).

        Called once per backend by the test suite and `cfcore compare`; without it there is
        nothing to turn off.
        """
        ...

    def vmap(self, fn: Callable[..., Tree], in_axes: tuple[Any, ...]) -> Callable[..., Tree]:
        """`fn` mapped over a leading axis of some of its arguments (JAX's `jax.vmap`).

        `cfcore.fit_many` trains K models in one compiled loop through it: the loop body
        (gradient step or closed-form sweep, with its guard) mapped over the models' stacked
        parameters, optimizer states and coefficients, the training data shared. Usable inside
        `compile_loop`; `fn` may call `value_and_grad` and `compile_map`. Without this member
        `fit_many` trains the models one after another.

        Args:
            fn: `fn(*args) -> tree`, pure.
            in_axes: one entry per positional argument: a tree of the argument's structure (or
                a prefix of it) whose leaves are 0 (mapped over its leading axis) or None
                (shared by every item).

        Returns:
            `mapped(*args) -> tree`, each output leaf with the leading axis of length K.
        """
        ...

    def row_dots(self, csr: Tree, table: Array, x: Array) -> Array:
        """`⟨x[rows[k]], table[cols[k]]⟩` for each observation k of a CSR layout: float32 `[n]`.

        With `row_sums`, a conjugate-gradient ALS half-sweep runs on the observations by row
        (`cfcore.data.row_blocks.row_csr`, which `Placement` builds for a backend with both)
        instead of padded blocks: two sparse products a CG step, no `[B, L, d]` gather.
        Without them, the blocks. Usable inside `compile_loop` and `vmap`.

        Args:
            csr: the device form of `row_csr`'s `"csr"`: `starts` int32 `[R + 1]`, `rows` and
                `cols` int32 `[n]` (a column may repeat within a row, in any order).
            table: `[M, d]`, the fixed table.
            x: `[R, d]`, a row per row of the layout.
        """
        ...

    def row_sums(self, csr: Tree, values: Array, table: Array) -> Array:
        """`Σ_k values[k]·table[cols[k]]` over each row's observations: float32 `[R, d]` (zero
        for a row without any); `values` float32 `[n]`, the rest as `row_dots`."""
        ...

    def row_grams(self, csr: Tree, values: Array, table: Array) -> Array:
        """`Σ_k values[k]·t_k t_kᵀ`, `t_k = table[cols[k]]`, over each row's observations:
        float32 `[R, d, d]` (zero for a row without any); arguments as `row_sums`.

        With `row_dots` and `row_sums`, a Cholesky ALS half-sweep runs on the CSR layout too:
        each row's system from one sparse product, no `[B, L, d]` gathers of padded blocks.
        Without it, Cholesky half-sweeps run on the blocks. Usable inside `compile_loop` and
        `vmap`.
        """
        ...


OPTIONAL_MEMBERS: tuple[str, ...] = get_args(CapabilityName)
"""Every member of `Capabilities`, in the order above."""


def raw_ops(be: Any) -> Any:
    """The operations a bound backend wraps (`be.ops`), or `be` itself when it is not bound.

    Inside compiled code the bound backend's host-side checks and conversions must not run
    (shapes may be symbolic there): core's mathematics calls the raw operations.
    """
    return getattr(be, "ops", be)


def capability(be: Any, name: CapabilityName) -> Any:
    """The backend's optional member `name` (see `Capabilities`), or None if it lacks it.

    Args:
        be: a backend, bound (what `get_backend` returns) or not.
        name: one of `OPTIONAL_MEMBERS`.

    Raises:
        ArgumentValueError: `name` is not an optional member (a typo would otherwise read as
            "absent").
    """
    if name not in OPTIONAL_MEMBERS:
        raise ArgumentValueError(
            f"{name!r} is not an optional backend member; one of {OPTIONAL_MEMBERS}"
        )
    return getattr(raw_ops(be), name, None)


def has_capability(be: Any, *names: CapabilityName) -> bool:
    """Whether the backend has every one of the optional members `names`."""
    return all(capability(be, n) is not None for n in names)


CSR_CAPABILITIES: dict[str, tuple[CapabilityName, ...]] = {
    "cg": ("row_dots", "row_sums"),
    "cholesky": ("row_dots", "row_sums", "row_grams"),
}
"""The members a backend needs for an ALS half-sweep of each solver on CSR rows
(`cfcore.data.row_blocks.row_csr`, `cfcore.train.placement.Placement.csr_rows`)."""


__all__ = [
    "CSR_CAPABILITIES",
    "OPTIONAL_MEMBERS",
    "Capabilities",
    "CapabilityName",
    "capability",
    "has_capability",
    "raw_ops",
]
