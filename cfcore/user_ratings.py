"""Your own ratings: moved to `cfcore.data.user_ratings`; this path (named in docstrings)
re-exports its public names."""

from .data.user_ratings import ID_COLUMNS as ID_COLUMNS
from .data.user_ratings import RATING_COLUMN as RATING_COLUMN
from .data.user_ratings import TITLE_COLUMNS as TITLE_COLUMNS
from .data.user_ratings import USER_COLUMN as USER_COLUMN
from .data.user_ratings import UserRatingsError as UserRatingsError
from .data.user_ratings import check_rating as check_rating
from .data.user_ratings import fold_in_arrays as fold_in_arrays
from .data.user_ratings import new_user_ids as new_user_ids
from .data.user_ratings import normalize_title as normalize_title
from .data.user_ratings import read_user_ratings as read_user_ratings
from .data.user_ratings import resolve_title as resolve_title
from .data.user_ratings import search_titles as search_titles
from .data.user_ratings import write_user_ratings as write_user_ratings
