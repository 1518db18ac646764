"""The generic loss-conformance helper (`cfcore.testing.check_loss`) on matrix factorization."""

from __future__ import annotations

import numpy as np
import pytest

from cfcore import reference as ref
from cfcore.maths import objectives
from cfcore.specs import MFSpec
from cfcore.testing import LossProblem, check_loss, make_problem

from ..conftest import BACKENDS, load_backend

SPEC = MFSpec(embedding_dim=4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=1.0)


def _mf_problem(reference=None) -> LossProblem:
    params, b = make_problem(num_users=9, num_items=11, n=60)
    batch = {"users": b.users, "items": b.items, "values": b.values}

    def mf_reference(p, bt):
        return ref.mf_objective(SPEC, p, bt["users"], bt["items"], bt["values"])[0]

    def terms(be, p, bt):
        return objectives.mf_loss_terms(be, SPEC, p, bt)

    return LossProblem(terms, reference or mf_reference, params, batch, name="regularized MF")


@pytest.fixture(scope="module")
def backends() -> list[str]:
    for name in BACKENDS:
        load_backend(name)
    return list(BACKENDS)


def test_mf_loss_agrees_on_every_backend(backends) -> None:
    out = check_loss(backends, _mf_problem())
    # The finite differences agree with the hand-derived gradient of the reference.
    params, b = make_problem(num_users=9, num_items=11, n=60)
    _, hand = ref.mf_objective(SPEC, params, b.users, b.items, b.values)
    for k, g in hand.items():
        np.testing.assert_allclose(out["gradient"][k], g, rtol=0, atol=1e-7 * np.abs(g).max())


def test_a_wrong_reference_is_caught(backends) -> None:
    def wrong(p, bt):  # the gravity term left out of the total
        terms = ref.mf_objective(SPEC, p, bt["users"], bt["items"], bt["values"])[0]
        return {**terms, "total": terms["total"] - terms["gravity"]}

    with pytest.raises(AssertionError, match="total"):
        check_loss(backends[:1], _mf_problem(wrong))


def test_softplus_agrees_with_logaddexp(backends) -> None:
    # Large arguments of both signs (exp overflows float32 past 88) and exactly zero.
    x = np.array([-200.0, -30.0, -1.5, 0.0, 0.25, 3.0, 40.0, 150.0], np.float32)

    def terms(be, p, _):
        total = be.xp.sum(objectives.softplus(be.xp, p["x"]))
        return {"total": total}

    def reference(p, _):
        return {"total": float(np.sum(np.logaddexp(0.0, p["x"])))}

    out = check_loss(backends, LossProblem(terms, reference, {"x": x}, {}, name="softplus"))
    sigmoid = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    for name in backends:
        np.testing.assert_allclose(out[name][1]["x"], sigmoid, rtol=1e-6, atol=1e-7)
