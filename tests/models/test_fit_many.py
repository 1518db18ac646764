"""`cfcore.fit_many`: K models trained together equal their own fits, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.optimizers import SGD
from cfcore.testing.batch_conformance import CASES, BatchConformance

from ..conftest import BACKENDS, load_backend


class TestBatchConformance(BatchConformance):
    @pytest.fixture(params=(*BACKENDS, "numpy"))
    def backend(self, request):
        # numpy has no `vmap`: its models train one after another (and must equal too).
        return (
            cfcore.get_backend("numpy") if request.param == "numpy" else load_backend(request.param)
        )

    @pytest.fixture(autouse=True)
    def _sweeps_only_on_numpy(self, request, backend):
        # The float64 reference backend has no autodiff: it runs the closed-form sweeps only.
        case = request.node.callspec.params.get("case")
        gradient = case is None or "optimizer" in CASES[case][1][0]
        if backend.name == "numpy" and gradient:
            pytest.skip("the numpy backend takes no gradient steps")


# ---------------------------------------------------------------------------- the call itself
# (JAX: the default backend; what is checked here does not depend on the backend's maths)


def _ratings():
    return cfcore.synthetic_ratings(40, 30, 400, seed=5)


def test_models_of_different_steps_train_in_separate_batches():
    # A zero gravity drops its term from the program: two compiled steps, two batches.
    models = [cfcore.RegularizedMF(4, 0.5, 0.1, g) for g in (0.0, 0.5, 0.0, 1.0)]
    out = cfcore.fit_many(models, _ratings(), steps=2, optimizer=SGD(1.0), backend="jax",
                          progress=False)  # fmt: skip
    assert out.batched and out.groups == [[0, 2], [1, 3]]
    assert [m.step for m in models] == [2, 2, 2, 2]


def test_a_later_fit_continues_each_model():
    r = _ratings()
    together = [cfcore.RegularizedMF(4, 0.5, c) for c in (0.1, 1.0)]
    alone = [cfcore.RegularizedMF(4, 0.5, c) for c in (0.1, 1.0)]
    cfcore.fit_many(together, r, steps=2, optimizer=SGD(1.0), seed=[3, 4], backend="jax",
                    progress=False)  # fmt: skip
    for m, s in zip(alone, (3, 4), strict=True):
        m.fit(r, steps=2, optimizer=SGD(1.0), seed=s, backend="jax", progress=False)
    for a, b in zip(together, alone, strict=True):
        a.fit(r, steps=2, optimizer=SGD(1.0), backend="jax", progress=False)
        b.fit(r, steps=2, optimizer=SGD(1.0), backend="jax", progress=False)
        assert a.step == b.step == 4
        np.testing.assert_allclose(a.params_numpy()["user"], b.params_numpy()["user"], rtol=1e-5)


def test_a_batch_too_large_for_memory_is_refused_before_it_is_placed(monkeypatch):
    r = _ratings()
    alone = cfcore.RegularizedMF(4, 0.5, 0.1)
    monkeypatch.setenv("CFCORE_MEMORY_LIMIT", "20K")
    alone.fit(r, steps=1, optimizer=SGD(1.0), backend="jax", progress=False)  # one fits
    models = [cfcore.RegularizedMF(4, 0.5, c) for c in (0.1, 0.2, 0.3, 0.4, 0.5)]
    with pytest.raises(cfcore.ResourceLimitError, match="training 3 models together"):
        cfcore.fit_many(models, r, steps=1, optimizer=SGD(1.0), backend="jax", progress=False)
    for m in models[2:]:
        with pytest.raises(cfcore.NotFittedError):
            m.params_numpy()


@pytest.mark.parametrize(
    ("models", "kwargs", "error", "match"),
    [
        ([], {}, cfcore.ArgumentTypeError, "non-empty list"),
        ("abc", {}, cfcore.ArgumentTypeError, "non-empty list"),
        ([cfcore.WALS(4), 3], {}, cfcore.ArgumentTypeError, r"models\[1\] is a int"),
        ([cfcore.WALS(4), cfcore.IALS(4)], {}, cfcore.ArgumentTypeError, "IALS, WALS"),
        ([cfcore.WALS(4)] * 2, {}, cfcore.ArgumentValueError, "same model twice"),
        ([cfcore.WALS(4), cfcore.WALS(4)], {"seed": [1]}, cfcore.ArgumentValueError,
         "seed has 1 entries for 2 models"),
        ([cfcore.WALS(4), cfcore.WALS(4)], {"steps": 0}, cfcore.ArgumentValueError, "steps"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused(models, kwargs, error, match):
    kwargs = {"steps": 1, **kwargs}
    with pytest.raises(error, match=match):
        cfcore.fit_many(models, _ratings(), backend="jax", progress=False, **kwargs)


def test_without_vmap_the_models_train_one_after_another():
    models = [cfcore.WALS(4, regularization_coeff=c) for c in (0.1, 1.0)]
    out = cfcore.fit_many(models, _ratings(), steps=2, backend="numpy", progress=False)
    assert not out.batched and "cannot map a step over models" in out.reason
    assert [m.step for m in models] == [2, 2]


def test_a_layout_built_on_one_backend_is_not_reused_on_another():
    # BiasedMF's full-batch gradient data hold the backend's own pair layout: a fit on JAX then
    # on torch, on the same `Ratings`, must build torch's (the cache is keyed by backend too).
    pytest.importorskip("torch")
    r = _ratings()
    for backend in ("jax", "torch", "jax"):
        m = cfcore.BiasedMF(4, 0.5)
        m.fit(r, steps=2, optimizer=SGD(0.5), backend=backend, progress=False)
        assert np.isfinite(m.params_numpy()["user"]).all()


def test_a_step_the_backend_cannot_map_trains_one_by_one(monkeypatch):
    # As TensorFlow's `vectorized_map` of an ALS sweep whose loops it cannot vectorize: the
    # framework fails compiling the mapped step, before anything ran.
    from cfcore.train import batch

    be = cfcore.get_backend("jax")

    def vmap(fn, in_axes):
        def mapped(*args):
            raise RuntimeError("unsupported operation TensorListReserve\nmore detail")

        return mapped

    monkeypatch.setattr(type(be.ops), "vmap", staticmethod(vmap))
    monkeypatch.setattr(batch, "_LOOPS", {})
    r = _ratings()
    together = [cfcore.WALS(4, regularization_coeff=c) for c in (0.1, 1.0)]
    alone = [cfcore.WALS(4, regularization_coeff=c) for c in (0.1, 1.0)]
    out = cfcore.fit_many(together, r, steps=2, eval_every=1, seed=[0, 1], backend=be,
                          progress=False)  # fmt: skip
    assert not out.batched and out.groups == [[0], [1]]
    assert "could not compile" in out.reason and "TensorListReserve" in out.reason
    for m, s in zip(alone, (0, 1), strict=True):
        m.fit(r, steps=2, eval_every=1, seed=s, backend=be, progress=False)
    for a, b in zip(together, alone, strict=True):
        assert list(a.history["step"]) == list(b.history["step"]) == [0, 1, 2]
        np.testing.assert_array_equal(a.params_numpy()["user"], b.params_numpy()["user"])
