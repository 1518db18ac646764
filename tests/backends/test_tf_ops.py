"""The TF backend where it departs from plain TensorFlow ops: one row times a matrix
(`ops.matmul`), padded to two rows so that XLA:CPU calls its GEMM, and the batched Cholesky
solves (`kernels.solve`), written as loops over the columns instead of TF's XLA expansions."""

from __future__ import annotations

import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cfcore_tf import backend, kernels, ops  # noqa: E402

RTOL = 1e-5


def _loop_fused_dots(hlo: str) -> list[str]:
    """The computations of XLA loop fusions (`kind=kLoop`) that hold a dot: dots XLA emits as
    naive loops instead of calling its GEMM."""
    bodies: dict[str, str] = {}
    for m in re.finditer(r"^(?:ENTRY )?%(\S+) .*?\{\n(.*?)^\}", hlo, re.M | re.S):
        bodies[m.group(1)] = m.group(2)
    called = re.findall(r"kind=kLoop, calls=%([^,\s]+)", hlo)
    return [name for name in called if " dot(" in bodies.get(name, "")]


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((1, 1, 40), (1, 40, 8)),  # an ALS block of one row: Σ_l a_l f_l
        ((1, 40), (40, 8)),  # 2-D
        ((1, 1, 1, 40), (1, 1, 40, 8)),  # more unit batch axes
        ((1, 1, 4096), (1, 4096, 3)),  # a row of 16 KB: XLA calls its GEMM anyway
        ((2, 1, 40), (2, 40, 8)),  # two blocks: as given
        ((1, 3, 40), (1, 40, 8)),  # three rows: as given
        ((1, 1, 40), (1, 40, 1)),  # a scalar result: as given
    ],
)
def test_matmul_equals_float64(a_shape, b_shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    for got in (
        ops.matmul(tf.constant(a), tf.constant(b)),
        tf.function(ops.matmul, jit_compile=True, autograph=False)(tf.constant(a), tf.constant(b)),
    ):
        assert tuple(got.shape) == want.shape
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=RTOL * scale)


def test_which_products_are_padded():
    def lone(a_shape, b_shape):
        return ops._lone_row(tf.zeros(a_shape), tf.zeros(b_shape))

    assert lone((1, 1, 40), (1, 40, 8))
    assert lone((1, 40), (40, 8))
    assert lone((1, 1, 4095), (1, 4095, 8))
    assert not lone((1, 1, 4096), (1, 4096, 8))  # 16 KB: not fused by XLA
    assert not lone((2, 1, 40), (2, 40, 8))
    assert not lone((1, 2, 40), (1, 40, 8))
    assert not lone((1, 1, 40), (1, 40, 1))
    assert not lone((40,), (40, 8))  # not a matmul of matrices


def test_one_gathered_row_times_its_rows_calls_the_gemm():
    """The product of an ALS block of one row (`_vecmat` on `[1, L, d]` gathered rows) compiles
    to a dot of its own, not a dot inside a loop fusion (a naive loop: on TF 2.21's XLA:CPU 0.7
    GFLOP/s, most of an iALS sweep at ML-1M shape before the padding)."""
    rng = np.random.default_rng(0)
    table = tf.constant(rng.normal(size=(50, 8)).astype(np.float32))
    cols = tf.constant(rng.integers(0, 50, 40).astype(np.int32))
    weights = tf.constant(rng.random((1, 1, 40)).astype(np.float32))

    @tf.function(jit_compile=True, autograph=False)
    def vecmat(table, cols, weights):
        return ops.matmul(weights, tf.reshape(tf.gather(table, cols), (1, 40, 8)))

    hlo = vecmat.experimental_get_compiler_ir(table, cols, weights)(stage="optimized_hlo")
    assert " dot(" in hlo
    assert _loop_fused_dots(hlo) == []
    want = weights.numpy().astype(np.float64) @ table.numpy().astype(np.float64)[cols.numpy()]
    np.testing.assert_allclose(vecmat(table, cols, weights).numpy(), want, rtol=RTOL, atol=1e-5)


def _spd(rng, batch: int, d: int) -> np.ndarray:
    m = rng.normal(size=(batch, d, d))
    return (m @ np.transpose(m, (0, 2, 1)) / d + 0.5 * np.eye(d)).astype(np.float32)


@pytest.mark.parametrize("d", [1, 3, 21, 64])
def test_solve_equals_float64(d):
    rng = np.random.default_rng(d)
    a = _spd(rng, 6, d)
    b = rng.normal(size=(6, d)).astype(np.float32)
    want = np.linalg.solve(a.astype(np.float64), b.astype(np.float64)[..., None])[..., 0]
    scale = float(np.max(np.abs(want)))
    got = backend.solve(a, b).numpy()  # compiled (XLA), as inside a sweep
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    eager = kernels.solve(tf.constant(a), tf.constant(b)).numpy()  # TF's own kernels
    np.testing.assert_allclose(eager, want, rtol=1e-4, atol=1e-4 * scale)


def test_cholesky_factor_is_lower_and_exact():
    rng = np.random.default_rng(1)
    a = _spd(rng, 4, 9)
    chol = tf.function(kernels._cholesky, jit_compile=True, autograph=False)(tf.constant(a))
    chol = chol.numpy().astype(np.float64)
    assert np.all(np.triu(chol, 1) == 0.0)
    np.testing.assert_allclose(chol, np.linalg.cholesky(a.astype(np.float64)), atol=1e-5)


def test_solve_of_a_system_not_positive_definite_is_nan():
    rng = np.random.default_rng(2)
    a = _spd(rng, 4, 3)
    b = rng.normal(size=(4, 3)).astype(np.float32)
    want = np.linalg.solve(a.astype(np.float64), b.astype(np.float64)[..., None])[..., 0]
    a[1] = np.diag([1.0, -1.0, 1.0])  # not positive definite: a NaN row, never an exception
    a[2] = 0.0  # singular
    out = backend.solve(a, b).numpy()
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    np.testing.assert_allclose(out[[0, 3]], want[[0, 3]], rtol=1e-4, atol=1e-5)


def test_solve_compiles_without_tf_linear_algebra():
    """No Cholesky or triangular-solve expansion of TF's XLA bridge in the compiled solve (the
    expansions ran 6x slower than the loops, and their compilation took half a first fit)."""
    a = tf.constant(_spd(np.random.default_rng(3), 2, 5))
    b = tf.ones((2, 5))
    hlo = tf.function(kernels.solve, jit_compile=True, autograph=False)
    text = hlo.experimental_get_compiler_ir(a, b)(stage="hlo")
    assert "Cholesky" not in text and "MatrixTriangularSolve" not in text
    assert "triangular-solve" not in text and "cholesky(" not in text
