"""Kept for imports of the models' objectives: they live in `cfcore.maths.objectives`."""

from ..maths.objectives import gravity as gravity
from ..maths.objectives import l2_penalty as l2_penalty
from ..maths.objectives import mf_loss as mf_loss
from ..maths.objectives import mf_loss_terms as mf_loss_terms
from ..maths.objectives import softmax_loss as softmax_loss
from ..maths.objectives import softmax_query_embeddings as softmax_query_embeddings
from ..maths.objectives import sparse_mse as sparse_mse
