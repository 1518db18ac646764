"""The softmax model on every installed backend against the float64 reference, and TF against JAX."""

import pytest

from cfcore.testing.softmax_conformance import SoftmaxConformance, SoftmaxCrossBackend

from ..conftest import load_backend


class TestSoftmaxConformance(SoftmaxConformance):
    """Runs the shipped softmax suite once per backend (the `backend` fixture in conftest)."""


class TestSoftmaxBackendsAgree(SoftmaxCrossBackend):
    @pytest.fixture(params=[("tf", "jax"), ("jax", "torch")], ids=lambda p: "-".join(p))
    def backend_pair(self, request):
        return tuple(load_backend(name) for name in request.param)

    @pytest.fixture
    def softmax_dataset(self, ml100k):
        return ml100k
