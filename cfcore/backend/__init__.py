"""The backend boundary (`protocol`: required, `capabilities`: optional), the registry and the
checks done in core before dispatch."""

from .capabilities import OPTIONAL_MEMBERS as OPTIONAL_MEMBERS
from .capabilities import Capabilities as Capabilities
from .capabilities import capability as capability
from .capabilities import has_capability as has_capability
from .capabilities import raw_ops as raw_ops
from .loops import python_loop as python_loop
from .protocol import BACKEND_MEMBERS as BACKEND_MEMBERS
from .protocol import XP_FUNCTIONS as XP_FUNCTIONS
from .protocol import ArrayNamespace as ArrayNamespace
from .registry import BackendError as BackendError
from .registry import available_backends as available_backends
from .registry import check_backend_members as check_backend_members
from .registry import get_backend as get_backend
from .registry import register_backend as register_backend
from .registry import set_default_backend as set_default_backend
