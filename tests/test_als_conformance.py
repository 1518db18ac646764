"""One sweep of every ALS solver on every backend against the float64 oracle, and backend pairs."""

from __future__ import annotations

import pytest

import cfcore
from cfcore.testing import ALSConformance, ALSCrossBackend

from .conftest import BACKENDS, load_backend


class TestALSConformance(ALSConformance):
    @pytest.fixture(params=(*BACKENDS, "numpy"))
    def backend(self, request):
        # The float64 reference backend runs the same core code: it checks the mathematics
        # without float32 rounding.
        return (
            cfcore.get_backend("numpy") if request.param == "numpy" else load_backend(request.param)
        )


@pytest.mark.slow  # TensorFlow compiles each sweep (5-10 s apiece)
class TestALSBackendsAgree(ALSCrossBackend):
    @pytest.fixture(params=[("jax", "tf"), ("jax", "torch")], ids=lambda p: "-".join(p))
    def backend_pair(self, request):
        return tuple(load_backend(name) for name in request.param)
