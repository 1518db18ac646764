"""Download, verify and cache a MovieLens release (a zip holding one release folder)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from ..errors import CfcoreError
from .bounded import UNKNOWN_FILE_BYTES, BoundedReader, bounded, file_budget, too_large

DATA_DIR_ENV = "CFCORE_DATA_DIR"


class DatasetError(CfcoreError, OSError):
    """Raised when a dataset cannot be found, downloaded, verified or read.

    An `OSError` because every cause is a file that is missing, unreadable or not what was expected.
    """


def cache_dir() -> Path:
    """The folder where releases are cached: `$CFCORE_DATA_DIR`, else the user's cache folder."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # imported here: only needed when no explicit path is given

    return Path(platformdirs.user_cache_dir("cfcore"))


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so memory stays flat."""
    return file_hash(path, "sha256")


def file_hash(path: Path, algorithm: str) -> str:
    """Hex digest of a file by `hashlib` algorithm `algorithm`, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_release(
    url: str,
    folder: str,
    checksums: Mapping[str, str],
    root: Path,
    *,
    zip_hash: str | None = None,
    sizes: Mapping[str, int] | None = None,
) -> Path:
    """Downloads `url` (a zip of `folder/`), verifies it and moves it to `root / folder`.

    What is pinned differs by release: the hash of the zip itself where a trustworthy one is known
    (`zip_hash`, checked before anything is extracted), and/or the SHA-256 of the release's key
    files (`checksums`, checked after extraction). Extraction goes to a temporary folder beside the
    target that is renamed into place only once verified, so an interrupted or bad download never
    leaves a half-written release where the loader would read it. The zip is deleted once the
    release is in place (the folder is what is read), and on any failure.

    Args:
        url: address of the zip.
        folder: name of the release folder inside the zip and in `root` (e.g. `"ml-100k"`).
        checksums: expected hex SHA-256 of files of the release, by file name.
        root: cache folder; created if missing.
        zip_hash: expected hash of the zip, `"sha256:<hex>"` or `"md5:<hex>"`; None for none.
        sizes: the sizes of the release's files, by file name: each member is extracted only
            within its budget (`bounded.file_budget`), and all of them within the sum of the
            budgets plus `bounded.UNKNOWN_FILE_BYTES`.

    Returns:
        `root / folder`, holding the verified release.

    Raises:
        DatasetError: the download failed, or the zip was corrupt, partial or did not match.
    """
    import pooch  # imported here: loading a local copy must not need the downloader

    root.mkdir(parents=True, exist_ok=True)
    target = root / folder
    zip_name = url.rsplit("/", 1)[-1]  # "ml-10m.zip" holds "ml-10M100K/"
    try:
        zip_path = Path(
            pooch.retrieve(url, known_hash=None, fname=zip_name, path=root, progressbar=False)
        )
    except Exception as exc:  # network, HTTP and disk errors all mean the same to the user
        raise DatasetError(
            f"could not download {url} into {root}: {exc}. Check the connection and retry, or "
            f"unzip a copy of {zip_name} into a folder and set {DATA_DIR_ENV} to that folder "
            f"(it must hold {folder}/)."
        ) from exc

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=root))
    try:
        if zip_hash is not None:
            algorithm, _, expected = zip_hash.partition(":")
            actual = file_hash(zip_path, algorithm)
            if actual != expected.lower():
                detail = f"{algorithm.upper()} of the zip is {actual}, expected {expected}"
                raise _corrupt(url, zip_path, detail)
        try:
            with zipfile.ZipFile(zip_path) as zf:
                _extract(zf, tmp, sizes or {}, url, zip_path)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise _corrupt(url, zip_path, f"not a readable zip: {exc}") from exc
        release = tmp / folder if (tmp / folder).is_dir() else tmp
        for name, expected in checksums.items():
            file = release / name
            if not file.is_file():
                raise _corrupt(url, zip_path, f"it has no {folder}/{name}")
            actual = sha256(file)
            if actual != expected:
                detail = f"checksum mismatch for {folder}/{name}: SHA-256 {actual}"
                raise _corrupt(url, zip_path, f"{detail}, expected {expected}")
        # If another process finished first its copy was verified the same way: keep it.
        if not target.exists():
            os.replace(release, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        zip_path.unlink(missing_ok=True)
    return target


def _extract(
    zf: zipfile.ZipFile, dest: Path, sizes: Mapping[str, int], url: str, zip_path: Path
) -> None:
    """Extracts every member of `zf` into `dest`, each within its byte budget, counted as it
    is written (a zip header can lie), so that a small crafted zip cannot fill the disk.

    Raises:
        DatasetError: a member named outside `dest` (absolute, `..`, a drive), or over its
            budget or the total's.
    """
    total = sum(file_budget(n)[0] for n in sizes.values()) + UNKNOWN_FILE_BYTES
    written = 0
    for info in zf.infolist():
        parts = PurePosixPath(info.filename).parts
        if (
            info.filename.startswith("/")
            or "\\" in info.filename
            or ".." in parts
            or (parts and ":" in parts[0])
        ):
            raise _corrupt(url, zip_path, f"it holds a member named {info.filename!r}")
        target = dest.joinpath(*parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        where = f"{zip_path.name}:{info.filename}"
        limit = file_budget(sizes.get(parts[-1]))
        if info.file_size > limit[0]:
            verb = f"declares {info.file_size:,} bytes, more than"
            raise _corrupt(url, zip_path, too_large(where, *limit, verb))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            room = (min(limit[0], total - written), limit[1])
            if room[0] < limit[0]:
                room = (room[0], "what is left of the budget of the whole release")
            stream = bounded(src, where, room, DatasetError, max_line=None)
            written += _copy(stream, out)


def _copy(src: BoundedReader, out: IO[bytes]) -> int:
    """Copies a binary stream into a file in 1 MiB chunks; returns the bytes copied."""
    n = 0
    for chunk in iter(lambda: src.read(1 << 20), b""):
        out.write(chunk)
        n += len(chunk)
    return n


def _corrupt(url: str, zip_path: Path, detail: str) -> DatasetError:
    return DatasetError(
        f"the download of {url} was corrupt or partial ({detail}). The zip {zip_path} and the "
        "files extracted from it were removed; run again to retry the download."
    )
