"""The torch sparse-layout kernel (`cfcore_torch.pair_kernel`) against autograd's plain gathers.

In float64 the kernel's values and gradients must equal those of the gather form (`embedding`
forward, its `index_add` backward) to float64 rounding, for repeated pairs, rows rated by
nobody, a single rating and sizes where either side is larger; in float32 they must equal the
float64 ones to float32 rounding. The layout is valid CSR (torch's own invariant check); the
backend picks the kernel by device or by request; `fit` trains the same with either kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from cfcore_torch import TorchBackend  # noqa: E402
from cfcore_torch.pair_kernel import LAYOUT_KEYS, make_pair_layout, pair_dot_layout  # noqa: E402

import cfcore  # noqa: E402


def _pairs(rng, n, num_users, num_items, repeats, empty):
    """`n` random pairs plus `repeats` copies of drawn ones; the first `empty` users and the
    last `empty` items rated by nobody."""
    users = rng.integers(empty, num_users, n)
    items = rng.integers(0, num_items - empty, n)
    again = rng.integers(0, n, repeats)
    return np.concatenate([users, users[again]]), np.concatenate([items, items[again]])


CASES = {
    "random": dict(n=3000, num_users=60, num_items=45, repeats=0, empty=0),
    "repeated pairs and empty rows": dict(n=2000, num_users=50, num_items=70, repeats=800, empty=5),
    "every rating one pair": dict(n=1, num_users=3, num_items=4, repeats=40, empty=1),
    "more rows than ratings": dict(n=30, num_users=400, num_items=300, repeats=5, empty=0),
}


def _layout(users, items, num_users, num_items):
    made = make_pair_layout(users, items, num_users, num_items)
    return {k: torch.from_numpy(v) for k, v in made.items()}


def _both(users, items, layout, table_u, table_v, cotangent):
    """(pred, dU, dV) of the kernel and of the plain gathers, for one cotangent of pred."""
    out = []
    for kernel in ("sparse", "gather"):
        u = table_u.detach().clone().requires_grad_()
        v = table_v.detach().clone().requires_grad_()
        if kernel == "sparse":
            pred = pair_dot_layout(u, v, layout)
        else:
            pred = torch.sum(F.embedding(users, u) * F.embedding(items, v), dim=1)
        grads = torch.autograd.grad(pred, [u, v], cotangent)
        out.append([pred.detach().numpy(), *(g.numpy() for g in grads)])
    return out


def _close(actual, expected, rtol):
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    # Relative to the array's magnitude: entries that cancel to ~0 have no relative precision.
    err = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    assert err <= rtol * scale, (err, scale)


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_equal_the_gathers(case):
    rng = np.random.default_rng(list(CASES).index(case))
    c = CASES[case]
    np_users, np_items = _pairs(
        rng, c["n"], c["num_users"], c["num_items"], c["repeats"], c["empty"]
    )
    layout = _layout(np_users, np_items, c["num_users"], c["num_items"])
    users, items = torch.from_numpy(np_users), torch.from_numpy(np_items)
    table_u = torch.from_numpy(rng.standard_normal((c["num_users"], 7)))
    table_v = torch.from_numpy(rng.standard_normal((c["num_items"], 7)))
    cotangent = torch.from_numpy(rng.standard_normal(len(np_users)))
    # float64: the two forms agree to float64 rounding (sums in other orders).
    (pred, du, dv), (ref_pred, ref_du, ref_dv) = _both(
        users, items, layout, table_u, table_v, cotangent
    )
    assert pred.dtype == np.float64 and pred.shape == (len(np_users),)
    for got, ref in ((pred, ref_pred), (du, ref_du), (dv, ref_dv)):
        _close(got, ref, 1e-12)
    if c["empty"]:  # rows rated by nobody get exactly zero gradient
        assert not du[: c["empty"]].any() and not dv[-c["empty"] :].any()
    # float32: the float64 results to float32 rounding.
    got32, _ = _both(users, items, layout, table_u.float(), table_v.float(), cotangent.float())
    assert got32[0].dtype == np.float32
    for got, ref in zip(got32, (ref_pred, ref_du, ref_dv), strict=True):
        _close(got, ref, 1e-5)


def test_only_the_gradients_asked_for():
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 10, 200), rng.integers(0, 8, 200)
    layout = _layout(users, items, 10, 8)
    u = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(8, 4, dtype=torch.float64)
    (du,) = torch.autograd.grad(pair_dot_layout(u, v, layout).sum(), [u])
    expected = np.zeros((10, 4))
    np.add.at(expected, users, v.numpy()[items])
    _close(du.numpy(), expected, 1e-12)


def test_layout_is_valid_csr_of_the_distinct_pairs():
    users = np.array([2, 0, 2, 2, 0, 3])
    items = np.array([1, 4, 0, 1, 4, 4])
    lay = make_pair_layout(users, items, 5, 6)
    assert set(lay) == set(LAYOUT_KEYS) and all(a.dtype == np.int32 for a in lay.values())
    # Distinct pairs by user, items ascending: (0,4) (2,0) (2,1) (3,4); user 1 and 4 empty.
    np.testing.assert_array_equal(lay["user_crow"], [0, 1, 1, 3, 4, 4])
    np.testing.assert_array_equal(lay["user_col"], [4, 0, 1, 4])
    np.testing.assert_array_equal(lay["pair"], [2, 0, 1, 2, 0, 3])
    # By item: (2,0) (2,1) (0,4) (3,4).
    np.testing.assert_array_equal(lay["item_crow"], [0, 1, 2, 2, 2, 4, 4])
    np.testing.assert_array_equal(lay["item_col"], [2, 2, 0, 3])
    np.testing.assert_array_equal(lay["item_from_user"], [1, 2, 0, 3])


@pytest.mark.parametrize("num_items", [300, 70_000])  # pair keys below and above 2³²
def test_layout_is_valid_csr_at_scale(num_items):
    rng = np.random.default_rng(num_items)
    num_users, n = 70_000, 20_000
    users, items = rng.integers(0, num_users, n), rng.integers(0, num_items, n)
    users[-500:], items[-500:] = users[:500], items[:500]  # repeated pairs
    lay = make_pair_layout(users, items, num_users, num_items)
    for side, cols in (("user", num_items), ("item", num_users)):
        crow, col = torch.from_numpy(lay[f"{side}_crow"]), torch.from_numpy(lay[f"{side}_col"])
        values = torch.zeros(col.shape[0])
        # Raises unless crow is monotone from 0 to nnz and columns are sorted and distinct.
        torch.sparse_csr_tensor(crow, col, values, (crow.shape[0] - 1, cols), check_invariants=True)
    # Every rating points at its own pair.
    pair_users = np.repeat(np.arange(num_users), np.diff(lay["user_crow"]))
    np.testing.assert_array_equal(pair_users[lay["pair"]], users)
    np.testing.assert_array_equal(lay["user_col"][lay["pair"]], items)
    np.testing.assert_array_equal(lay["item_col"], pair_users[lay["item_from_user"]])


def test_bad_input_is_refused():
    with pytest.raises(cfcore.CfcoreError, match="non-empty 1-D arrays of one length"):
        make_pair_layout(np.array([0, 1]), np.array([0]), 2, 2)
    with pytest.raises(cfcore.CfcoreError, match="non-empty"):
        make_pair_layout(np.array([], int), np.array([], int), 2, 2)
    layout = _layout(np.array([0, 1]), np.array([1, 0]), 2, 3)
    with pytest.raises(cfcore.CfcoreError, match=r"lacks \['pair'\]"):
        pair_dot_layout(
            torch.ones(2, 3), torch.ones(3, 3), {k: v for k, v in layout.items() if k != "pair"}
        )
    with pytest.raises(cfcore.CfcoreError, match="2 users × 3 items, the tables have 2 and 4"):
        pair_dot_layout(torch.ones(2, 3), torch.ones(4, 3), layout)


# (argument, $CFCORE_TORCH_PAIR_KERNEL, the kernel used); "auto" is decided by the device.
CHOICES = [
    (None, None, "auto"),
    (None, "auto", "auto"),
    (None, "gather", "gather"),
    ("sparse", "gather", "sparse"),  # the argument wins
    ("gather", "sparse", "gather"),
]


@pytest.mark.parametrize(("argument", "env", "expected"), CHOICES)
def test_kernel_choice(monkeypatch, argument, env, expected):
    from cfcore_torch.ops import DEVICE

    if env is None:
        monkeypatch.delenv("CFCORE_TORCH_PAIR_KERNEL", raising=False)
    else:
        monkeypatch.setenv("CFCORE_TORCH_PAIR_KERNEL", env)
    if expected == "auto":
        expected = "sparse" if DEVICE.type == "cpu" else "gather"
    backend = TorchBackend(argument)
    assert backend.gather_kernel() == expected
    layout = backend.pair_layout(np.array([0, 1, 1]), np.array([2, 0, 1]), 2, 3)
    if expected == "gather":
        assert layout is None
    else:
        assert set(layout) == set(LAYOUT_KEYS) and isinstance(layout["pair"], torch.Tensor)


def test_a_bad_kernel_name_is_refused(monkeypatch):
    with pytest.raises(cfcore.CfcoreError, match="pair_kernel must be one of .*got 'csr'"):
        TorchBackend("csr")
    monkeypatch.setenv("CFCORE_TORCH_PAIR_KERNEL", "fast")
    with pytest.raises(cfcore.CfcoreError, match="CFCORE_TORCH_PAIR_KERNEL must be one of"):
        TorchBackend().gather_kernel()


class _CountingBackend(TorchBackend):
    """The torch backend, counting the `pair_dot` calls that were given a layout."""

    def __init__(self, pair_kernel: str) -> None:
        super().__init__(pair_kernel)
        self.name = f"torch-{pair_kernel}"
        self.layout_calls = 0

    def pair_dot(self, user_emb, item_emb, users, items, method="gather", layout=None):
        self.layout_calls += layout is not None
        return super().pair_dot(user_emb, item_emb, users, items, method, layout)


def test_fit_agrees_with_either_kernel():
    from cfcore.eval.agreement import largest_differences, train_on_backends

    train, test = cfcore.synthetic_ratings(60, 45, 2500, seed=1).split(0.1, seed=0)
    sparse, gather = _CountingBackend("sparse"), _CountingBackend("gather")
    runs = train_on_backends(
        lambda: cfcore.RegularizedMF(embedding_dim=6, init_stddev=0.3),
        [cfcore.get_backend(sparse), cfcore.get_backend(gather)],
        train,
        test,
        steps=30,
        optimizer=cfcore.optimizers.Adam(0.05),
        eval_every=10,
    )
    assert sparse.layout_calls > 0 and gather.layout_calls == 0
    for diff in largest_differences(runs):
        assert diff.ok, diff
    history = runs[0].history
    assert len(history) == 4 and history["train_mse"].iloc[-1] < history["train_mse"].iloc[0]


def test_a_mapped_pair_dot_ignores_the_layout():
    """`fit_many` maps steps over models (`vmap`) and passes the shared layout: the sparse
    products have no batching rule, so the mapped call must give the gathers' values."""
    from cfcore_torch import transforms

    rng = np.random.default_rng(5)
    users, items = rng.integers(0, 12, 300), rng.integers(0, 9, 300)
    be = TorchBackend("sparse")
    layout = be.pair_layout(users, items, 12, 9)
    tables_u, tables_v = torch.randn(3, 12, 4), torch.randn(3, 9, 4)
    mapped = transforms.vmap(
        lambda u, v: be.pair_dot(
            u, v, torch.from_numpy(users), torch.from_numpy(items), layout=layout
        ),
        (0, 0),
    )
    got = mapped(tables_u, tables_v).numpy()
    for k in range(3):
        expected = np.sum(tables_u[k].numpy()[users] * tables_v[k].numpy()[items], axis=1)
        np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-5)
