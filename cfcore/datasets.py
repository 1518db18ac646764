"""Public datasets: `cfcore.datasets.load_movielens(name)` for every MovieLens release.

`name` is `"100k"`, `"1m"`, `"10m"`, `"20m"`, `"25m"`, `"latest"` or `"latest-small"`; see
`cfcore.data.movielens.load_movielens`.
"""

from .data.movielens import FOLDS_100K as FOLDS_100K
from .data.movielens import DatasetError as DatasetError
from .data.movielens import MovieLens as MovieLens
from .data.movielens import load_movielens as load_movielens

__all__ = ["FOLDS_100K", "DatasetError", "MovieLens", "load_movielens"]
