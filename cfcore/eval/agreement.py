"""Whether backends agree: one model spec trained from the same start on several backends.

`train_on_backends` fits a fresh model per backend with the same seed (the initial values are
drawn in core from the seed, so every backend starts from the same arrays, and minibatches come
from the same seeded sampler); `largest_differences` compares every pair of runs and holds the
largest difference of each quantity against `TOLERANCES`. The cross-backend conformance tests
(`cfcore.testing.CrossBackendConformance`) and the `cfcore compare` command both use these, so
the tolerance a user sees is the one the test suite enforces.

Nothing here imports pytest or a framework: the backends are imported when they are selected.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..backend.capabilities import capability
from ..errors import ArgumentValueError

TOLERANCES: dict[str, float] = {
    "train_mse": 1e-4,
    "test_mse": 1e-4,
    "test_mse_history": 1e-4,
    "embeddings": 1e-3,
}
"""Absolute tolerances within which two float32 backends must agree after the same training.

`train_mse` / `test_mse`: the final errors; `test_mse_history`: the test MSE at every history row;
`embeddings`: every entry of every embedding table (max |a − b|). These are the
documented figures (measured on the 500-step regularized run on ml-100k: 5e-7 in test MSE,
1.3e-6 in the embeddings).
"""


@dataclass
class BackendRun:
    """One backend's training of the shared spec.

    Attributes:
        backend: the backend's name.
        history: the history returned by `fit` (a `step` column and the metric columns).
        embeddings: the final tables, e.g. `{"user": [N, d], "item": [M, d]}` (float32).
        train: final `{"mse", "rmse", "mae", "n"}` on the training ratings.
        test: the same on the test ratings, or None without them.
        compile_s: seconds to compile the training loop (None when not timed).
        step_s: seconds per training step, evaluations between chunks included (None when not
            timed).
        peak_rss_bytes: the process's peak resident memory during this backend's run (None when
            not measured).
        rss_growth_bytes: that peak minus the resident memory when the run started.
    """

    backend: str
    history: pd.DataFrame
    embeddings: dict[str, np.ndarray]
    train: dict[str, float]
    test: dict[str, float] | None
    compile_s: float | None = None
    step_s: float | None = None
    peak_rss_bytes: int | None = None
    rss_growth_bytes: int | None = None


@dataclass(frozen=True)
class Difference:
    """The largest difference of one quantity over every pair of backends."""

    quantity: str
    value: float
    tolerance: float
    pair: tuple[str, str]

    @property
    def ok(self) -> bool:
        return bool(self.value <= self.tolerance)


def _rss_bytes() -> int | None:
    """Resident memory of this process now (Linux: /proc/self/statm; elsewhere psutil, if any)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


class _PeakMemory:
    """Samples the resident memory every few milliseconds on a thread, keeping the peak.

    The high-water mark of the process (`ru_maxrss`) cannot be reset between backends, so a
    sampler stands in; it can miss a spike shorter than its period.
    """

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.start = _rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = _rss_bytes()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now

    def __enter__(self) -> _PeakMemory:
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        now = _rss_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)


def train_on_backends(
    make_model: Callable[[], Any],
    backends: Sequence[Any],
    train: Any,
    test: Any = None,
    *,
    steps: int,
    optimizer: Any,
    seed: int = 0,
    batch_size: int | None = None,
    eval_every: int = 10,
    timed: bool = False,
) -> list[BackendRun]:
    """Trains a fresh `make_model()` on each backend from the same initial values and batches.

    Args:
        make_model: returns a new, unfitted model (the same spec each call).
        backends: backend names or instances, at least one.
        train: training ratings.
        test: optional held-out ratings over the same catalog.
        steps: passed to `model.fit` on every backend, as are the next four.
        optimizer: the optimizer of every fit.
        seed: the seed of every fit (initial values, minibatch order).
        batch_size: the minibatch size of every fit (`None`: full batch).
        eval_every: steps between history rows in every fit.
        timed: also measure compile time, time per step and peak memory. The compile is timed
            on a throwaway model of the same spec for `eval_every` steps (the trainer keeps the
            compiled loop, so the measured run reuses it); the measured run is the whole `fit`.

    Returns:
        One `BackendRun` per backend, in the order given.
    """
    import cfcore

    if not backends:
        raise ArgumentValueError("no backends given: pass at least one backend name")
    runs = []
    for name in backends:
        be = cfcore.get_backend(name) if isinstance(name, str) else name
        fit = dict(
            test=test,
            optimizer=optimizer,
            backend=be,
            seed=seed,
            batch_size=batch_size,
            eval_every=eval_every,
            progress=False,
        )
        compile_s = step_s = None
        first, warm = 0.0, 0
        with _PeakMemory() as mem:
            if timed:
                warm = min(eval_every, steps)
                t0 = time.perf_counter()
                make_model().fit(train, steps=warm, **fit)
                first = time.perf_counter() - t0
            model = make_model()
            t0 = time.perf_counter()
            history = model.fit(train, steps=steps, **fit)
            total = time.perf_counter() - t0
        if timed:
            step_s = total / steps
            # The warm-up ran `warm` steps and their evaluations besides the compile.
            compile_s = max(first - warm * step_s, 0.0)
        runs.append(
            BackendRun(
                backend=be.name,
                history=history,
                embeddings={k: np.asarray(v) for k, v in model.embeddings.items()},
                train=model.evaluate(train),
                test=None if test is None else model.evaluate(test),
                compile_s=compile_s,
                step_s=step_s,
                peak_rss_bytes=mem.peak if timed else None,
                rss_growth_bytes=(
                    mem.peak - mem.start
                    if timed and mem.peak is not None and mem.start is not None
                    else None
                ),
            )
        )
    return runs


def largest_differences(
    runs: Sequence[BackendRun], tolerances: dict[str, float] | None = None
) -> list[Difference]:
    """The largest difference of each quantity over every pair of runs, against its tolerance.

    Quantities: `train_mse` and `test_mse` (final), `test_mse_history` (every history row) and
    `embeddings:<name>` for each embedding table (max |a − b| over its entries).

    Args:
        runs: at least two runs of the same spec (from `train_on_backends`).
        tolerances: overrides of `TOLERANCES`.

    Returns:
        One `Difference` per quantity, in the order above.
    """
    tol = {**TOLERANCES, **(tolerances or {})}
    if len(runs) < 2:
        raise ArgumentValueError(f"comparing backends needs at least two runs, got {len(runs)}")
    keys = list(runs[0].embeddings)
    for r in runs[1:]:
        if sorted(r.embeddings) != sorted(keys):
            raise ArgumentValueError(
                f"runs hold different embeddings: {runs[0].backend} {keys}, "
                f"{r.backend} {list(r.embeddings)}"
            )
    found: dict[str, tuple[float, tuple[str, str]]] = {}

    def keep(quantity: str, value: float, pair: tuple[str, str]) -> None:
        if quantity not in found or value > found[quantity][0] or np.isnan(value):
            found[quantity] = (float(value), pair)

    for a, b in itertools.combinations(runs, 2):
        pair = (a.backend, b.backend)
        keep("train_mse", abs(a.train["mse"] - b.train["mse"]), pair)
        if a.test is not None and b.test is not None:
            keep("test_mse", abs(a.test["mse"] - b.test["mse"]), pair)
        if "test_mse" in a.history and "test_mse" in b.history:
            ha, hb = a.history["test_mse"].to_numpy(), b.history["test_mse"].to_numpy()
            if ha.shape != hb.shape:
                raise ArgumentValueError(
                    f"{a.backend} has {ha.size} history rows and {b.backend} {hb.size}: not the "
                    "same training"
                )
            keep("test_mse_history", float(np.max(np.abs(ha - hb))), pair)
        for k in keys:
            ea, eb = a.embeddings[k].astype(np.float64), b.embeddings[k].astype(np.float64)
            keep(f"embeddings:{k}", float(np.max(np.abs(ea - eb))), pair)
    return [
        Difference(q, value, tol["embeddings" if q.startswith("embeddings:") else q], pair)
        for q, (value, pair) in found.items()
    ]


@dataclass
class Comparison:
    """The runs of one spec on several backends and how far they differ."""

    runs: list[BackendRun]
    differences: list[Difference] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return all(d.ok for d in self.differences)

    def failures(self) -> list[Difference]:
        return [d for d in self.differences if not d.ok]


def strict_float32(backend: Any) -> None:
    """Turns off the reduced-precision matmuls a framework may use on a GPU (TF32, bfloat16 passes).

    Cross-backend agreement is a float32 property: TensorFlow's TF32 or JAX's default matmul
    precision on a GPU would change results well beyond `TOLERANCES`. The test suite's conftest
    and `cfcore compare` call this once per backend; on a CPU it changes nothing. Each backend
    does it for its own framework (its optional `strict_float32`); one without it has nothing to
    turn off.
    """
    switch = capability(backend, "strict_float32")
    if switch is not None:
        switch()
