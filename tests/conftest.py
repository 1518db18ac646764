"""Shared fixtures: the installed backends, strict float32 numerics, MovieLens (a local copy or
`load_movielens`'s download, see `_support/data_source.py`) and the hypothesis profile."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import cfcore
from cfcore.backend.programs import forget_programs
from cfcore.eval.agreement import strict_float32

from ._support.data_source import ensure_release, resolve

# The compilation cache is on by default, in the user's cache folder: the suite must neither
# write there nor depend on what an earlier run left. Tests of the cache give their own folder
# (or, for the default itself, their own HOME and XDG_CACHE_HOME) to the processes they start.
os.environ["CFCORE_COMPILATION_CACHE"] = "off"

BACKENDS = ("jax", "tf", "torch")
DATA_SOURCE = resolve()
DATA_DIR = DATA_SOURCE.root
"""The folder holding `ml-100k/` and `ml-latest-small/` (chosen without touching the network; a
test needing a release requests the `ml100k` / `ml100k_files` / `latest_files` fixture, which
downloads it into the cache on first use)."""

# Property-based tests are deterministic by default (the same examples on every run and machine)
# and small enough for CI's budget; HYPOTHESIS_PROFILE=explore searches more widely, at random.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _require_all() -> bool:
    # In CI every built-in backend must be present: a missing one fails, it is never skipped.
    return bool(os.environ.get("CI")) or bool(os.environ.get("CFCORE_REQUIRE_BACKENDS"))


def require_backend(name: str) -> None:
    """Skips (fails in CI) unless backend `name` is installed; imports nothing."""
    if name not in cfcore.available_backends():
        msg = f"backend {name!r} is not installed (pip install 'cfcore[{name}]')"
        if _require_all():
            pytest.fail(msg + "; CI requires every backend")
        pytest.skip(msg)


def load_backend(name: str):
    require_backend(name)
    be = cfcore.get_backend(name)
    strict_float32(be)
    return be


@pytest.fixture(params=BACKENDS)
def backend(request):
    return load_backend(request.param)


@pytest.fixture(scope="session")
def ml100k_files():
    """`DATA_DIR / "ml-100k"`, downloaded first if it is missing from the cache."""
    return ensure_release("100k", DATA_SOURCE)


@pytest.fixture(scope="session")
def latest_files():
    """`DATA_DIR / "ml-latest-small"`, downloaded first if it is missing from the cache."""
    return ensure_release("latest-small", DATA_SOURCE)


@pytest.fixture(scope="session")
def ml100k(ml100k_files):
    return cfcore.datasets.load_movielens("100k", data_dir=ml100k_files)


# In-process tests that each take several seconds of CPU (timed with `--durations` on the 2-core
# test machine): marked slow here, beside the runs marked slow in their files, so that
# `make test-fast` leaves them out. Named here since some live in cfcore.testing's suites.
SLOW_IN_PROCESS = {
    "backends/test_jax_pair_kernel.py": {"test_fit_is_the_same_with_either_kernel"},
    "backends/test_native_optimizers.py": {
        "test_keras_adam_on_tf_follows_cfcore_adam",
        "test_optax_transformation_on_jax",
    },
    "cli/test_cli.py": {
        "test_train_writes_an_offline_report",
        "test_train_mf_jax",
        "test_train_regularized_tf",
    },
    "cli/test_cli_als.py": {"test_train_biased_posterior_average", "test_train_als_models"},
    "eval/test_compare.py": {
        "test_compare_on_a_ratings_file",
        "test_compare_fails_when_a_difference_passes_its_tolerance",
    },
    "models/test_als.py": {"test_each_half_sweep_lowers_the_objective"},
    "models/test_als_conformance.py": {"test_blocks_do_not_change_a_sweep"},
    "models/test_properties.py": {"test_loss_and_gradients_match_the_float64_oracle"},
    "models/test_softmax_use.py": {"test_pictures_accept_a_softmax_model"},
    "models/test_softmax_conformance.py": {
        "test_notebook_model_trajectory",
        "test_sampled_model_trajectory",
    },
    "train/test_als_parts.py": {
        "test_tf_more_parts_than_blocks",
        "test_tf_graph_holds_independent_xla_parts",
    },
    "train/test_compile_cache.py": {
        "test_als_on_another_fold_reuses_the_compiled_sweep",
        "test_als_new_coefficients_reuse_the_compiled_sweep_and_are_used",
        "test_new_coefficients_reuse_the_compiled_chunk_and_are_used",
    },
    "viz/test_viz.py": {"test_tsne_shape_seed_and_cosine"},
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            where = item.path.relative_to(root).as_posix()
        except ValueError:
            continue
        if getattr(item, "originalname", item.name) in SLOW_IN_PROCESS.get(where, ()):
            item.add_marker(pytest.mark.slow)
        # The edge inputs that fit in a fresh process (`edge_surfaces._fit_in_process`).
        if where == "reliability/test_edge_inputs.py" and "(same result)" in item.name:
            item.add_marker(pytest.mark.subprocess)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """After each test module, the programs it compiled go. The suite runs in one process, and
    XLA maps every executable's code into memory of its own: kept for the whole run, the
    suite's thousands of programs reach the kernel's limit on mappings (`vm.max_map_count`)
    and the compiler crashes. TensorFlow keeps its XLA programs whatever cfcore drops."""
    yield
    forget_programs()
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
