"""Ranking metrics: moved to `cfcore.eval.metrics`; this documented path re-exports them."""

from .eval.metrics import METRICS as METRICS
from .eval.metrics import hit_rate_at_k as hit_rate_at_k
from .eval.metrics import map_at_k as map_at_k
from .eval.metrics import ndcg_at_k as ndcg_at_k
from .eval.metrics import precision_at_k as precision_at_k
from .eval.metrics import ranking_metrics as ranking_metrics
from .eval.metrics import recall_at_k as recall_at_k

__all__ = [
    "METRICS",
    "hit_rate_at_k",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
]
