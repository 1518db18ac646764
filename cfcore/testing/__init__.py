"""The conformance suite, shipped so that a third-party backend can run it (needs pytest).

See `BackendConformance` for how to mix it into a test module.
"""

from ..backend.registry import check_backend_members as check_backend_members
from .als_conformance import ALSConformance as ALSConformance
from .als_conformance import ALSCrossBackend as ALSCrossBackend
from .batch_conformance import BatchConformance as BatchConformance
from .conformance import BackendConformance as BackendConformance
from .conformance import CrossBackendConformance as CrossBackendConformance
from .conformance import assert_array_close as assert_array_close
from .conformance import assert_scalar_close as assert_scalar_close
from .conformance import make_problem as make_problem
from .loss_conformance import LossProblem as LossProblem
from .loss_conformance import check_loss as check_loss
from .members_conformance import BackendMembersConformance as BackendMembersConformance
from .retrieval_conformance import RetrievalConformance as RetrievalConformance
from .softmax_conformance import SoftmaxConformance as SoftmaxConformance
from .softmax_conformance import SoftmaxCrossBackend as SoftmaxCrossBackend
