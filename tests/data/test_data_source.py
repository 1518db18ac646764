"""Where the tests find MovieLens (`tests/_support/data_source.py`), with fake folders and a fake download:
nothing here touches the network, the user's cache or the shared copy."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

from cfcore.data.movielens import DatasetError

from .._support import data_source
from .._support.data_source import DataSource, ensure_release, resolve


def release(root: Path, folder: str = "ml-100k") -> Path:
    (root / folder).mkdir(parents=True)
    return root / folder


# ---------------------------------------------------------------------------- choosing the folder


def test_test_data_env_wins_even_without_the_release(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    release(shared)
    source = resolve({"CFCORE_TEST_DATA": str(tmp_path / "mine")}, shared)
    assert source == DataSource(tmp_path / "mine", False, "$CFCORE_TEST_DATA")


def test_data_dir_env_holding_the_release_comes_before_the_shared_copy(tmp_path: Path) -> None:
    shared, mine = tmp_path / "shared", tmp_path / "mine"
    release(shared)
    release(mine)
    source = resolve({"CFCORE_DATA_DIR": str(mine)}, shared)
    assert source.root == mine and not source.downloadable


def test_shared_copy_is_used_when_present(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    release(shared)
    for env in ({}, {"CFCORE_DATA_DIR": str(tmp_path / "empty")}):
        source = resolve(env, shared)
        assert source.root == shared and not source.downloadable, env


def test_without_a_copy_the_data_dir_env_is_the_download_target(tmp_path: Path) -> None:
    source = resolve({"CFCORE_DATA_DIR": str(tmp_path / "cache")}, tmp_path / "no-shared")
    assert source == DataSource(tmp_path / "cache", True, "$CFCORE_DATA_DIR")


def test_without_a_copy_or_env_the_user_cache_is_the_download_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "u" / app))
    source = resolve({}, tmp_path / "no-shared")
    assert source.root == tmp_path / "u" / "cfcore" and source.downloadable


# ---------------------------------------------------------------------------- finding or downloading


def fake_load(calls: list[tuple[str, str | None]], *, ok: bool = True):
    """A stand-in for `load_movielens` that records where it was asked to cache the release."""

    def load(name: str, download: bool = True) -> None:
        root = os.environ.get("CFCORE_DATA_DIR")
        calls.append((name, root))
        if not ok:
            raise DatasetError(f"could not download ml-{name}.zip into {root}: no network")
        release(Path(root), data_source.FOLDERS[name])

    return load


def test_present_release_is_returned_without_a_download(tmp_path: Path) -> None:
    folder = release(tmp_path)
    calls: list = []
    source = DataSource(tmp_path, True, "test")
    assert ensure_release("100k", source, env={}, load=fake_load(calls)) == folder
    assert calls == []


def test_missing_release_is_downloaded_into_the_chosen_cache(tmp_path: Path) -> None:
    calls: list = []
    source = DataSource(tmp_path / "cache", True, "test")
    found = ensure_release("latest-small", source, env={}, load=fake_load(calls))
    assert found == tmp_path / "cache" / "ml-latest-small" and found.is_dir()
    # load_movielens's own cache, pointed at the chosen folder.
    assert calls == [("latest-small", str(tmp_path / "cache"))]


@pytest.mark.parametrize("env", [{}, {"CI": ""}, {"CFCORE_REQUIRE_DATA": ""}])
def test_failed_download_skips_outside_ci_and_says_how_to_point_at_a_copy(
    tmp_path: Path, env: dict[str, str]
) -> None:
    source = DataSource(tmp_path / "cache", True, "test")
    with pytest.raises(pytest.skip.Exception) as info:
        ensure_release("100k", source, env=env, load=fake_load([], ok=False))
    message = str(info.value)
    assert "no network" in message and str(tmp_path / "cache") in message
    assert "CFCORE_DATA_DIR=" in message and "ml-100k/" in message


@pytest.mark.parametrize("env", [{"CI": "true"}, {"CFCORE_REQUIRE_DATA": "1"}])
def test_failed_download_fails_in_ci(tmp_path: Path, env: dict[str, str]) -> None:
    source = DataSource(tmp_path / "cache", True, "test")
    with pytest.raises(pytest.fail.Exception) as info:
        ensure_release("100k", source, env=env, load=fake_load([], ok=False))
    assert "no network" in str(info.value) and "CFCORE_DATA_DIR=" in str(info.value)


def test_a_copy_the_user_pointed_at_is_never_downloaded_into(tmp_path: Path) -> None:
    calls: list = []
    source = DataSource(tmp_path / "mine", False, "$CFCORE_TEST_DATA")
    with pytest.raises(pytest.skip.Exception) as info:
        ensure_release("100k", source, env={}, load=fake_load(calls))
    assert calls == []
    assert str(tmp_path / "mine" / "ml-100k") in str(info.value)
    assert "$CFCORE_TEST_DATA" in str(info.value)
    with pytest.raises(pytest.fail.Exception):
        ensure_release("100k", source, env={"CI": "1"}, load=fake_load(calls))


def test_the_download_goes_through_load_movielens_and_pooch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real load_movielens with pooch.retrieve replaced: a failing download is reported as a
    # skip naming the address, and the environment is restored afterwards.
    import pooch

    def offline(url: str, **kwargs: object) -> str:
        raise ConnectionError(f"offline: {url}")

    monkeypatch.setattr(pooch, "retrieve", offline)
    monkeypatch.setenv("CFCORE_DATA_DIR", "before")
    with pytest.raises(pytest.skip.Exception) as info:
        ensure_release("100k", DataSource(tmp_path / "cache", True, "test"), env={})
    assert "files.grouplens.org" in str(info.value) and "offline" in str(info.value)
    assert os.environ["CFCORE_DATA_DIR"] == "before"
