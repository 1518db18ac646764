"""The popularity baseline: moved to `cfcore.eval.popularity`; this path re-exports it."""

from .eval.popularity import evaluate_popularity as evaluate_popularity
from .eval.popularity import popularity_ranking as popularity_ranking
from .eval.popularity import popularity_scores as popularity_scores

__all__ = [
    "evaluate_popularity",
    "popularity_ranking",
    "popularity_scores",
]
