"""Where training data and parameters live: the one place the trainer asks.

Single-device training puts everything on the backend's default device. Multi-device training
(row-sharded tables, batches split over devices) is a different `Placement` handed to the same
trainer: nothing else in core decides where arrays go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

# The trainers a model asks a placement for (`Placement.check_trainer`), and what each is.
TRAINERS: dict[str, str] = {
    "gradient": "gradient steps of MatrixFactorization / RegularizedMF",
    "biased-gradient": "gradient steps of BiasedMF",
    "als": "ALS sweeps",
    "softmax": "softmax training",
}


class Placement:
    """Puts host (NumPy) trees on the backend's default device.

    Args:
        backend: the backend whose arrays are made.
    """

    # Whether full-batch steps may use the backend's precomputed pair layout (its kernel
    # assumes every pair's rows live on one device).
    pair_layout = True
    # The trainers (keys of `TRAINERS`) this placement runs: None for all of them. A sharded
    # placement that runs only some lists them, and the others are refused before training.
    trainers: tuple[str, ...] | None = None

    def check_trainer(self, trainer: str, model: str) -> None:
        """Refuses, before anything is placed, a trainer this placement does not run.

        Args:
            trainer: a key of `TRAINERS` (what the model's `fit` is about to run).
            model: the model's class name, for the message.

        Raises:
            ValueError: `trainer` is not a key of `TRAINERS`.
            NotImplementedError: this placement does not run `trainer`; the message names the
                model, the backend and what does shard there.
        """
        if trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {sorted(TRAINERS)}, got {trainer!r}")
        if self.trainers is None or trainer in self.trainers:
            return
        name = getattr(self.backend, "name", type(self.backend).__name__)
        runs = "; ".join(TRAINERS[t] for t in self.trainers)
        raise NotImplementedError(
            f"{model} ({TRAINERS[trainer]}) cannot train on several devices on backend "
            f"{name!r} yet: there devices= shards only {runs}. Pass devices=None (one device), "
            "or backend='jax', which shards every model"
        )

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @property
    def devices_key(self) -> Any:
        """Which devices it spreads over (None: the backend's default device)."""
        return None

    @property
    def key(self) -> Any:
        """What a compiled chunk built for this placement depends on (None: nothing)."""
        return None

    def view(self, params: dict[str, Any], batch: Any) -> tuple[dict[str, Any], Any]:
        """The parameters and batch as the loss sees them, inside the compiled step (here:
        unchanged; a placement that pads arrays strips the padding)."""
        return params, batch

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """A context the step is traced in (here: none). A sharded placement's tells the
        backend's kernels to run their multi-device forms (e.g. shard_map gathers)."""
        return contextlib.nullcontext()

    def placed(
        self, fn: Callable[[dict[str, Any], Any], Any]
    ) -> Callable[[dict[str, Any], Any], Any]:
        """`fn(params, batch)` (a loss, an objective's terms) on the placed arrays: traced in
        `scope()`, on the `view` of the parameters and batch."""

        def run(params: dict[str, Any], batch: Any) -> Any:
            with self.scope():
                return fn(*self.view(params, batch))

        return run

    def row_blocks(self, build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The host row blocks of an ALS half-sweep: `build(*args, **kwargs)`
        (`cfcore.data.row_blocks.row_blocks`); a sharded placement builds each device's own."""
        return build(*args, **kwargs)

    def half_sweep(self, half: Callable[..., Any]) -> Callable[..., Any]:
        """An ALS half-sweep `half(fixed, current, blocks, prior)` as it runs here (unchanged; a
        sharded placement solves each device's rows on it)."""
        return half

    def params(self, params: dict[str, np.ndarray]) -> dict[str, Any]:
        """Parameters as float32 native arrays."""
        return {k: self.backend.asarray(np.asarray(v, np.float32)) for k, v in params.items()}

    def data(self, tree: Any) -> Any:
        """A tree of host arrays (ratings, bags, batch indices) as native arrays, dtypes narrowed."""
        if tree is None:
            return None
        if isinstance(tree, dict):
            return {k: self.data(v) for k, v in tree.items()}
        if isinstance(tree, list | tuple):
            return type(tree)(self.data(v) for v in tree)
        return self.backend.asarray(tree)

    def shapes(self, params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape as the model sees it (a sharded placement's padding removed)."""
        return {k: tuple(int(s) for s in np.shape(v)) for k, v in params.items()}

    def host_shards(self, params: dict[str, Any]) -> Iterable[tuple[int, int, dict[str, Any]]]:
        """The shards of the parameters this process holds, one at a time to the host (for
        sharded checkpoints): `(index, count, {name: (start, stop, rows)})` each, rows float32
        `[stop - start, ...]` (a list, or a generator that copies each shard when asked). Here:
        one shard of whole tables."""
        host = self.to_host(params)
        return [(0, 1, {k: (0, int(v.shape[0]), v) for k, v in host.items()})]

    @property
    def is_primary(self) -> bool:
        """Whether this process writes the files every process shares (the checkpoint's
        index): True but on the processes after the first of a multi-process run."""
        return True

    def to_host(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        """Parameters back on the host as float32 NumPy arrays."""
        return {k: np.asarray(self.backend.to_numpy(v), np.float32) for k, v in params.items()}
