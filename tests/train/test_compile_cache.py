"""A hyper-parameter search compiles the training chunk once: a cfcore optimizer's numbers
(learning rate, betas, eps) are read at run time from the optimizer state, and a model's penalty
coefficients (λ, λb, λg) from the training data (`cfcore.train.hyper`), not traced in."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore import get_backend
from cfcore.train import session as session_module

from ..conftest import BACKENDS, require_backend

OPTIMIZERS = {
    "sgd": lambda lr: cfcore.optimizers.SGD(lr),
    "adagrad": lambda lr: cfcore.optimizers.Adagrad(lr, eps=1e-6),
    "adam": lambda lr: cfcore.optimizers.Adam(lr / 10, b1=0.8),
}


def _fit(backend: str, optimizer, ratings) -> dict[str, np.ndarray]:
    model = cfcore.RegularizedMF(embedding_dim=4, init_stddev=0.5)
    model.fit(
        ratings,
        steps=12,
        optimizer=optimizer,
        batch_size=64,
        eval_every=6,
        backend=backend,
        progress=False,
    )
    return model.params_numpy()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_learning_rate_reuses_the_compiled_chunk_and_is_used(
    backend: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_backend(backend)
    ratings = cfcore.synthetic_ratings(40, 30, 600, seed=0)
    make = OPTIMIZERS[name]
    chunks: dict = {}
    monkeypatch.setattr(session_module, "_CHUNKS", chunks)
    first = _fit(backend, make(0.5), ratings)
    compiled = dict(chunks)
    assert len(compiled) == 1
    second = _fit(backend, make(0.1), ratings)
    # One chunk for both learning rates, the very same compiled function.
    assert chunks.keys() == compiled.keys()
    assert all(chunks[k] is compiled[k] for k in chunks)
    # ... and the second fit used its own learning rate: it equals a fit of that rate alone,
    # compiled afresh, bit for bit, and differs from the first.
    monkeypatch.setattr(session_module, "_CHUNKS", {})
    alone = _fit(backend, make(0.1), ratings)
    for table in ("user", "item"):
        np.testing.assert_array_equal(second[table], alone[table], err_msg=table)
        assert not np.allclose(second[table], first[table]), table


MODELS = {
    "regularized": lambda lam: cfcore.RegularizedMF(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=lam, gravity_coeff=2 * lam
    ),
    "biased": lambda lam: cfcore.BiasedMF(
        embedding_dim=4,
        init_stddev=0.5,
        regularization_coeff=lam,
        bias_regularization_coeff=lam / 2,
        gravity_coeff=lam,
    ),  # fmt: skip
}


def _fit_model(backend: str, model, ratings, batch_size):
    model.fit(
        ratings,
        test=ratings,
        steps=12,
        optimizer=cfcore.optimizers.Adam(0.05),
        batch_size=batch_size,
        eval_every=6,
        backend=backend,
        progress=False,
    )
    return model


@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_new_coefficients_reuse_the_compiled_chunk_and_are_used(
    backend: str, kind: str, batch_size, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_backend(backend)
    be = get_backend(backend)
    ratings = cfcore.synthetic_ratings(40, 30, 600, seed=0)
    chunks: dict = {}
    monkeypatch.setattr(session_module, "_CHUNKS", chunks)
    monkeypatch.setattr(be, "_compiled", {})
    first = _fit_model(backend, MODELS[kind](0.05), ratings, batch_size)
    compiled, evaluations = dict(chunks), dict(be._compiled)
    second = _fit_model(backend, MODELS[kind](0.4), ratings, batch_size)
    # The same compiled training chunk and evaluation functions served both coefficients.
    assert chunks.keys() == compiled.keys() and len(chunks) == 1
    assert all(chunks[k] is compiled[k] for k in chunks)
    assert be._compiled.keys() == evaluations.keys()
    # A fit of the second coefficients alone, everything compiled afresh: the same parameters
    # and history bit for bit (so the reused programs read the new numbers), not the first's.
    monkeypatch.setattr(session_module, "_CHUNKS", {})
    monkeypatch.setattr(be, "_compiled", {})
    alone = _fit_model(backend, MODELS[kind](0.4), ratings, batch_size)
    got, want, other = second.params_numpy(), alone.params_numpy(), first.params_numpy()
    for table in want:
        np.testing.assert_array_equal(got[table], want[table], err_msg=table)
        assert not np.allclose(got[table], other[table]), table
    np.testing.assert_array_equal(second.history.to_numpy(), alone.history.to_numpy())
    assert not np.allclose(
        second.history["regularization_loss"], first.history["regularization_loss"]
    )


# ---------------------------------------------------------------------------- ALS sweeps

ALS_MODELS = {
    "wals": lambda lam: cfcore.WALS(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=lam, gravity_coeff=2 * lam
    ),
    "ials": lambda lam: cfcore.IALS(
        embedding_dim=4,
        init_stddev=0.5,
        regularization_coeff=lam,
        unobserved_weight=lam / 2,
        regularization_exponent=0.5 + lam,
        confidence=2 * lam,
    ),
    "biased": lambda lam: cfcore.BiasedMF(
        embedding_dim=4,
        init_stddev=0.5,
        regularization_coeff=lam,
        bias_regularization_coeff=lam / 2,
        gravity_coeff=lam,
    ),
}


class _Traces:
    """Counts the traces of the ALS half-sweeps (calls of the `half` functions that
    `make_half_sweep` makes, in every module that makes them): on a compiling backend a call is
    a trace of compiled code (a compiled run calls no Python), so a fit that traces nothing
    compiles no sweep. On JAX it also counts the backend's compilations (XLA executables)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
        from cfcore.maths import als as als_maths
        from cfcore.models import als, biased, posterior

        self.halves = 0
        self.compiles = 0
        make = als_maths.make_half_sweep

        def counting(*args, **kwargs):
            half = make(*args, **kwargs)

            def traced(*a, **k):
                self.halves += 1
                return half(*a, **k)

            return traced

        for module in (als, biased, posterior):
            monkeypatch.setattr(module, "make_half_sweep", counting)
        if backend == "jax":
            import jax

            def listen(event: str, duration: float, **kwargs) -> None:
                if event == "/jax/core/compile/backend_compile_duration":
                    self.compiles += 1

            jax.monitoring.register_event_duration_secs_listener(listen)
            self._stop = lambda: jax.monitoring.unregister_event_duration_listener(listen)
        else:
            self._stop = lambda: None

    def count(self) -> tuple[int, int]:
        return self.halves, self.compiles

    def stop(self) -> None:
        self._stop()


@pytest.fixture
def traces(request, monkeypatch: pytest.MonkeyPatch):
    counter = _Traces(monkeypatch, request.node.callspec.params["backend"])
    yield counter
    counter.stop()


def _fresh_caches(monkeypatch: pytest.MonkeyPatch, be) -> dict:
    """Empty compiled-chunk and backend caches: whatever runs next compiles afresh."""
    chunks: dict = {}
    monkeypatch.setattr(session_module, "_CHUNKS", chunks)
    monkeypatch.setattr(be, "_compiled", {})
    return chunks


def _fit_als(backend: str, model, ratings, test=None, steps: int = 4):
    kwargs = {} if test is None else {"test": test}
    model.fit(ratings, steps=steps, eval_every=2, backend=backend, progress=False, **kwargs)
    return model


@pytest.mark.parametrize("kind", sorted(ALS_MODELS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_als_new_coefficients_reuse_the_compiled_sweep_and_are_used(
    backend: str, kind: str, monkeypatch: pytest.MonkeyPatch, traces: _Traces
) -> None:
    require_backend(backend)
    be = get_backend(backend)
    ratings = cfcore.synthetic_ratings(40, 30, 600, seed=0)
    test = None
    if kind == "ials":
        ratings = ratings.to_implicit(threshold=3.0)
    elif kind == "wals":
        test = cfcore.synthetic_ratings(40, 30, 100, seed=1)
    chunks = _fresh_caches(monkeypatch, be)
    first = _fit_als(backend, ALS_MODELS[kind](0.05), ratings, test)
    compiled, evaluations = dict(chunks), dict(be._compiled)
    before = traces.count()
    assert before[0] > 0, "the counter must see the first fit's half-sweeps"
    assert before[1] > 0 or backend != "jax", "the counter must see JAX compile"
    second = _fit_als(backend, ALS_MODELS[kind](0.4), ratings, test)
    # The same compiled sweep chunk and evaluation functions served both coefficients ...
    assert chunks.keys() == compiled.keys() and len(chunks) == 1
    assert all(chunks[k] is compiled[k] for k in chunks)
    assert be._compiled.keys() == evaluations.keys()
    if backend != "torch":  # (torch runs eagerly: every sweep calls the halves)
        # ... and nothing was traced or compiled again.
        assert traces.count() == before
    # A fit of the second coefficients alone, everything compiled afresh: the same parameters
    # and history bit for bit (so the reused sweep read the new numbers), not the first's.
    _fresh_caches(monkeypatch, be)
    alone = _fit_als(backend, ALS_MODELS[kind](0.4), ratings, test)
    if backend != "torch":
        assert traces.count()[0] > before[0], "a fresh compile traces the halves again"
    got, want, other = second.params_numpy(), alone.params_numpy(), first.params_numpy()
    for table in want:
        np.testing.assert_array_equal(got[table], want[table], err_msg=table)
        assert not np.allclose(got[table], other[table]), table
    np.testing.assert_array_equal(second.history.to_numpy(), alone.history.to_numpy())
    assert not np.allclose(second.history["total_loss"], first.history["total_loss"])


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_als_on_another_fold_reuses_the_compiled_sweep(
    backend: str, ml100k, monkeypatch: pytest.MonkeyPatch, traces: _Traces
) -> None:
    """ml-100k's folds u1 and u2 (same catalog, 80,000 ratings each, other users' counts) get the
    same bucket shapes (`cfcore.data.row_blocks.canonical_count`): the second fold's BiasedMF
    ALS fit, of other coefficients too, compiles nothing and equals a fresh compile's fit."""
    require_backend(backend)
    be = get_backend(backend)
    u1, u1_test = ml100k.fold("u1")
    u2, u2_test = ml100k.fold("u2")

    def model(lam: float) -> cfcore.BiasedMF:
        return cfcore.BiasedMF(embedding_dim=6, regularization_coeff=lam)

    chunks = _fresh_caches(monkeypatch, be)
    _fit_als(backend, model(0.25), u1, u1_test, steps=2)
    compiled, evaluations = dict(chunks), dict(be._compiled)
    before = traces.count()
    assert before[0] > 0 and (before[1] > 0 or backend != "jax")
    second = _fit_als(backend, model(0.2), u2, u2_test, steps=2)
    assert chunks.keys() == compiled.keys() and len(chunks) == 1
    assert all(chunks[k] is compiled[k] for k in chunks)
    assert be._compiled.keys() == evaluations.keys()
    assert traces.count() == before, "the second fold traced or compiled its sweep again"
    _fresh_caches(monkeypatch, be)
    alone = _fit_als(backend, model(0.2), u2, u2_test, steps=2)
    assert traces.count()[0] > before[0]
    got, want = second.params_numpy(), alone.params_numpy()
    for table in want:
        np.testing.assert_array_equal(got[table], want[table], err_msg=table)
    np.testing.assert_array_equal(second.history.to_numpy(), alone.history.to_numpy())


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_gibbs_sampling_with_new_coefficients_reuses_the_compiled_sweep(
    backend: str, monkeypatch: pytest.MonkeyPatch, traces: _Traces
) -> None:
    """`BiasedMF.sample_posterior` reads λ and λb at run time too: a chain of other
    coefficients traces no new Gibbs sweep, and equals one compiled afresh bit for bit."""
    require_backend(backend)
    be = get_backend(backend)
    ratings = cfcore.synthetic_ratings(40, 30, 600, seed=0)

    def sample(lam: float):
        model = cfcore.BiasedMF(
            embedding_dim=3, regularization_coeff=lam, bias_regularization_coeff=lam
        )
        return model.sample_posterior(
            ratings, samples=2, burn_in=1, backend=backend, progress=False
        )

    _fresh_caches(monkeypatch, be)
    first = sample(0.1)
    compiled = dict(be._compiled)
    before = traces.count()
    assert before[0] > 0
    second = sample(0.5)
    assert be._compiled.keys() == compiled.keys()
    assert all(be._compiled[k] is compiled[k] for k in compiled)
    assert traces.count() == before
    _fresh_caches(monkeypatch, be)
    alone = sample(0.5)
    assert traces.count()[0] > before[0]
    got, want, other = second.params_numpy(), alone.params_numpy(), first.params_numpy()
    for table in want:
        np.testing.assert_array_equal(got[table], want[table], err_msg=table)
        assert not np.allclose(got[table], other[table]), table
