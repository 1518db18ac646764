"""Ranking metrics: moved to `cfcore.eval.metrics`; this documented path re-exports them."""

from .eval.metrics import *  # noqa: F403  (its __all__, below, is the list)
from .eval.metrics import __all__ as __all__
