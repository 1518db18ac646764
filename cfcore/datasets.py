"""Public datasets: `cfcore.datasets.load_movielens("100k" | "latest-small")`."""

from .data.movielens import FOLDS_100K as FOLDS_100K
from .data.movielens import DatasetError as DatasetError
from .data.movielens import MovieLens as MovieLens
from .data.movielens import load_movielens as load_movielens

__all__ = ["FOLDS_100K", "DatasetError", "MovieLens", "load_movielens"]
