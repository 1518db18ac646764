"""Moved to `cfcore.backend.registry`; this name stays an alias of that module.

`cfcore._registry` *is* `cfcore.backend.registry` (the same module object), so existing imports,
attribute reads and monkeypatches through either name see the same state.
"""

import sys

from .backend import registry as _registry

sys.modules[__name__] = _registry
