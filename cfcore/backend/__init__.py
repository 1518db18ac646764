"""The backend boundary (`protocol`), the registry and the checks done in core before dispatch."""

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
