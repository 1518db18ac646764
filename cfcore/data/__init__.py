"""Data API: the `Ratings` container, MovieLens loaders, splits and batching."""

from .batching import MinibatchSampler as MinibatchSampler
from .movielens import FOLDS_100K as FOLDS_100K
from .movielens import DatasetError as DatasetError
from .movielens import MovieLens as MovieLens
from .movielens import load_movielens as load_movielens
from .ratings import Ratings as Ratings
from .ratings import RatingsError as RatingsError
