"""Tables of the data exploration: moved to `cfcore.data.exploration`; this documented path
re-exports them."""

from .data.exploration import check_genres as check_genres
from .data.exploration import genre_names as genre_names
from .data.exploration import item_stats as item_stats
from .data.exploration import most_rated as most_rated
from .data.exploration import slice_by_genre as slice_by_genre
from .data.exploration import slice_by_occupation as slice_by_occupation
from .data.exploration import summary as summary
from .data.exploration import to_markdown as to_markdown
from .data.exploration import top_rated as top_rated
from .data.exploration import user_stats as user_stats

__all__ = [
    "check_genres",
    "genre_names",
    "item_stats",
    "most_rated",
    "slice_by_genre",
    "slice_by_occupation",
    "summary",
    "to_markdown",
    "top_rated",
    "user_stats",
]
