"""One sweep of every ALS solver on every backend against the float64 oracle, and backend pairs."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.testing import ALSConformance, ALSCrossBackend
from cfcore.testing.als_conformance import SOLVERS

from ..conftest import BACKENDS, load_backend


class TestALSConformance(ALSConformance):
    @pytest.fixture(params=(*BACKENDS, "numpy"))
    def backend(self, request):
        # The float64 reference backend runs the same core code: it checks the mathematics
        # without float32 rounding.
        return (
            cfcore.get_backend("numpy") if request.param == "numpy" else load_backend(request.param)
        )


class TestALSConformanceSegments(TestALSConformance):
    """The same suite with the rows laid out in segments (`row_blocks` picks them for large
    tables only: these small problems would otherwise never run them)."""

    @pytest.fixture(autouse=True)
    def _segments(self, monkeypatch):
        from cfcore.data import row_blocks

        monkeypatch.setattr(row_blocks, "SEGMENTS", True)


@pytest.mark.slow  # TensorFlow compiles each sweep (5-10 s apiece)
class TestALSBackendsAgree(ALSCrossBackend):
    @pytest.fixture(params=[("jax", "tf"), ("jax", "torch")], ids=lambda p: "-".join(p))
    def backend_pair(self, request):
        return tuple(load_backend(name) for name in request.param)


class TestRoundingTolerance:
    """The float32 bound the ALS suites use is tight enough to catch a wrong sweep."""

    def test_float32_rounding_stays_within_its_bound(self):
        from cfcore.reference import FLOAT32_UNIT_ROUNDOFF, float32_rounding

        x = np.linspace(-3.0, 5.0, 1000)
        assert float32_rounding(x, None) is x
        for terms in (1, 100):
            y = float32_rounding(x, np.random.default_rng(0), terms)
            rel = np.abs(y - x) / np.maximum(np.abs(x), 1e-300)
            assert 0 < rel.max() <= FLOAT32_UNIT_ROUNDOFF * np.sqrt(terms)

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_tolerance_rejects_a_perturbed_regularization(self, solver):
        from cfcore.reference import wals_sweep
        from cfcore.specs import WALSSpec
        from cfcore.testing.als_conformance import _params, als_problem, rounding_tolerance

        r = als_problem()
        spec = WALSSpec(4, init_stddev=0.5, regularization_coeff=0.1, solver=solver)
        off = WALSSpec(4, init_stddev=0.5, regularization_coeff=0.1 * (1 + 1e-3), solver=solver)
        params = _params(spec, r)

        def sweep(rounding):
            return wals_sweep(spec, params, r.users, r.items, r.values, rounding=rounding)

        tol = rounding_tolerance(sweep)
        exact, wrong = sweep(None), wals_sweep(off, params, r.users, r.items, r.values)
        for k in exact:
            assert 0 < tol[k] < 1e-3
            dev = np.max(np.abs(wrong[k] - exact[k])) / np.max(np.abs(exact[k]))
            assert dev > tol[k], f"{solver} {k}: a 0.1% change in λ ({dev:.2e}) passes {tol[k]:.2e}"
