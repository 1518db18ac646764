"""Conformance of a backend's retrieval members: fold-in solves, measure scores, batched top-k.

Every expectation is computed here with plain float64 NumPy (a loop of per-user solves, the
measure formulas written out) or with `cfcore.reference.top_k`, never with the code under test.
Use it as `BackendConformance`::

    import pytest
    from cfcore.testing.retrieval_conformance import RetrievalConformance

    class TestMyBackendRetrieval(RetrievalConformance):
        @pytest.fixture
        def backend(self):
            return my_backend_instance
"""

from __future__ import annotations

import numpy as np
import pytest

from .. import reference as ref
from .conformance import RTOL, assert_array_close

# float32 solves of well-conditioned d×d systems (λ ≥ 0.05, d = 4) keep about 6 digits.
SOLVE_RTOL = 1e-4
MEASURES = {"dot": (0.0, 0.0), "cosine": (1.0, 1.0), "norm-0.5": (0.0, 0.5), "norm-2": (0.0, 2.0)}


def _items(num_items: int = 31, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.5, (num_items, d)).astype(np.float32)


def _new_users(counts, num_items: int, seed: int = 1):
    """Ratings of len(counts) new users, user b rating counts[b] distinct items, shuffled."""
    rng = np.random.default_rng(seed)
    rows, items, values = [], [], []
    for b, c in enumerate(counts):
        rows += [b] * c
        items += list(rng.choice(num_items, size=c, replace=False))
        values += list(rng.integers(1, 6, size=c))
    order = rng.permutation(len(rows))  # the solve must not rely on ratings grouped by user
    return (
        np.asarray(rows, np.int32)[order],
        np.asarray(items, np.int32)[order],
        np.asarray(values, np.float32)[order],
    )


def _expected_fold_in(v, rows, items, values, num_rows, reg, prior=None) -> np.ndarray:
    """One explicit float64 ridge solve per user: (V_Sᵀ V_S + λ_b·I + P)⁻¹ V_Sᵀ r_S."""
    v = v.astype(np.float64)
    d = v.shape[1]
    reg = np.broadcast_to(np.asarray(reg, np.float64), (num_rows,))
    out = np.zeros((num_rows, d))
    for b in range(num_rows):
        mine = rows == b
        vs = v[items[mine]]
        a = vs.T @ vs + reg[b] * np.eye(d)
        if prior is not None:
            a = a + np.asarray(prior, np.float64)
        out[b] = np.linalg.solve(a, vs.T @ values[mine].astype(np.float64))
    return out


def _expected_scores(q, v, query_power, item_power) -> np.ndarray:
    """⟨q, v⟩ / (‖q‖^a ‖v‖^b) element by element in float64, zero norms counted as 1."""
    q, v = q.astype(np.float64), v.astype(np.float64)
    out = np.zeros((len(q), len(v)))
    for i in range(len(q)):
        nq = np.sqrt(np.sum(q[i] ** 2)) or 1.0
        for j in range(len(v)):
            nv = np.sqrt(np.sum(v[j] ** 2)) or 1.0
            out[i, j] = np.sum(q[i] * v[j]) / (nq**query_power * nv**item_power)
    return out


def assert_top_k_indices(indices, expected_scores, k: int, rtol: float = RTOL, what: str = ""):
    """`indices` (`[B, k]`) are a top-k of the float64 `expected_scores` (`[B, M]`) up to float32
    rounding: distinct items whose exact scores, rank by rank, equal the exact top-k scores within
    `rtol` of the largest finite score. Where the exact scores are further apart than that, this
    asks for the exact items; where two items are closer (a near-tie that float32 may swap on
    one CPU and not another), either order passes. Exact ties are tested apart, on data whose
    scores are exact in float32."""
    indices = np.asarray(indices).astype(np.int64)
    assert indices.shape == (len(expected_scores), k), f"{what}: shape {indices.shape}"
    finite = expected_scores[np.isfinite(expected_scores)]
    scale = max(float(np.max(np.abs(finite))), 1e-30) if finite.size else 1.0
    want = -np.sort(-expected_scores, axis=1)[:, :k]
    got = np.take_along_axis(expected_scores, indices, axis=1)
    for row in indices:
        assert len(set(row.tolist())) == k, f"{what}: repeated items {row}"
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale, err_msg=what)


class RetrievalConformance:
    """Checks a backend's `fold_in_solve`, `measure_scores` and `batched_top_k`."""

    # ------------------------------------------------------------------ fold-in

    def test_fold_in_matches_per_user_solves(self, backend):
        v = _items()
        counts = [1, 3, 7, 12, 2]
        rows, items, values = _new_users(counts, len(v))
        reg = np.array([0.05, 0.3, 1.0, 2.5, 0.1], np.float32)
        got = backend.to_numpy(backend.fold_in_solve(v, rows, items, values, len(counts), reg))
        assert got.shape == (len(counts), v.shape[1])
        assert got.dtype == np.float32
        expected = _expected_fold_in(v, rows, items, values, len(counts), reg)
        assert_array_close(got, expected, rtol=SOLVE_RTOL, what="fold-in, per-user λ")

    def test_fold_in_scalar_reg_and_prior(self, backend):
        v = _items(seed=3)
        counts = [4, 9, 1]
        rows, items, values = _new_users(counts, len(v), seed=4)
        prior = (0.2 * v.astype(np.float64).T @ v / len(v)).astype(np.float32)
        got = backend.to_numpy(backend.fold_in_solve(v, rows, items, values, 3, 0.4, prior))
        expected = _expected_fold_in(v, rows, items, values, 3, 0.4, prior)
        assert_array_close(got, expected, rtol=SOLVE_RTOL, what="fold-in with a prior")

    def test_fold_in_without_reg_is_least_squares(self, backend):
        v = _items(seed=5)
        rows, items, values = _new_users([20], len(v), seed=6)
        got = backend.to_numpy(backend.fold_in_solve(v, rows, items, values, 1, 0.0))
        lstsq = np.linalg.lstsq(v[items].astype(np.float64), values.astype(np.float64), rcond=None)
        assert_array_close(got[0], lstsq[0], rtol=SOLVE_RTOL, what="λ = 0 vs least squares")

    def test_fold_in_accepts_native_arrays(self, backend):
        v = _items(seed=7)
        rows, items, values = _new_users([5, 6], len(v), seed=8)
        native = backend.fold_in_solve(
            backend.asarray(v),
            backend.asarray(rows),
            backend.asarray(items),
            backend.asarray(values),
            2,
            backend.asarray(np.array([0.5, 0.5], np.float32)),
        )
        expected = _expected_fold_in(v, rows, items, values, 2, 0.5)
        assert_array_close(backend.to_numpy(native), expected, rtol=SOLVE_RTOL, what="native")

    # ------------------------------------------------------------------ scores

    @pytest.mark.parametrize("measure", sorted(MEASURES))
    def test_measure_scores(self, backend, measure):
        qp, ip = MEASURES[measure]
        v = _items(seed=9)
        v[4] = 0.0  # a zero item scores 0 under every measure
        q = np.random.default_rng(10).normal(0.0, 0.5, (6, v.shape[1])).astype(np.float32)
        q[2] = 0.0
        got = backend.to_numpy(backend.measure_scores(q, v, qp, ip))
        assert got.shape == (6, len(v)) and got.dtype == np.float32
        expected = _expected_scores(q, v, qp, ip)
        assert_array_close(got, expected, what=f"{measure} scores")
        assert np.all(got[:, 4] == 0) and np.all(got[2] == 0)

    # ------------------------------------------------------------------ top-k

    @pytest.mark.parametrize("measure", sorted(MEASURES))
    def test_batched_top_k_matches_reference(self, backend, measure):
        qp, ip = MEASURES[measure]
        v = _items(num_items=40, seed=11)
        q = np.random.default_rng(12).normal(0.0, 0.5, (7, v.shape[1])).astype(np.float32)
        values, indices = backend.batched_top_k(q, v, 5, None, qp, ip)
        values, indices = backend.to_numpy(values), backend.to_numpy(indices)
        assert values.shape == indices.shape == (7, 5)
        expected = _expected_scores(q, v, qp, ip)
        ref_values, _ = ref.top_k(expected, 5)
        assert_array_close(values, ref_values, what=f"{measure} top-k values")
        assert_top_k_indices(indices, expected, 5, what=f"{measure} top-k")

    def test_batched_top_k_ties_lowest_index_first(self, backend):
        # Ties by construction: entries are multiples of 1/8 in [-1, 1], so every product and
        # partial sum is exact in float32 and equal rows score bit for bit the same, whatever
        # order or kernel a CPU's matmul sums in (random normal rows tie only by luck).
        base = np.random.default_rng(13).integers(-8, 9, (6, 4)).astype(np.float32) / 8
        v = np.concatenate([base, base[[2, 2, 0]]])  # rows 6, 7 tie with 2; row 8 with 0
        q = base[[2, 0]]
        _, indices = backend.batched_top_k(q, v, 4)
        _, ref_indices = ref.top_k(_expected_scores(q, v, 0.0, 0.0), 4)
        np.testing.assert_array_equal(backend.to_numpy(indices), ref_indices)

    def test_batched_top_k_exclude(self, backend):
        v = _items(num_items=30, seed=14)
        q = np.random.default_rng(15).normal(0.0, 0.5, (4, v.shape[1])).astype(np.float32)
        exclude = np.random.default_rng(16).random((4, 30)) < 0.4
        values, indices = backend.batched_top_k(q, v, 6, exclude, 1.0, 1.0)
        indices = backend.to_numpy(indices)
        expected = np.where(exclude, -np.inf, _expected_scores(q, v, 1.0, 1.0))
        assert_top_k_indices(indices, expected, 6, what="top-k with exclusions")
        assert not np.take_along_axis(exclude, indices.astype(np.int64), axis=1).any()
        assert np.all(np.isfinite(backend.to_numpy(values)))

    @pytest.mark.parametrize("k", [0, -1, 32])
    def test_batched_top_k_bad_k(self, backend, k):
        v = _items()
        with pytest.raises(ValueError, match=f"k={k} .*31"):
            backend.batched_top_k(v[:2], v, k)
