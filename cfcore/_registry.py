"""Moved to `cfcore.backend.registry`; this name stays an alias of that module.

`cfcore._registry` *is* `cfcore.backend.registry` (the same module object), so existing imports,
attribute reads and monkeypatches through either name see the same state.
"""

import sys
from typing import TYPE_CHECKING

from .backend import registry as _registry

if TYPE_CHECKING:
    # Type checkers do not follow the `sys.modules` swap below; to them the alias re-exports the
    # module's public names.
    from .backend.registry import *  # noqa: F403

sys.modules[__name__] = _registry
