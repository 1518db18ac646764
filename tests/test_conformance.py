"""Every installed backend against the float64 reference, and TensorFlow against JAX."""

import pytest

from cfcore.testing import BackendConformance, CrossBackendConformance

from .conftest import load_backend


class TestBackendConformance(BackendConformance):
    """Runs the shipped suite once per backend (the `backend` fixture in conftest)."""


@pytest.mark.slow
class TestTensorFlowAgreesWithJax(CrossBackendConformance):
    @pytest.fixture
    def backend_pair(self):
        return load_backend("tf"), load_backend("jax")

    @pytest.fixture
    def trajectory_data(self, ml100k):
        return ml100k.ratings.split(holdout_fraction=0.1, seed=0)


def test_backend_has_every_protocol_member(backend):
    import cfcore

    members = [m for m in dir(cfcore.Backend) if not m.startswith("_")]
    missing = [m for m in members if not hasattr(backend, m)]
    assert not missing, f"{backend.name} lacks {missing}"
    assert isinstance(backend, cfcore.Backend)
