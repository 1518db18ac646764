"""Pictures: data exploration, training curves, embedding norms and t-SNE maps of item embeddings.

Each picture comes twice: an interactive Altair chart (`*_chart`, saved as HTML with
`save_chart`), as in the course notebook, and a static matplotlib figure (`*_figure`, saved as PNG
with `save_figure`) for reports. Every function is pure: it returns a new chart or
`matplotlib.figure.Figure` and touches no global plotting state (no pyplot). matplotlib, Altair
and scikit-learn are imported inside the functions, so `import cfcore` stays light.

HTML pages are self-contained (the Vega libraries inside them, see `cfcore.viz.pages`): one chart
with `save_chart`, several in one page with `save_report`. Backends get one colour each
everywhere (`BACKEND_COLORS`).

Embeddings may be given as an item array `[M, d]`, a mapping with an `"item"` array (what
`model.embeddings` and an `embeddings.npz` from `cfcore train` hold) or a fitted model; several
models as a `{label: embeddings}` mapping or a list.

Example (the two `save_*` lines write files, so the doctest run skips them):
    >>> import cfcore, numpy as np
    >>> ml = cfcore.datasets.load_movielens("100k")
    >>> chart = user_exploration_chart(ml.ratings, ml.users)
    >>> save_chart(chart, "users.html")                                         # doctest: +SKIP
    >>> random = np.random.default_rng(0).normal(size=(ml.ratings.num_items, 8))
    >>> fig = embedding_norm_figure({"random": random}, ml.ratings)
    >>> [ax.get_title() for ax in fig.axes]
    ['random\\nSpearman ρ = 0.04']
    >>> save_figure(fig, "norms.png")                                           # doctest: +SKIP
"""

from ._style import BACKEND_COLORS as BACKEND_COLORS
from ._style import backend_color as backend_color
from .embeddings import embedding_norm_chart as embedding_norm_chart
from .embeddings import embedding_norm_figure as embedding_norm_figure
from .embeddings import embedding_norms as embedding_norms
from .exploration import item_exploration_chart as item_exploration_chart
from .exploration import item_exploration_figure as item_exploration_figure
from .exploration import user_exploration_chart as user_exploration_chart
from .exploration import user_exploration_figure as user_exploration_figure
from .pages import read_page as read_page
from .pages import save_report as save_report
from .save import save_chart as save_chart
from .save import save_figure as save_figure
from .training import METRIC_GROUPS as METRIC_GROUPS
from .training import training_curves_chart as training_curves_chart
from .training import training_curves_figure as training_curves_figure
from .tsne_maps import tsne as tsne
from .tsne_maps import tsne_chart as tsne_chart
from .tsne_maps import tsne_figure as tsne_figure
from .tuning import tuning_chart as tuning_chart

__all__ = [
    "BACKEND_COLORS",
    "METRIC_GROUPS",
    "backend_color",
    "embedding_norm_chart",
    "embedding_norm_figure",
    "embedding_norms",
    "item_exploration_chart",
    "item_exploration_figure",
    "read_page",
    "save_chart",
    "save_figure",
    "save_report",
    "training_curves_chart",
    "training_curves_figure",
    "tsne",
    "tsne_chart",
    "tsne_figure",
    "tuning_chart",
    "user_exploration_chart",
    "user_exploration_figure",
]
