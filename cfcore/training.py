"""Kept for imports written before `cfcore.train`: the trainer now lives there."""

from .models.mf import EVAL_CHUNK as EVAL_CHUNK
from .train.session import TrainingDivergedError as TrainingDivergedError
from .train.session import as_ratings as as_ratings
from .train.session import check_steps as check_steps
