"""The one trainer of every model: sessions, compiled guarded chunks, placement, progress."""

from .loop import ChunkResult as ChunkResult
from .loop import make_chunk as make_chunk
from .loop import make_step as make_step
from .placement import Placement as Placement
from .progress import progress_bar as progress_bar
from .session import Session as Session
from .session import TrainingDivergedError as TrainingDivergedError
from .session import as_ratings as as_ratings
from .session import check_steps as check_steps
