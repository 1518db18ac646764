"""The torch backend's operations against float64 NumPy computed here (relative 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cfcore_torch import backend as be  # noqa: E402

from cfcore.backend import BACKEND_MEMBERS, XP_FUNCTIONS, capability  # noqa: E402

RTOL = 1e-5


def close(actual, expected, rtol=RTOL):
    """Relative agreement, with an absolute floor at `rtol` times the array's largest entry."""
    actual = np.asarray(be.to_numpy(actual), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def f32(rng, *shape, scale=0.5):
    return rng.normal(0.0, scale, shape).astype(np.float32)


def softmax(x):
    e = np.exp(x - np.max(x, axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def lse(x):
    top = np.max(x, axis=1)
    return np.log(np.sum(np.exp(x - top[:, None]), axis=1)) + top


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ members and arrays
def test_has_every_member():
    assert be.name == "torch" and be.is_available()
    assert [m for m in BACKEND_MEMBERS if not hasattr(be, m)] == []
    assert [f for f in XP_FUNCTIONS if not callable(getattr(be.xp, f, None))] == []
    assert capability(be, "native_optimizer") is None  # torch.optim is stateful: none yet


def test_registered_as_builtin():
    import cfcore

    assert "torch" in cfcore.available_backends()
    assert cfcore.get_backend("torch").name == "torch"


def test_asarray_dtypes_and_to_numpy():
    cases = [
        (np.zeros(3), None, torch.float32),
        (np.zeros(3, np.int64), None, torch.int32),
        (np.zeros(3, bool), None, torch.bool),
        (np.zeros(3, np.int64), "float32", torch.float32),
        (np.zeros(3), "int32", torch.int32),
        (np.ones(3), "bool", torch.bool),
        (2.5, None, torch.float32),
        (3, None, torch.int32),
        (torch.zeros(3, dtype=torch.float64), None, torch.float32),
        (torch.zeros(3, dtype=torch.int64), None, torch.int32),
    ]
    for x, dtype, expected in cases:
        assert be.asarray(x, dtype).dtype == expected, (x, dtype)
    data = np.arange(6.0)[::-1].reshape(2, 3)  # negative strides
    data.flags.writeable = False
    t = be.asarray(data)
    np.testing.assert_array_equal(be.to_numpy(t), data)
    assert be.to_numpy(t).dtype == np.float32
    t.add_(1.0)  # a copy: the caller's array is never aliased
    assert data[0, 0] == 5.0
    tree = {"a": [t, (t,)], "b": None}
    assert be.sync(tree) is tree


def test_xp_matches_numpy(rng):
    xp, x, y = be.xp, f32(rng, 3, 4), f32(rng, 3, 4)
    tx, ty = be.asarray(x), be.asarray(y)
    pos = np.abs(x) + 0.1
    for name in ("sum", "mean", "max"):
        for axis in (None, 0, 1, -1):
            close(getattr(xp, name)(tx, axis=axis), getattr(np, name)(x, axis=axis))
    for name in ("square", "exp", "tanh"):
        close(getattr(xp, name)(tx), getattr(np, name)(x.astype(np.float64)))
    close(xp.sqrt(be.asarray(pos)), np.sqrt(pos.astype(np.float64)))
    close(xp.log(be.asarray(pos)), np.log(pos.astype(np.float64)))
    close(xp.maximum(tx, 0.0), np.maximum(x, 0.0))
    close(xp.maximum(tx, ty), np.maximum(x, y))
    close(xp.where(tx > ty, tx, ty), np.where(x > y, x, y))
    close(xp.where(be.asarray(False), tx, ty), y)
    assert not bool(xp.all(xp.isfinite(be.asarray(np.array([1.0, np.nan])))))
    assert bool(xp.all(xp.isfinite(tx)))
    close(xp.matmul(tx, xp.transpose(ty)), x.astype(np.float64) @ y.T.astype(np.float64))
    idx = np.array([[2, 0], [1, 1]], np.int32)
    close(xp.take(tx, be.asarray(idx)), np.take(x, idx, axis=0))
    close(xp.take(tx, be.asarray(idx), axis=1), np.take(x, idx, axis=1))
    close(xp.concat([tx, ty], axis=-1), np.concatenate([x, y], axis=-1))
    close(xp.reshape(tx, (4, 3)), x.reshape(4, 3))
    close(xp.zeros_like(tx), np.zeros_like(x))
    close(xp.full_like(tx, 2.5), np.full_like(x, 2.5))
    assert xp.astype(tx > 0, "float32").dtype == torch.float32
    assert xp.astype(tx, "int32").dtype == torch.int32
    assert xp.astype(tx, "bool").dtype == torch.bool


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("method", ["gather", "dense"])
def test_pair_dot_and_mse_gradients(rng, method):
    u, v = f32(rng, 7, 3), f32(rng, 9, 3)
    users, items = rng.integers(0, 7, 40).astype(np.int32), rng.integers(0, 9, 40).astype(np.int32)
    ratings = rng.normal(size=40)
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    pred = np.sum(u64[users] * v64[items], axis=1)
    close(be.pair_dot(u, v, users, items, method=method), pred)

    def loss(params, users, items, ratings):
        p = be.pair_dot(params["user"], params["item"], users, items, method=method)
        mse = be.xp.mean(be.xp.square(p - ratings))
        return mse, {"mse": mse, "parts": (p,)}

    args = (be.asarray(users), be.asarray(items), be.asarray(ratings))
    params = {"user": be.asarray(u), "item": be.asarray(v), "unused": be.asarray(np.ones(2))}
    (value, aux), grads = be.value_and_grad(loss)(params, *args)
    resid = 2.0 * (pred - ratings) / len(ratings)
    gu, gv = np.zeros_like(u64), np.zeros_like(v64)
    np.add.at(gu, users, resid[:, None] * v64[items])
    np.add.at(gv, items, resid[:, None] * u64[users])
    close(value, np.mean((pred - ratings) ** 2))
    close(aux["parts"][0], pred)
    assert not value.requires_grad and not aux["mse"].requires_grad
    close(grads["user"], gu)
    close(grads["item"], gv)
    close(grads["unused"], np.zeros(2))
    assert all(not g.is_sparse and g.dtype == torch.float32 for g in grads.values())


def test_gramian_and_segment_sum(rng):
    x = f32(rng, 11, 4)
    close(be.gramian(x), x.T.astype(np.float64) @ x)
    data, ids = f32(rng, 10, 2, 3), np.array([3, 0, 3, 1, 0, 0, 4, 3, 1, 0], np.int32)
    expected = np.zeros((6, 2, 3))
    np.add.at(expected, ids, data)
    out = be.segment_sum(data, ids, 6)
    close(out, expected)
    assert not np.any(be.to_numpy(out)[5])  # the empty segment


@pytest.mark.parametrize("combiner", ["mean", "sum"])
def test_bag_of_words(rng, combiner):
    table = f32(rng, 6, 3)
    ids = np.array([[0, 2, 2], [5, 1, 0], [3, 0, 0]], np.int32)
    weights = np.array([[1.0, 2.0, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    total = np.einsum("bl,bld->bd", weights, table.astype(np.float64)[ids])
    count = weights.sum(axis=1, keepdims=True)
    expected = total if combiner == "sum" else total / np.where(count > 0, count, 1.0)
    close(be.bag_of_words(table, ids, weights, combiner), expected)
    dense = np.zeros((3, 6), np.float32)
    np.add.at(dense, (np.arange(3)[:, None].repeat(3, 1), ids), weights)
    close(be.bag_of_words(table, None, dense, combiner), expected)
    # Gradient in the table: d/dT Σ_b ⟨c_b, out_b⟩ = Σ_b,t (w_bt / n_b) c_b at row ids[b, t].
    c = f32(rng, 3, 3)

    def loss(params):
        return be.xp.sum(be.bag_of_words(params["t"], ids, weights, combiner) * be.asarray(c)), ()

    norm = 1.0 if combiner == "sum" else np.where(count > 0, count, 1.0)
    expected_grad = np.zeros((6, 3))
    np.add.at(expected_grad, ids, (weights / norm)[:, :, None] * c[:, None, :].astype(np.float64))
    close(be.value_and_grad(loss)({"t": table})[1]["t"], expected_grad)


def test_softmax_cross_entropy_and_gradients(rng):
    q, v = f32(rng, 5, 3), f32(rng, 8, 3)
    labels = np.array([0, 7, 3, 3, 1], np.int32)
    logits = q.astype(np.float64) @ v.T.astype(np.float64)
    close(be.softmax_cross_entropy(q, v, labels), np.mean(lse(logits) - logits[range(5), labels]))
    g = (softmax(logits) - np.eye(8)[labels]) / 5

    def loss(p):
        return be.softmax_cross_entropy(p["q"], p["v"], labels), None

    grads = be.value_and_grad(loss)({"q": q, "v": v})[1]
    close(grads["q"], g @ v.astype(np.float64))
    close(grads["v"], g.T @ q.astype(np.float64))


@pytest.mark.parametrize("remove_hits", [True, False])
@pytest.mark.parametrize("with_log_q", [True, False])
def test_sampled_softmax_loss_and_gradients(rng, remove_hits, with_log_q):
    q, v = f32(rng, 6, 3), f32(rng, 8, 3)
    labels = np.array([2, 5, 2, 0, 7, 2], np.int32)  # label 2 three times: accidental hits
    log_q = np.log(rng.uniform(0.05, 1.0, 8)).astype(np.float32) if with_log_q else None
    rows = v.astype(np.float64)[labels]
    logits = q.astype(np.float64) @ rows.T
    if with_log_q:
        logits = logits - log_q.astype(np.float64)[labels][None, :]
    if remove_hits:
        hit = (labels[:, None] == labels[None, :]) & ~np.eye(6, dtype=bool)
        logits = np.where(hit, -np.inf, logits)
    expected = np.mean(lse(logits) - np.diagonal(logits))
    close(be.sampled_softmax_loss(q, v, labels, log_q, remove_hits), expected)
    g = (softmax(logits) - np.eye(6)) / 6
    gv = np.zeros((8, 3))
    np.add.at(gv, labels, g.T @ q.astype(np.float64))

    def loss(p):
        return be.sampled_softmax_loss(p["q"], p["v"], labels, log_q, remove_hits), None

    grads = be.value_and_grad(loss)({"q": q, "v": v})[1]
    close(grads["q"], g @ rows)
    close(grads["v"], gv)


def test_top_k_ties_lowest_index_first():
    inf, nan = np.inf, np.nan
    scores = np.array(
        [
            [1.0, 3.0, 3.0, 2.0, 3.0, 0.0],
            [-inf, 1.0, nan, -inf, 1.0, 0.0],
            [0.0, -0.0, 0.0, -inf, -inf, nan],
        ],
        np.float32,
    )
    for k in (1, 3, 6):
        values, idx = be.top_k(scores, k)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert idx.dtype == torch.int32
        np.testing.assert_array_equal(be.to_numpy(idx), order)
        np.testing.assert_array_equal(be.to_numpy(values), np.take_along_axis(scores, order, 1))
    np.testing.assert_array_equal(be.to_numpy(be.top_k(scores, 3)[1])[0], [1, 2, 4])


def test_solve(rng):
    m = rng.normal(size=(4, 3, 3))
    a = (m @ np.transpose(m, (0, 2, 1)) + 0.5 * np.eye(3)).astype(np.float32)
    b = f32(rng, 4, 3)
    expected = np.linalg.solve(a.astype(np.float64), b.astype(np.float64)[..., None])[..., 0]
    close(be.solve(a, b), expected, rtol=1e-4)  # condition numbers amplify float32 rounding
    a[1] = np.diag([1.0, -1.0, 1.0])  # not positive definite: a NaN row, never an exception
    a[2] = 0.0  # singular
    out = be.to_numpy(be.solve(a, b))
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    close(out[[0, 3]], expected[[0, 3]], rtol=1e-4)


def test_non_finite_values_propagate():
    u = np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32)
    out = be.to_numpy(be.pair_dot(u, u, np.array([0, 1]), np.array([1, 1])))
    assert np.isnan(out[0]) and out[1] == 2.0


# ------------------------------------------------------------------ transforms
def test_compile_loop_with_xs_and_num_steps(rng):
    xp = be.xp

    def body(carry, data, x):
        step = data["scale"] if x is None else x["a"] * data["scale"] + x["pair"][1]
        return {"total": carry["total"] + step, "n": carry["n"] + 1}

    xs = {"a": f32(rng, 5, 2), "pair": (None, f32(rng, 5, 2))}
    run = be.compile_loop(body)
    data = {"scale": be.asarray(np.float32(2.0))}
    carry = {"total": be.asarray(np.zeros(2, np.float32)), "n": be.asarray(np.int32(0))}
    out = run(carry, data, xs=_to_device(xs))
    close(out["total"], np.sum(2.0 * xs["a"].astype(np.float64) + xs["pair"][1], axis=0))
    assert int(out["n"]) == 5
    out = run(carry, data, num_steps=3)
    close(out["total"], np.full(2, 6.0))
    assert int(out["n"]) == 3
    # A training step inside the loop: value_and_grad works under compile_loop's no_grad.
    grad_fn = be.compile(be.value_and_grad(lambda p, t: (xp.sum(xp.square(p["w"] - t)), None)))

    def sgd(carry, data, x):
        (_, _), g = grad_fn(carry, data)
        return {"w": carry["w"] - 0.25 * g["w"]}

    w = be.compile_loop(sgd)({"w": be.asarray(np.zeros(2))}, be.asarray(np.ones(2)), num_steps=4)
    close(w["w"], 1.0 - 0.5**4 * np.ones(2))


def _to_device(tree):
    if isinstance(tree, dict):
        return {k: _to_device(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_to_device(v) for v in tree)
    return None if tree is None else be.asarray(tree)
