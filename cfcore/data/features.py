"""Bag-of-words inputs of the softmax model: vocabularies, user histories, splits and batches.

A user is described, as in the notebook's section VI, by three bags of tokens built from the movies
they rated: the movie ids (`"movie_id"`), the genres of those movies (`"genre"`, one token per
active genre flag, so a user who rated five dramas has "Drama" five times in the bag) and their
release years (`"year"`). Each feature has its own vocabulary.

Everything here is NumPy and every random draw comes from `numpy.random.default_rng(seed)`, so the
TensorFlow and JAX backends receive identical batches.

A bag is a set of tokens with counts. For a feature whose vocabulary has at most `DENSE_VOCAB`
tokens (the movie ids, genres and years of MovieLens 100K) it is sent dense: `weights[f]`, float32
`[B, V_f]`, the count of every token, and the backend combines it with one matrix product
(`weights · T / Σ weights` for the mean). A larger vocabulary is sent sparse: `ids[f]` (int32
`[B, L_f]`) and `weights[f]` (float32 `[B, L_f]`), the distinct tokens with their counts padded
with weight 0 to `L_f`, the most distinct tokens any user's history holds (fixed, so batch shapes
and compilations do not change between steps). Either way the mean combiner equals the plain mean
over the bag with its repetitions.

Example:
    >>> import cfcore
    >>> ml = cfcore.datasets.load_movielens("100k")
    >>> feats = HistoryFeatures.from_dataset(ml)
    >>> {name: len(vocab) for name, vocab in feats.vocabularies.items()}
    {'movie_id': 1682, 'genre': 19, 'year': 72}
    >>> split = split_users(feats, protocol="holdout", seed=0)
    >>> len(split.train_users), len(split.test_users)
    (849, 94)
    >>> batcher = SoftmaxBatcher(feats, split.train_users, batch_size=200, seed=0,
    ...                          protocol="holdout")
    >>> batch = batcher.take(10)  # 10 steps of 200 users: dense bags, weights [10, 200, V_f]
    >>> batch.weights["genre"].shape, batch.labels.shape
    ((10, 200, 19), (10, 200))

The code lives in `bags` (`Vocabulary`, `Ragged`, `SoftmaxBatch`), `history` (`HistoryFeatures`
and `DENSE_VOCAB`), `splits` (`split_users`, `input_bags`) and `softmax_batches`
(`SoftmaxBatcher`); this module gathers their public names. `DENSE_VOCAB` is read from
`cfcore.data.history`, so set it there to change the threshold.
"""

from .bags import Ragged as Ragged
from .bags import SoftmaxBatch as SoftmaxBatch
from .bags import Vocabulary as Vocabulary
from .history import DENSE_VOCAB as DENSE_VOCAB
from .history import FEATURES as FEATURES
from .history import MISSING as MISSING
from .history import NO_GENRE as NO_GENRE
from .history import HistoryFeatures as HistoryFeatures
from .history import _ratings_of as _ratings_of
from .softmax_batches import SoftmaxBatcher as SoftmaxBatcher
from .splits import PROTOCOLS as PROTOCOLS
from .splits import SoftmaxSplit as SoftmaxSplit
from .splits import input_bags as input_bags
from .splits import split_users as split_users

__all__ = [
    "DENSE_VOCAB",
    "FEATURES",
    "PROTOCOLS",
    "HistoryFeatures",
    "Ragged",
    "SoftmaxBatch",
    "SoftmaxBatcher",
    "SoftmaxSplit",
    "Vocabulary",
    "input_bags",
    "split_users",
]
