"""Closed-form steps through the one trainer: a session of sweeps instead of gradient steps.

The sweep here is alternating least squares on the regularized MF objective of the notebook,
L = (1/|Ω|)·Σ_Ω (r − ⟨u,v⟩)² + λr·(ΣU²/N + ΣV²/M) + λg·(1/(N·M))·Σ_ij ⟨u_i,v_j⟩²,
written on the boundary's operations (`cfcore.maths.retrieval.fold_in_solve`: segment sums and
batched solves). With V fixed, L is quadratic in each user row and solved exactly by
(V_Sᵀ V_S + (λr·|Ω|/N)·I + (λg·|Ω|/(N·M))·VᵀV) u = V_Sᵀ r_S, and symmetrically for items.
It checks the trainer's contract for sweeps (compiled chunks, history, guard) against a float64
NumPy solve written here, not the model code.
"""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.init import init_mf_params
from cfcore.maths import objectives
from cfcore.maths.retrieval import fold_in_solve
from cfcore.specs import MFSpec
from cfcore.train import Session, TrainingDivergedError

from ..conftest import BACKENDS, load_backend

SPEC = MFSpec(embedding_dim=3, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=0.5)


@pytest.fixture(scope="module")
def ratings():
    return cfcore.synthetic_ratings(40, 30, 600, seed=5)


def _sweep(be, spec, n, m, count):
    xp = be.xp
    reg_u = be.asarray(np.full(n, spec.regularization_coeff * count / n, np.float32))
    reg_v = be.asarray(np.full(m, spec.regularization_coeff * count / m, np.float32))
    grav = spec.gravity_coeff * count / (n * m)
    loss = objectives.mf_loss(be, spec)
    ops = be.ops

    def sweep(params, data):
        total, _ = loss(params, data)
        u, v = params["user"], params["item"]
        users, items, values = data["users"], data["items"], data["values"]
        u = fold_in_solve(be, v, users, items, values, n, reg_u, grav * ops.gramian(v))
        v = fold_in_solve(be, u, items, users, values, m, reg_v, grav * ops.gramian(u))
        return total, {"user": xp.astype(u, "float32"), "item": xp.astype(v, "float32")}

    return sweep


def _numpy_sweeps(spec, r, params, sweeps):
    """The same alternation in float64 with one np.linalg.solve per row."""
    n, m, count = r.num_users, r.num_items, len(r)
    u, v = params["user"].astype(np.float64), params["item"].astype(np.float64)
    d = u.shape[1]

    def half(fixed, rows, cols, size, lam):
        prior = spec.gravity_coeff * count / (n * m) * fixed.T @ fixed
        out = np.zeros((size, d))
        for i in range(size):
            sel = rows == i
            f = fixed[cols[sel]]
            a = f.T @ f + lam * np.eye(d) + prior
            out[i] = np.linalg.solve(a, f.T @ r.values[sel])
        return out

    for _ in range(sweeps):
        u = half(v, r.users, r.items, n, spec.regularization_coeff * count / n)
        v = half(u, r.items, r.users, m, spec.regularization_coeff * count / m)
    return u, v


def _session_run(be, ratings, sweeps, params=None):
    n, m = ratings.num_users, ratings.num_items
    params = init_mf_params(SPEC, n, m, 0) if params is None else params
    session = Session.start(be, None, params)
    data = session.placement.data(be.device_batch(ratings))
    run = session.sweep_chunk(("als-test", SPEC), _sweep(be, SPEC, n, m, len(ratings)), _full)
    objective = []

    def record(_):
        terms = objectives.mf_loss_terms(be, SPEC, session.params, data)
        row = {"step": session.step, "total": float(be.to_numpy(terms["total"]))}
        objective.append(row["total"])
        session.history_rows.append(row)
        return row

    session.run(
        run,
        data,
        steps=sweeps,
        eval_every=1,
        next_xs=None,
        record=record,
        progress=False,
        label=str,
    )
    return session, objective


def _full(data, x):
    return data


@pytest.mark.parametrize("name", (*BACKENDS, "numpy"))
def test_als_sweeps_through_the_trainer(name, ratings):
    be = load_backend(name) if name != "numpy" else cfcore.get_backend("numpy")
    session, objective = _session_run(be, ratings, sweeps=4)
    # Each sweep solves each half exactly: the objective can only go down.
    assert session.step == 4 and len(objective) == 5
    assert all(b <= a + 1e-6 * abs(a) for a, b in zip(objective, objective[1:], strict=False))
    assert objective[-1] < 0.5 * objective[0]
    got = session.params_numpy()
    want_u, want_v = _numpy_sweeps(SPEC, ratings, init_mf_params(SPEC, 40, 30, 0), 4)
    np.testing.assert_allclose(got["user"], want_u, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got["item"], want_v, rtol=1e-3, atol=1e-4)


def test_a_sweep_session_refuses_gradient_chunks(ratings):
    be = cfcore.get_backend("numpy")
    session = Session.start(be, None, init_mf_params(SPEC, 40, 30, 0))
    with pytest.raises(ValueError, match="no optimizer: it runs closed-form sweeps only"):
        session.chunk("k", objectives.mf_loss(be, SPEC), _full)


def test_a_non_finite_sweep_is_stopped_by_the_guard(ratings):
    be = load_backend(BACKENDS[0])
    params = init_mf_params(SPEC, 40, 30, 0)
    params["item"][3, 0] = np.inf  # the first sweep's objective is already infinite
    with pytest.raises(TrainingDivergedError, match="at the initial values"):
        _session_run(be, ratings, sweeps=2, params=params)
