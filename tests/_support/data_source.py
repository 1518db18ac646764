"""Where the tests find MovieLens: a local copy, else `load_movielens`'s own download and cache.

The folder the tests read (`data_root`, a folder holding `ml-100k/` and `ml-latest-small/`) is
chosen without touching the network, when conftest is imported:

1. `$CFCORE_TEST_DATA`, if set: used as is, never downloaded into.
2. Else the first of `$CFCORE_DATA_DIR` and `../shared/data` (beside the checkout) that holds
   `ml-100k/`.
3. Else the library's cache folder (`$CFCORE_DATA_DIR`, else the user's cache folder): a release
   missing there is downloaded by `load_movielens` itself (verified by SHA-256, then cached) the
   first time a test needs it.

When a release can be neither found nor downloaded, a test that needs it fails where the data
are required (`CI`, or `CFCORE_REQUIRE_DATA=1`, as `.ci/run` sets) and is skipped elsewhere,
with a message that says how to point the tests at a copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pytest

from cfcore.data._download import DATA_DIR_ENV
from cfcore.data.movielens import DatasetError, load_movielens

TEST_DATA_ENV = "CFCORE_TEST_DATA"
REQUIRE_DATA_ENV = "CFCORE_REQUIRE_DATA"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FOLDERS = {"100k": "ml-100k", "latest-small": "ml-latest-small"}


@dataclass(frozen=True)
class DataSource:
    """The folder the tests read MovieLens from.

    Attributes:
        root: holds (or will hold) `ml-100k/` and `ml-latest-small/`.
        downloadable: whether a release missing from `root` may be downloaded into it (only the
            library's cache folder, never a copy the user pointed at).
        why: how `root` was chosen, for messages.
    """

    root: Path
    downloadable: bool
    why: str


def data_required(env: Mapping[str, str] = os.environ) -> bool:
    """Whether a missing data set fails the tests (CI) instead of skipping them."""
    return bool(env.get("CI")) or bool(env.get(REQUIRE_DATA_ENV))


def resolve(env: Mapping[str, str] = os.environ, shared: Path = SHARED_DATA) -> DataSource:
    """Chooses the folder the tests read, without touching the network (see the module doc)."""
    if env.get(TEST_DATA_ENV):
        return DataSource(Path(env[TEST_DATA_ENV]).expanduser(), False, f"${TEST_DATA_ENV}")
    candidates = []
    if env.get(DATA_DIR_ENV):
        candidates.append((Path(env[DATA_DIR_ENV]).expanduser(), f"${DATA_DIR_ENV}"))
    candidates.append((shared, "the shared copy beside the checkout"))
    for root, why in candidates:
        if (root / FOLDERS["100k"]).is_dir():
            return DataSource(root, False, why)
    if env.get(DATA_DIR_ENV):
        return DataSource(Path(env[DATA_DIR_ENV]).expanduser(), True, f"${DATA_DIR_ENV}")
    # What cache_dir() gives with CFCORE_DATA_DIR unset: the user's cache folder.
    return DataSource(Path(platformdirs.user_cache_dir("cfcore")), True, "the user's cache folder")


def how_to_point() -> str:
    """The advice every 'not found' message ends with."""
    return (
        f"To use a local copy, set {DATA_DIR_ENV} (or {TEST_DATA_ENV}) to a folder holding "
        f"ml-100k/ and ml-latest-small/, e.g. {DATA_DIR_ENV}=/path/to/movielens make test"
    )


def ensure_release(
    name: str,
    source: DataSource,
    *,
    env: Mapping[str, str] = os.environ,
    load: Callable[..., object] = load_movielens,
) -> Path:
    """The release folder `source.root / ml-...`, downloading it there first if allowed.

    Args:
        name: "100k" or "latest-small".
        source: from `resolve`.
        env: read for `data_required`.
        load: `load_movielens` (replaced in the tests of this module).

    Returns:
        The release folder.

    Raises:
        pytest.fail.Exception / pytest.skip.Exception: the release is not there and could not be
            downloaded (fail where the data are required, skip elsewhere).
    """
    folder = source.root / FOLDERS[name]
    if folder.is_dir():
        return folder
    if not source.downloadable:
        problem = f"MovieLens {name} not found: {folder} does not exist ({source.why})"
    else:
        try:
            # load_movielens's own download and cache, into the folder chosen above.
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(DATA_DIR_ENV, str(source.root))
                load(name, download=True)
        except DatasetError as exc:
            problem = (
                f"MovieLens {name} is not in {source.root} ({source.why}) and could not be "
                f"downloaded: {exc}"
            )
        else:
            if folder.is_dir():
                return folder
            problem = f"MovieLens {name} was downloaded but {folder} is missing"
    message = f"{problem}. {how_to_point()}"
    if data_required(env):
        pytest.fail(f"{message} (CI requires the data: {REQUIRE_DATA_ENV} or CI is set)")
    pytest.skip(message)
