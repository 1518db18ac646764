"""The notebook's softmax run on ml-100k (notebook protocol) lands where the notebook's code lands.

Reference: the notebook's own code under TensorFlow 2.21 (compat.v1), 3000 steps: train loss 5.44
(the loss of one batch of 200 users), test loss 5.87 (one batch of 100 test users, random labels),
precision@10 0.0114 (`tf.metrics.precision_at_k`, a running mean over the whole run).

Bands: at step 3000 a single example's loss has a standard deviation of about 1.4, so the
notebook's one-batch figures carry a standard deviation of about 0.10 (train, 200 users) and 0.14
(test, 100 users); our test loss is itself over 94 test users with one random label each (0.15).
We accept the train loss (mean batch loss of the last 100 steps) within 0.2 of 5.44 and the test
loss within 0.4 of 5.87 (two combined standard deviations). Our precision is the running mean of
precision@10 over the evaluations every 10 steps; over 94 users its standard deviation is about
0.003, and we accept it within 0.005 of 0.0114. Measured over seeds 0-2 (benchmarks/results/
softmax_golden.md): train 5.50-5.53, test 5.73-5.83, running precision 0.0095-0.0109.
"""

import numpy as np
import pytest

import cfcore
from cfcore.optimizers import Adagrad

from ..conftest import load_backend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def notebook_runs(ml100k):
    out = {}
    for name in ("jax", "tf"):
        model = cfcore.SoftmaxModel(
            feature_dims={"movie_id": 35, "genre": 3, "year": 2}, hidden_dims=(35,)
        )
        out[name] = model.fit(
            ml100k,
            steps=3000,
            optimizer=Adagrad(8.0),
            backend=load_backend(name),
            seed=0,
            batch_size=200,
            protocol="notebook",
            eval_every=10,
            progress=False,
        )
    return out


@pytest.mark.parametrize("name", ["jax", "tf"])
def test_notebook_run_lands_near_the_notebook(notebook_runs, name):
    history = notebook_runs[name]
    last = history.iloc[-1]
    assert last["step"] == 3000
    train_loss = history["train_loss"].iloc[-10:].mean()
    assert abs(train_loss - 5.44) <= 0.2, train_loss
    assert abs(last["test_loss"] - 5.87) <= 0.4, last["test_loss"]
    running_precision = history["precision@10"].iloc[1:].mean()
    assert abs(running_precision - 0.0114) <= 0.005, running_precision
    # One label per user: precision@10 can never pass 1/10 (the protocol's cap).
    assert (history["precision@10"] <= 0.1).all()
    # And it learnt: from log(1682) = 7.43 down.
    assert history["test_loss"].iloc[0] > 7.4 > 6.0 > last["test_loss"]


def test_backends_agree_on_the_golden_run(notebook_runs):
    a, b = notebook_runs["jax"], notebook_runs["tf"]
    for col in ("train_loss", "test_loss"):
        np.testing.assert_allclose(a[col].iloc[1:], b[col].iloc[1:], rtol=0, atol=2e-3, err_msg=col)
