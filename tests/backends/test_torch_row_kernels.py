"""The torch CSR row products (`row_dots`, `row_sums`: the CG half-sweep's two products on
`cfcore.data.row_blocks.row_csr`; `row_grams`, the Cholesky half-sweep's systems) against float64
NumPy, in both forms (sparse, and the chunked
gathers that run inside `vmap`), for columns repeated and unordered within a row, rows without
observations and more rows than observations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cfcore_torch import TorchBackend, kernels  # noqa: E402

import cfcore  # noqa: E402
from cfcore.data.row_blocks import row_csr  # noqa: E402
from cfcore.train.placement import Placement  # noqa: E402

CASES = {
    "random": dict(n=3000, rows=60, cols=45, empty=0),
    "empty rows": dict(n=500, rows=80, cols=30, empty=20),
    "one observation": dict(n=1, rows=3, cols=4, empty=0),
    "more rows than observations": dict(n=30, rows=400, cols=300, empty=0),
}


def _layout(case: dict, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(case["empty"], case["rows"], case["n"])  # unsorted
    cols = rng.integers(0, case["cols"], case["n"])  # repeats within a row
    values = rng.normal(size=case["n"])
    (part,) = row_csr(rows, cols, values, np.ones(case["n"]), np.ones(case["rows"]), dim=d)["csr"]
    csr = {k: torch.from_numpy(part[k]) for k in ("starts", "rows", "cols")}
    table = rng.normal(size=(case["cols"], d))
    x = rng.normal(size=(case["rows"], d))
    # The part's cols index its own fixed rows: the kernels read those, gathered.
    return csr, rows, cols, values, table, table[part["fixed"]], x


def _expected(rows, cols, values, table, x):
    dots = np.einsum("nd,nd->n", x[rows], table[cols])
    sums = np.zeros_like(x)
    np.add.at(sums, rows, values[:, None] * table[cols])
    return dots, sums


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sparse", [True, False])
def test_row_products_equal_numpy(case, sparse, monkeypatch):
    monkeypatch.setattr(kernels, "ROW_CHUNK_FLOATS", 7 * 8)  # several chunks of the gathers
    csr, rows, cols, values, table, local, x = _layout(CASES[case], d=8)
    # In the layout's row order (row_csr sorts by row, stably): the values' order there.
    order = np.argsort(rows, kind="stable")
    want_dots, want_sums = _expected(rows, cols, values, table, x)
    f32 = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    dots = kernels.row_dots(
        csr["starts"], csr["rows"], csr["cols"], f32(local), f32(x), sparse=sparse
    )
    sums = kernels.row_sums(
        csr["starts"], csr["rows"], csr["cols"], f32(values[order]), f32(local),
        len(x), sparse=sparse,
    )  # fmt: skip
    scale = np.abs(table).max() * np.abs(x).max() * table.shape[1]
    np.testing.assert_allclose(dots.numpy(), want_dots[order], rtol=0, atol=1e-6 * scale)
    sum_scale = np.abs(table).max() * np.abs(values).sum()
    np.testing.assert_allclose(sums.numpy(), want_sums, rtol=0, atol=1e-6 * sum_scale)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sparse", [True, False])
def test_row_grams_equal_numpy(case, sparse, monkeypatch):
    # Several slices of the outer products (sparse) or chunks of observations (gathers).
    monkeypatch.setattr(kernels, "ROW_CHUNK_FLOATS", 3 * 8 * 8)
    csr, rows, cols, values, table, local, x = _layout(CASES[case], d=8)
    order = np.argsort(rows, kind="stable")
    want = np.zeros((len(x), 8, 8))
    np.add.at(want, rows, values[:, None, None] * np.einsum("ni,nj->nij", table[cols], table[cols]))
    f32 = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    got = kernels.row_grams(
        csr["starts"], csr["rows"], csr["cols"], f32(values[order]), f32(local),
        len(x), sparse=sparse,
    )  # fmt: skip
    scale = np.abs(table).max() ** 2 * np.abs(values).sum()
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6 * scale)


def test_gathers_inside_vmap_equal_the_sparse_products():
    csr, _, _, values, _, local, _ = _layout(CASES["empty rows"], d=6)
    be = TorchBackend()
    t = torch.tensor(local, dtype=torch.float32)
    xs = torch.randn(3, CASES["empty rows"]["rows"], 6, generator=torch.Generator().manual_seed(1))
    vs = torch.randn(3, len(values), generator=torch.Generator().manual_seed(2))
    mapped = be.vmap(
        lambda x, v: (be.row_dots(csr, t, x), be.row_sums(csr, v, t), be.row_grams(csr, v, t)),
        (0, 0),
    )
    dots, sums, grams = mapped(xs, vs)
    for i in range(3):
        torch.testing.assert_close(dots[i], be.row_dots(csr, t, xs[i]), rtol=0, atol=1e-5)
        torch.testing.assert_close(sums[i], be.row_sums(csr, vs[i], t), rtol=0, atol=1e-5)
        torch.testing.assert_close(grams[i], be.row_grams(csr, vs[i], t), rtol=0, atol=1e-5)


def test_fits_lay_rows_out_as_csr_on_torch_only():
    """`fit` lays the rows of both solvers out as CSR where the backend has the row products
    (torch), else in blocks."""
    from cfcore.models.als import ials_blocks

    r = cfcore.synthetic_ratings(40, 30, 400, seed=1).to_implicit(threshold=3.0)
    for name, sparse in (("torch", True), ("numpy", False)):
        place = Placement(cfcore.get_backend(name))
        assert place.sparse_rows is sparse
        for solver in ("cg", "cholesky"):
            assert place.csr_rows(solver) is sparse
            laid = ials_blocks(cfcore.IALS(4, solver=solver).spec, r, place)["by_user"]
            assert ("csr" in laid) is sparse, (name, solver)
            assert ("buckets" in laid) is not sparse


def test_pair_dot_without_gradient_runs_in_chunks_to_the_same_values(monkeypatch):
    """The objective of a history row (no gradient) gathers a chunk of pairs at a time; the
    values are the unchunked ones, and a step's gradient still flows (no chunking there)."""
    rng = np.random.default_rng(3)
    u = torch.tensor(rng.normal(size=(50, 6)), dtype=torch.float32)
    v = torch.tensor(rng.normal(size=(40, 6)), dtype=torch.float32)
    users = torch.tensor(rng.integers(0, 50, 700), dtype=torch.int32)
    items = torch.tensor(rng.integers(0, 40, 700), dtype=torch.int32)
    whole = kernels.pair_dot(u, v, users, items, chunked=False)
    calls = []
    real_cat = torch.cat
    monkeypatch.setattr(kernels, "ROW_CHUNK_FLOATS", 6 * 64)
    monkeypatch.setattr(
        kernels.torch, "cat", lambda xs, *a: calls.append(len(xs)) or real_cat(xs, *a)
    )
    torch.testing.assert_close(kernels.pair_dot(u, v, users, items), whole, rtol=0, atol=0)
    assert calls == [11], calls  # 700 pairs, 64 a chunk
    leaf = u.clone().requires_grad_()
    kernels.pair_dot(leaf, v, users, items).sum().backward()
    assert leaf.grad is not None and calls == [11]  # the gradient's forward: one block
