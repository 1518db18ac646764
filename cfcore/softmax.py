"""Kept for imports written before `cfcore.models.softmax`."""

from .models.softmax import SoftmaxModel as SoftmaxModel
from .models.softmax import check_bag_inputs as check_bag_inputs
from .models.softmax import check_softmax_inputs as check_softmax_inputs
from .models.softmax import init_softmax_params as init_softmax_params
from .models.softmax import label_log_probabilities as label_log_probabilities
