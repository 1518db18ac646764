"""Conformance of the ALS models on a backend: one sweep of each solver against the float64 oracle.

Every expectation comes from `cfcore.reference` (per-row float64 solves written out: `als_rows`,
`wals_sweep`, `ials_sweep`, `biased_als_sweep`, and the objectives by their definitions), never
from the code under test. Use it as `BackendConformance`::

    import pytest
    from cfcore.testing import ALSConformance

    class TestMyBackendALS(ALSConformance):
        @pytest.fixture
        def backend(self):
            return my_backend_instance

Tolerance: derived from the computation, not from what one CPU gave. A sweep is two rounds of
float32 solves (the second built on the first's float32 rows), and how far float32 may move it
depends on the systems' conditioning and, for CG, on the few unconverged steps. So the oracle
measures it: `rounding_tolerance` runs the same float64 sweep in Monte Carlo arithmetic (every
operation's result perturbed as a float32 rounding would, sums by the probabilistic √n bound:
`cfcore.reference.float32_rounding`) a few times, and allows `ROUNDING_SAFETY` times the largest
spread from the exact rows, relative to the largest entry. Any summation order or kernel a CPU
picks lies inside that spread; the three frameworks on Intel and AMD CPUs land within 0.1-1.0
of it. Two backends are held to each other by the sum of their bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .. import reference as ref
from ..data import row_blocks as row_blocks_module
from ..data.ratings import Ratings
from ..data.synthetic import synthetic_ratings
from ..init import init_mf_params
from ..specs import BiasedMFSpec, IALSSpec, WALSSpec
from ..train.placement import Placement
from .conformance import assert_array_close, assert_scalar_close

SWEEP_RTOL = 2e-5
"""A fixed bound for well-conditioned sweeps (the systems of `als_problem` with λ ≥ 0.1)."""
ROUNDING_SAMPLES = 8
ROUNDING_SAFETY = 4.0
SOLVERS = ("cholesky", "cg")

Reference = Callable[[np.random.Generator | None], dict[str, np.ndarray]]


def rounding_tolerance(reference: Reference, samples: int = ROUNDING_SAMPLES) -> dict[str, float]:
    """How far a float32 run of `reference` may land from its exact float64 result, per array.

    Args:
        reference: the float64 computation, taking the `rounding` generator of
            `cfcore.reference.als_rows` (None: exact).
        samples: Monte Carlo arithmetic runs (seeded: the bound is the same on every machine).

    Returns:
        `{name: ROUNDING_SAFETY × the largest relative deviation, max|run − exact| / max|exact|}`,
        a relative tolerance for `assert_array_close`.
    """
    exact = reference(None)
    spread = dict.fromkeys(exact, 0.0)
    for s in range(samples):
        run = reference(np.random.default_rng([7, s]))
        for k, want in exact.items():
            scale = max(float(np.max(np.abs(want))), 1e-30)
            spread[k] = max(spread[k], float(np.max(np.abs(run[k] - want))) / scale)
    return {k: ROUNDING_SAFETY * v for k, v in spread.items()}


def als_problem(seed: int = 3) -> Ratings:
    """A small explicit problem: 30 users, 20 items, 300 ratings (some users with < d ratings)."""
    return synthetic_ratings(30, 20, 300, seed=seed)


def _params(spec, r: Ratings, biased: bool = False) -> dict[str, np.ndarray]:
    params = init_mf_params(spec, r.num_users, r.num_items, 0)
    if biased:
        rng = np.random.default_rng(1)
        params["user_bias"] = rng.normal(0, 0.3, r.num_users).astype(np.float32)
        params["item_bias"] = rng.normal(0, 0.3, r.num_items).astype(np.float32)
    return params


LAYOUTS = ("fit", "blocks")
"""How a conformance sweep lays its rows out: as `fit` does on the backend ("fit": CSR rows where
the backend has the sparse row products of the solver, `Placement.csr_rows`), or in padded
blocks everywhere ("blocks", `cfcore.data.row_blocks.row_blocks`)."""


def run_sweep(backend, kind: str, spec, r: Ratings, params, mean: float = 0.0, layout: str = "fit"):
    """One sweep of model `kind` ("wals", "ials", "biased") on `backend` from host `params`,
    its rows laid out as `layout` (`LAYOUTS`): `(objective at params, new params)` as host
    float64 arrays."""
    from ..models import als, biased

    place = Placement(backend)
    lay = place if layout == "fit" else Placement(None)
    if kind == "wals":
        data, sweep = als.wals_blocks(spec, r, lay), als.wals_sweep(backend, spec)
    elif kind == "ials":
        data, sweep = als.ials_blocks(spec, r, lay), als.ials_sweep(backend, spec)
    else:
        data = biased.biased_blocks(spec, r, mean, lay)
        sweep = biased.biased_sweep(backend, spec)
    total, new = sweep(place.params(params), place.data(data))
    host = {k: np.asarray(backend.to_numpy(v), np.float64) for k, v in new.items()}
    return float(backend.to_numpy(total)), host


def _reference(
    kind: str, spec, r: Ratings, params, mean: float = 0.0
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The exact float64 sweep of model `kind` and its float32 tolerance per array."""

    def sweep(rounding: np.random.Generator | None) -> dict[str, np.ndarray]:
        args = (spec, params, r.users, r.items, r.values)
        if kind == "wals":
            return ref.wals_sweep(*args, rounding=rounding)
        if kind == "ials":
            return ref.ials_sweep(*args, rounding=rounding)
        return ref.biased_als_sweep(*args, mean, rounding=rounding)

    return sweep(None), rounding_tolerance(sweep)


def layouts(backend, solver: str) -> tuple[str, ...]:
    """The `LAYOUTS` that differ on this backend: "blocks" too only where `fit` lays the rows
    of `solver` out otherwise (CSR rows, `Placement.csr_rows`)."""
    if Placement(backend).csr_rows(solver):
        return LAYOUTS
    return ("fit",)


class ALSConformance:
    """One sweep of WALS, iALS, biased ALS and biased Gibbs sampling (its noise given) on
    `backend` equals `cfcore.reference`."""

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_wals_sweep(self, backend, solver):
        r = als_problem()
        spec = WALSSpec(4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=0.5,
                        solver=solver)  # fmt: skip
        params = _params(spec, r)
        want, tol = _reference("wals", spec, r, params)
        terms, _ = ref.mf_objective(spec.objective, params, r.users, r.items, r.values)
        for layout in layouts(backend, solver):
            total, got = run_sweep(backend, "wals", spec, r, params, layout=layout)
            for k in ("user", "item"):
                assert_array_close(got[k], want[k], tol[k], f"WALS {solver} ({layout}) {k}")
            assert_scalar_close(total, terms["total"], what=f"WALS objective ({layout})")

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_ials_sweep(self, backend, solver):
        r = als_problem().to_implicit(threshold=3.0)
        counts = np.random.default_rng(2).integers(1, 4, len(r)).astype(np.float32)
        r = Ratings(r.users, r.items, counts, r.num_users, r.num_items)
        spec = IALSSpec(4, init_stddev=0.3, regularization_coeff=0.05, unobserved_weight=0.2,
                        regularization_exponent=0.5, confidence=0.7, solver=solver)  # fmt: skip
        params = _params(spec, r)
        want, tol = _reference("ials", spec, r, params)
        expected = ref.ials_objective(spec, params, r.users, r.items, r.values)["total"]
        for layout in layouts(backend, solver):
            total, got = run_sweep(backend, "ials", spec, r, params, layout=layout)
            for k in ("user", "item"):
                assert_array_close(got[k], want[k], tol[k], f"iALS {solver} ({layout}) {k}")
            assert_scalar_close(total, expected, what=f"iALS objective ({layout})")

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_biased_sweep(self, backend, solver):
        r = als_problem()
        spec = BiasedMFSpec(4, init_stddev=0.3, regularization_coeff=0.2,
                            bias_regularization_coeff=0.05, gravity_coeff=0.3,
                            solver=solver)  # fmt: skip
        params = _params(spec, r, biased=True)
        mean = float(np.mean(r.values.astype(np.float64)))
        want, tol = _reference("biased", spec, r, params, mean)
        terms = ref.biased_mf_objective(spec, params, r.users, r.items, r.values, mean)
        for layout in layouts(backend, solver):
            total, got = run_sweep(backend, "biased", spec, r, params, mean, layout)
            for k in ("user", "item", "user_bias", "item_bias"):
                assert_array_close(got[k], want[k], tol[k], f"biased {solver} ({layout}) {k}")
            assert_scalar_close(total, terms["total"], what=f"biased objective ({layout})")

    def test_biased_gibbs_sweep(self, backend):
        """One Gibbs sweep of `BiasedMF.sample_posterior`, its noise given, equals the float64
        perturbed sweep; the noise is drawn per rating and laid out as the buckets are."""
        from ..models import biased, posterior

        r = als_problem()
        spec = BiasedMFSpec(4, init_stddev=0.3, regularization_coeff=0.2,
                            bias_regularization_coeff=0.05, solver="cholesky")  # fmt: skip
        params = _params(spec, r, biased=True)
        mean = float(np.mean(r.values.astype(np.float64)))
        n, m, count = r.num_users, r.num_items, len(r)
        rng = np.random.default_rng(5)
        want_noise = {
            "user_obs": rng.normal(0, 0.5, count),
            "item_obs": rng.normal(0, 0.5, count),
            "extra_user": rng.normal(0, 2.0, (n, 5)),
            "extra_item": rng.normal(0, 2.0, (m, 5)),
        }
        noise: dict[str, Any] = {"extra_user": want_noise["extra_user"].astype(np.float32),
                                 "extra_item": want_noise["extra_item"].astype(np.float32)}  # fmt: skip
        ones = np.ones(count, np.float32)
        for key, rows, cols, size, eps in (
            ("by_user", r.users, r.items, n, want_noise["user_obs"]),
            ("by_item", r.items, r.users, m, want_noise["item_obs"]),
        ):
            laid = row_blocks_module.row_blocks(
                rows, cols, eps.astype(np.float32), ones, np.full(size, count / size),
                dim=5, solver="cholesky",
            )  # fmt: skip
            noise[key] = [b["values"] for b in laid["buckets"]]  # type: ignore[attr-defined]
        place = Placement(backend)
        sweep = posterior.gibbs_sweep(backend, spec)
        new = sweep(
            place.params(params), place.data(biased.biased_blocks(spec, r, mean)), place.data(noise)
        )
        got = {k: np.asarray(backend.to_numpy(v), np.float64) for k, v in new.items()}

        def exact(rounding: np.random.Generator | None) -> dict[str, np.ndarray]:
            return ref.biased_als_sweep(
                spec, params, r.users, r.items, r.values, mean, want_noise, rounding=rounding
            )

        want, tol = exact(None), rounding_tolerance(exact)
        for k in ("user", "item", "user_bias", "item_bias"):
            assert_array_close(got[k], want[k], tol[k], f"biased gibbs {k}")

    def test_blocks_do_not_change_a_sweep(self, backend, monkeypatch):
        from ..models.als import wals_blocks

        # Blocks of a few rows (the loop over a bucket's blocks runs many times), and a bucket
        # per power of two (none merged): the same sweep.
        monkeypatch.setattr(row_blocks_module, "BLOCK_FLOATS", 16 * 16)
        monkeypatch.setattr(row_blocks_module, "MIN_BUCKET_OBS", 1)
        monkeypatch.setattr(row_blocks_module, "LADDER_STEPS", 1)
        monkeypatch.setattr(row_blocks_module, "WHOLE_FLOATS", 0)
        # CSR rows (where `fit` lays CG out so) in parts of at most 3 rows and 20 observations.
        monkeypatch.setattr(row_blocks_module, "CSR_PART_FLOATS", 3 * 4)
        monkeypatch.setattr(row_blocks_module, "CSR_PART_OBS", 20)
        r = als_problem()
        for solver in SOLVERS:
            spec = WALSSpec(4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=0.5,
                            solver=solver)  # fmt: skip
            params = _params(spec, r)
            blocks = wals_blocks(spec, r)
            most = max(b["ids"].shape[0] for b in blocks["by_user"]["buckets"])
            assert most > 3, "the test must use several blocks in a bucket"
            want, tol = _reference("wals", spec, r, params)
            laid = wals_blocks(spec, r, Placement(backend))["by_user"]
            assert "csr" not in laid or len(laid["csr"]) > 3, "the test must use several parts"
            for layout in layouts(backend, solver):
                _, got = run_sweep(backend, "wals", spec, r, params, layout=layout)
                for k in ("user", "item"):
                    assert_array_close(got[k], want[k], tol[k], f"blocked {solver} ({layout}) {k}")

    @pytest.mark.slow  # three small fits: about 30 s on TensorFlow (compiling), 2 s on the others
    def test_fold_in_row_is_the_sweep_row(self, backend):
        """Fold-in of a trained user's ratings gives the row a user half-sweep computes."""
        import cfcore

        r = als_problem()
        implicit = r.to_implicit(threshold=3.0)
        users = [0, 7]  # folded in together
        for model, data in (
            (cfcore.WALS(4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=0.5), r),
            (
                cfcore.IALS(
                    4,
                    init_stddev=0.3,
                    regularization_coeff=0.05,
                    unobserved_weight=0.2,
                    confidence=0.5,
                ),
                implicit,
            ),  # fmt: skip
            (
                cfcore.BiasedMF(
                    4,
                    init_stddev=0.3,
                    regularization_coeff=0.2,
                    bias_regularization_coeff=0.05,
                    gravity_coeff=0.3,
                ),
                r,
            ),  # fmt: skip
        ):
            model.fit(data, steps=1, backend=backend, progress=False)
            p = {k: v.astype(np.float64) for k, v in model.params_numpy().items()}
            spec = model.spec
            mine = np.isin(data.users, users)
            rows = np.searchsorted(users, data.users[mine])
            new = Ratings(rows, data.items[mine], data.values[mine], len(users), data.num_items)
            if isinstance(model, cfcore.BiasedMF):
                emb, bias = model.fold_in_with_bias(new, backend=backend)
                got = np.concatenate([emb, bias[:, None]], 1)
                mean = model.global_mean
                assert mean is not None
                want, tol = _reference("biased", spec, data, p, mean)
                table = np.concatenate([want["user"], want["user_bias"][:, None]], 1)
                rtol = max(tol["user"], tol["user_bias"])
            else:
                got = model.fold_in(new, backend=backend)
                kind = "wals" if isinstance(model, cfcore.WALS) else "ials"
                want, tol = _reference(kind, spec, data, p)
                table, rtol = want["user"], tol["user"]
            # The bound is relative to the whole table's largest entry: so is the check.
            scale = float(np.max(np.abs(table)))
            np.testing.assert_allclose(
                got, table[users], rtol=rtol, atol=rtol * scale, err_msg=type(model).__name__
            )


class ALSCrossBackend:
    """The same sweep on two backends (the `backend_pair` fixture) from the same values agrees."""

    @pytest.mark.parametrize("kind", ("wals", "ials", "biased"))
    @pytest.mark.parametrize("solver", SOLVERS)
    def test_one_sweep_agrees(self, backend_pair, kind, solver):
        a, b = backend_pair
        r = als_problem()
        mean = 0.0
        if kind == "wals":
            spec = WALSSpec(4, init_stddev=0.5, gravity_coeff=0.5, solver=solver)
        elif kind == "ials":
            r = r.to_implicit(threshold=3.0)
            spec = IALSSpec(4, init_stddev=0.3, regularization_coeff=0.05, solver=solver)
        else:
            spec = BiasedMFSpec(4, init_stddev=0.3, gravity_coeff=0.3, solver=solver)
            mean = float(np.mean(r.values))
        params = _params(spec, r, biased=kind == "biased")
        ta, got_a = run_sweep(a, kind, spec, r, params, mean)
        tb, got_b = run_sweep(b, kind, spec, r, params, mean)
        assert_scalar_close(ta, tb, what=f"{kind} objective")
        # Each backend lies within its bound of the exact sweep: the two within twice that.
        _, tol = _reference(kind, spec, r, params, mean)
        for k in got_a:
            assert_array_close(got_a[k], got_b[k], 2 * tol[k], f"{kind} {solver} {k}")
