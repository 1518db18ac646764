"""Tables of the data exploration: moved to `cfcore.data.exploration`; this documented path
re-exports them."""

from .data.exploration import *  # noqa: F403  (its __all__, below, is the list)
from .data.exploration import __all__ as __all__
