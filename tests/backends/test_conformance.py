"""Every installed backend against the float64 reference, and TensorFlow against JAX."""

import pytest

from cfcore.testing import BackendConformance, CrossBackendConformance

from ..conftest import load_backend


class TestBackendConformance(BackendConformance):
    """Runs the shipped suite once per backend (the `backend` fixture in conftest)."""


@pytest.mark.slow
class TestBackendsAgree(CrossBackendConformance):
    @pytest.fixture(params=[("tf", "jax"), ("jax", "torch")], ids=lambda p: "-".join(p))
    def backend_pair(self, request):
        return tuple(load_backend(name) for name in request.param)

    @pytest.fixture
    def trajectory_data(self, ml100k):
        return ml100k.ratings.split(holdout_fraction=0.1, seed=0)


def test_backend_has_every_protocol_member(backend):
    import cfcore
    from cfcore.backend import BACKEND_MEMBERS
    from cfcore.backend.registry import check_backend_members

    assert check_backend_members(backend.ops) == [], backend.name
    assert isinstance(backend.ops, cfcore.Backend)
    # The Protocol is the boundary: at most 16 members (the rest are optional capabilities).
    assert len(BACKEND_MEMBERS) <= 16
    declared = {m for m in dir(cfcore.Backend) if not m.startswith("_")}
    assert set(BACKEND_MEMBERS) == declared | set(cfcore.Backend.__annotations__)
