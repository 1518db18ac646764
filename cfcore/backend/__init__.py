"""The backend boundary (`protocol`), the registry and the checks done in core before dispatch."""

from .protocol import BACKEND_MEMBERS as BACKEND_MEMBERS
from .protocol import XP_FUNCTIONS as XP_FUNCTIONS
from .protocol import ArrayNamespace as ArrayNamespace
