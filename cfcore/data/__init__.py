"""Data API: the `Ratings` container, MovieLens loaders, splits and batching."""

from .ratings import Ratings as Ratings
from .ratings import RatingsError as RatingsError
