"""Member completeness: a backend has every member of the backend Protocol (needs pytest).

Use from a test module by subclassing with a `backend` fixture::

    import pytest
    from cfcore.testing import BackendMembersConformance

    class TestMyBackendMembers(BackendMembersConformance):
        @pytest.fixture
        def backend(self):
            return my_backend_instance

Only presence is checked (`cfcore.backend.check_backend_members`); behaviour is what the other
conformance suites check.
"""

from __future__ import annotations

from ..backend.protocol import BACKEND_MEMBERS
from ..backend.registry import check_backend_members


class BackendMembersConformance:
    """Checks that one backend (the `backend` fixture) has every member of the Protocol."""

    def test_has_every_protocol_member(self, backend):
        missing = check_backend_members(backend)
        assert missing == [], (
            f"backend {getattr(backend, 'name', backend)!r} lacks {missing} "
            f"(the Protocol has {len(BACKEND_MEMBERS)} members; see cfcore.backend.protocol)"
        )

    def test_name_is_a_string(self, backend):
        assert isinstance(getattr(backend, "name", None), str), "backend.name must be a str"

    def test_is_available(self, backend):
        assert backend.is_available() is True, "is_available() must be True where the suite runs"
