"""The TF backend's array namespace where it departs from plain TensorFlow ops: one row times a
matrix (`ops.matmul`), which is padded to two rows so that XLA:CPU calls its GEMM."""

from __future__ import annotations

import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cfcore_tf import ops  # noqa: E402

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
