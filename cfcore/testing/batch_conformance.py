"""Conformance of `cfcore.fit_many` on a backend: each of K models trained together equals its
own separate `fit`.

The models differ in what a batch may differ in (coefficients, learning rate, seed); each is
also fitted alone, on the same backend, and the parameters must agree within `BATCH_RTOL` of the
largest entry: only the order of float32 sums may differ between the two (a backend's map over
models may batch its reductions). A backend that maps steps over models (`vmap`) must actually
batch them (`ManyFit.batched`). Use it as `BackendConformance`::

    import pytest
    from cfcore.testing.batch_conformance import BatchConformance

    class TestMyBackendBatches(BatchConformance):
        @pytest.fixture
        def backend(self):
            return my_backend_instance
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ..backend.capabilities import capability
from ..data.synthetic import synthetic_ratings
from ..models.als import IALS, WALS
from ..models.biased import BiasedMF
from ..models.many import fit_many
from ..models.mf import MatrixFactorization, RegularizedMF
from ..optimizers import SGD, Adagrad
from ..train.session import TrainingDivergedError

BATCH_RTOL = 1e-5
"""How far a model trained in a batch may land from its own fit, relative to the largest entry."""

STEPS = {"gradient": 4, "sweeps": 2}
"""Steps per case: a sweep solves exactly, so its rows' float32 differences grow with the
sweeps (a WALS case drifts by about 2e-6 of its scale in two sweeps, 1e-5 in four)."""

# name: (make the K models, the fit's keyword arguments per model, common keyword arguments)
Case = tuple[Callable[[], list[Any]], list[dict[str, Any]], dict[str, Any]]


def _sgd(*rates: float) -> list[dict[str, Any]]:
    return [{"optimizer": SGD(r), "seed": i} for i, r in enumerate(rates)]


CASES: dict[str, Case] = {
    "mf": (lambda: [MatrixFactorization(4, 0.5) for _ in range(3)], _sgd(1.0, 2.0, 0.5), {}),
    "regularized": (
        lambda: [RegularizedMF(4, 0.5, c, g) for c, g in ((0.1, 0.0), (0.5, 1.0), (2.0, 0.3))],
        _sgd(1.0, 1.5, 0.5),
        {},
    ),
    "regularized-minibatch": (
        lambda: [RegularizedMF(4, 0.5, c) for c in (0.1, 0.5, 1.0)],
        [{"optimizer": Adagrad(0.1), "seed": s} for s in (0, 1, 2)],
        {"batch_size": 64},
    ),
    "biased-gradient": (
        lambda: [BiasedMF(4, 0.5, c, b) for c, b in ((0.1, 0.01), (0.5, 0.1), (1.0, 1.0))],
        _sgd(0.5, 1.0, 0.25),
        {},
    ),
    "biased-als": (
        lambda: [BiasedMF(4, 0.5, c, b) for c, b in ((0.1, 0.01), (0.5, 0.1), (1.0, 1.0))],
        [{"seed": s} for s in (0, 1, 2)],
        {"solver": "als"},
    ),
    "wals": (
        lambda: [WALS(4, 0.5, c, g) for c, g in ((0.1, 0.0), (0.5, 1.0), (1.0, 0.2))],
        [{"seed": s} for s in (0, 1, 2)],
        {},
    ),
    "ials-cholesky": (
        lambda: [IALS(4, 0.5, c, w) for c, w in ((0.1, 0.1), (0.5, 0.3), (1.0, 0.05))],
        [{"seed": s} for s in (0, 1, 2)],
        {},
    ),
    "ials-cg": (
        lambda: [IALS(4, 0.5, c, w, solver="cg") for c, w in ((0.1, 0.1), (0.5, 0.3), (1.0, 0.05))],
        [{"seed": s} for s in (0, 1, 2)],
        {},
    ),
}


def _problem(case: str = "") -> Any:
    r = synthetic_ratings(40, 30, 400, seed=5)
    return r.to_implicit(counts=True) if case.startswith("ials") else r


class BatchConformance:
    """Checks `fit_many` on a backend against separate fits of the same models."""

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_each_model_equals_its_own_fit(self, backend, case):
        make, per_model, common = CASES[case]
        steps = STEPS["gradient" if "optimizer" in per_model[0] else "sweeps"]
        r = _problem(case)
        together, alone = make(), make()
        # One list per argument (seed, optimizer), an entry per model.
        batch_kw = {name: [k[name] for k in per_model] for name in per_model[0]}
        out = fit_many(
            together, r, steps=steps, eval_every=2, backend=backend, progress=False,
            **batch_kw, **common,
        )  # fmt: skip
        assert out.errors == {}
        assert out.batched == (capability(backend, "vmap") is not None), out.reason
        for m, kw in zip(alone, per_model, strict=True):
            m.fit(r, steps=steps, eval_every=2, backend=backend, progress=False, **kw, **common)
        for i, (a, b) in enumerate(zip(together, alone, strict=True)):
            pa, pb = a.params_numpy(), b.params_numpy()
            for k in pb:
                scale = float(np.max(np.abs(pb[k])))
                dev = float(np.max(np.abs(pa[k] - pb[k]))) / scale
                assert dev <= BATCH_RTOL, f"model {i} {k}: {dev:.2e} from its own fit"
            assert a.step == b.step == steps
            assert list(a.history["step"]) == list(b.history["step"])
            np.testing.assert_allclose(
                a.history.drop(columns="step").to_numpy(),
                b.history.drop(columns="step").to_numpy(),
                rtol=1e-4,
            )

    def test_a_diverging_model_stops_alone(self, backend):
        r = _problem()
        rates = (1.0, 1e9, 0.5)

        def make() -> list[Any]:
            return [RegularizedMF(4, 0.5, 0.1) for _ in rates]

        together, alone = make(), make()
        out = fit_many(
            together, r, steps=6, eval_every=2, backend=backend, progress=False,
            optimizer=[SGD(x) for x in rates], seed=[0, 1, 2],
        )  # fmt: skip
        assert sorted(out.errors) == [1]
        assert isinstance(out.errors[1], TrainingDivergedError)
        with pytest.raises(TrainingDivergedError) as single:
            alone[1].fit(r, steps=6, eval_every=2, backend=backend, progress=False,
                         optimizer=SGD(1e9), seed=1)  # fmt: skip
        assert out.errors[1].step == single.value.step
        assert together[1].step == alone[1].step
        for i in (0, 2):
            assert together[i].step == 6
            assert np.isfinite(together[i].params_numpy()["user"]).all()
