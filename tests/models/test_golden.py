"""The course notebook's regularized run on ml-100k lands where the notebook's own code lands.

Reference (the notebook's code under TensorFlow 2.21 compat.v1, seeded 90/10 splits, three seeds):
observed train MSE 1.00, test MSE 2.420 ± 0.019, regularization 0.85, gravity 1.32. We accept the
test MSE within two standard deviations of that mean (a three-seed estimate), and the loss parts
within a few hundredths.
"""

import numpy as np
import pytest

import cfcore
from cfcore.optimizers import SGD

from ..conftest import load_backend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def regularized_runs(ml100k):
    train, test = ml100k.ratings.split(holdout_fraction=0.1, seed=0)
    out = {}
    for name in ("jax", "tf"):
        model = cfcore.RegularizedMF(
            embedding_dim=35, init_stddev=0.05, regularization_coeff=0.1, gravity_coeff=1.0
        )
        history = model.fit(
            train,
            test=test,
            steps=2000,
            optimizer=SGD(20.0),
            backend=load_backend(name),
            seed=0,
            progress=False,
            eval_every=100,
        )
        out[name] = history.iloc[-1]
    return out


@pytest.mark.parametrize("name", ["jax", "tf"])
def test_regularized_run_lands_in_the_notebook_band(regularized_runs, name):
    last = regularized_runs[name]
    assert last["step"] == 2000
    assert abs(last["observed_loss"] - 1.00) <= 0.02, last["observed_loss"]
    assert abs(last["test_mse"] - 2.420) <= 2 * 0.019, last["test_mse"]
    assert abs(last["regularization_loss"] - 0.85) <= 0.02, last["regularization_loss"]
    assert abs(last["gravity_loss"] - 1.32) <= 0.03, last["gravity_loss"]
    # The notebook's observation: regularization raises both errors above plain MF's (~0.37 / ~1.35).
    assert last["observed_loss"] > 0.9 and last["test_mse"] > 2.0


def test_backends_agree_on_the_golden_run(regularized_runs):
    a, b = regularized_runs["jax"], regularized_runs["tf"]
    for col in ("train_mse", "test_mse", "regularization_loss", "gravity_loss"):
        assert np.isclose(a[col], b[col], rtol=0, atol=1e-4), (col, a[col], b[col])
