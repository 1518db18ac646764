"""Kept for imports written before `cfcore.backend.checks`."""

from .backend.checks import check_embeddings as check_embeddings
from .backend.checks import check_pairs as check_pairs
