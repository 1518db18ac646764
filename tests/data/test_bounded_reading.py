"""Hostile and damaged release files: byte budgets, line caps, strict parsing, named lines.

Every archive here is built in `tmp_path` from the fake releases of `test_movielens_releases.py`
(small, in the real layouts), then altered: a member of NUL bytes that inflates a thousandfold, a
zip header that lies about a member's size, a line of megabytes, an extra field, a rating off the
release's scale. Each must end in a `DatasetError` naming the file (and the line where there is
one), quickly and without holding the file in memory.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cfcore.data import movielens
from cfcore.data.bounded import (
    FILE_LIMIT_ENV,
    MAX_FIELD_CHARS,
    MAX_LINE_BYTES,
    BoundedReader,
    file_budget,
)
from cfcore.data.movielens import DatasetError, load_movielens
from cfcore.data.user_ratings import UserRatingsError, read_user_ratings
from cfcore.errors import FileAccessError

from .test_movielens_releases import (  # noqa: F401  (isolated: the autouse fixture)
    LAYOUT,
    MOVIES,
    fake_counts,
    fake_ratings,
    fake_retrieve,
    isolated,
    write_release,
)

MiB = 1 << 20


def zip_with(folder: Path, dest: Path, nul_members: dict[str, int] | None = None) -> Path:
    """Zips a release folder; each of `nul_members` is replaced by that many MiB of NUL bytes."""
    nul_members = nul_members or {}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            name = f"{folder.name}/{file.name}"
            if file.name in nul_members:
                with zf.open(name, "w", force_zip64=True) as f:
                    for _ in range(nul_members[file.name]):
                        f.write(bytes(MiB))
            else:
                zf.write(file, name)
    return dest


def release(tmp_path: Path, name: str) -> Path:
    return write_release(tmp_path / "src", name, fake_ratings(name))


def no_internal_names(message: str) -> None:
    assert not re.search(r"\b_\d+\b", message), message


# ---------------------------------------------------------------------------- byte budgets


@pytest.mark.parametrize(
    ("name", "member", "mib"),
    [("1m", "movies.dat", 200), ("1m", "ratings.dat", 64), ("1m", "users.dat", 8)],
)
def test_member_over_its_budget_is_refused_before_reading(
    name: str, member: str, mib: int, tmp_path: Path
) -> None:
    path = zip_with(release(tmp_path, name), tmp_path / "x.zip", {member: mib})
    assert path.stat().st_size < mib * MiB // 500  # a tiny zip that inflates a thousandfold
    budget = file_budget(movielens._RELEASES[name].sizes[member])[0]
    with pytest.raises(DatasetError) as info:
        load_movielens(name, path, verify=False)
    message = str(info.value)
    assert f"{LAYOUT[name][0]}/{member} declares {mib * MiB:,} bytes" in message
    assert f"({budget:,} bytes)" in message and FILE_LIMIT_ENV in message


@pytest.mark.parametrize(("name", "member"), [("1m", "ratings.dat"), ("25m", "ratings.csv")])
def test_member_of_one_long_line_is_refused_while_reading(
    name: str, member: str, tmp_path: Path
) -> None:
    # Within the budget (20 MiB of NUL bytes), but one line: refused once the line passes the cap.
    path = zip_with(release(tmp_path, name), tmp_path / "x.zip", {member: 20})
    with pytest.raises(DatasetError, match=rf"{member}: line 1 is longer than {MAX_LINE_BYTES:,}"):
        load_movielens(name, path, verify=False)


_PEAK = """
import resource, sys
from cfcore.data.movielens import DatasetError, load_movielens
from cfcore.errors import FileAccessError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_movielens(sys.argv[1], sys.argv[2], verify=False)
except DatasetError as err:
    print(type(err).__name__, str(err)[:300])
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print("grown_kib", grown)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("name", "member", "mib"),
    [("1m", "movies.dat", 200), ("1m", "ratings.dat", 200), ("1m", "ratings.dat", 20)],
)
def test_nul_zip_fails_fast_with_little_memory(
    name: str, member: str, mib: int, tmp_path: Path
) -> None:
    # The cases of the hostile-input sweep: 200 MB of NUL bytes, 0.2 MB compressed, took 2 GiB.
    path = zip_with(release(tmp_path, name), tmp_path / "x.zip", {member: mib})
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PEAK), name, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("DatasetError") and member in out.stdout
    grown_mib = int(out.stdout.split("grown_kib")[1]) / 1024
    assert grown_mib < 64, out.stdout


def _lie_about_size(path: Path, member: str, declared: int) -> None:
    """Rewrites the uncompressed size of `member` in the zip's local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(member).header_offset
        central = zf.start_dir
    struct.pack_into("<I", data, offset + 22, declared)  # local file header
    while True:  # the central entry whose name is `member`
        name_len = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_len] == member.encode():
            break
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, declared)
    path.write_bytes(bytes(data))


def test_zip_header_that_lies_low_is_not_trusted(tmp_path: Path) -> None:
    folder = release(tmp_path, "1m")
    with open(folder / "movies.dat", "ab") as f:
        f.write(bytes(64 * MiB))  # 64 MiB more than the header will say
    path = zip_with(folder, tmp_path / "x.zip")
    _lie_about_size(path, "ml-1m/movies.dat", 1000)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("ml-1m/movies.dat").file_size == 1000
    with pytest.raises(DatasetError, match=r"x\.zip.*corrupt"):
        load_movielens("1m", path, verify=False)


class _Endless:
    """A stream of `a`-lines that never ends, whatever its header would have said."""

    def read(self, size: int = -1, /) -> bytes:
        return (b"aaaaaaa\n" * (max(size, 8) // 8 + 1))[: max(size, 8)]


def test_bytes_are_counted_as_they_stream() -> None:
    reader = BoundedReader(_Endless(), "ratings.dat", (10_000, "its budget"), DatasetError)
    with pytest.raises(DatasetError, match=r"ratings\.dat holds more than .*10,000 bytes"):
        io.BufferedReader(reader, buffer_size=4096).read()
    # A stream of exactly the budget passes.
    exact = BoundedReader(io.BytesIO(b"x\n" * 5000), "f", (10_000, "its budget"), DatasetError)
    assert len(io.BufferedReader(exact).read()) == 10_000


def test_line_cap_names_the_line_across_chunks() -> None:
    lines = [b"a" * 5, b"b" * 9, b"c" * 30, b"d" * 3]
    raw = io.BytesIO(b"\n".join(lines) + b"\n")
    reader = BoundedReader(raw, "u.data", (1 << 20, "its budget"), DatasetError, max_line=10)
    buf = bytearray(7)  # chunks that split lines
    with pytest.raises(DatasetError, match=r"u\.data: line 3 is longer than 10 bytes"):
        while reader.readinto(buf):
            pass


def test_budget_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A latest-small copy whose movies.csv is over its budget (1.5x the real one + 1 MiB).
    folder = write_release(tmp_path, "latest", fake_ratings("latest"))
    folder = folder.rename(folder.with_name("ml-latest-small"))
    movies = (folder / "movies.csv").read_text()
    budget = file_budget(movielens._RELEASES["latest-small"].sizes["movies.csv"])[0]
    filler = "".join(f"{1_000_000 + j},Filler {j} (2000),Drama\n" for j in range(budget // 30))
    (folder / "movies.csv").write_text(movies + filler)
    with pytest.raises(
        DatasetError, match=rf"movies\.csv is [\d,]+ bytes, more than.*{FILE_LIMIT_ENV}"
    ):
        load_movielens("latest-small", folder)
    monkeypatch.setenv(FILE_LIMIT_ENV, "64M")
    assert load_movielens("latest-small", folder).ratings.num_items == len(MOVIES) + budget // 30
    monkeypatch.setenv(FILE_LIMIT_ENV, "1K")
    with pytest.raises(
        DatasetError, match=rf"more than 1\.0 KiB \(1,024 bytes\).*\({FILE_LIMIT_ENV}=1K\)"
    ) as info:
        load_movielens("latest-small", folder)
    assert "set " not in str(info.value)  # already set: no advice to set it


def test_download_extracts_within_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Path(os.environ["CFCORE_DATA_DIR"])  # the `isolated` fixture's empty cache
    ratings = fake_ratings("latest")
    fake_counts(monkeypatch, "latest", ratings)
    payload = zip_with(
        write_release(tmp_path / "src", "latest", ratings), tmp_path / "x.zip", {"links.csv": 64}
    )
    monkeypatch.setitem(movielens._SIZES, "latest", {"links.csv": 1000})
    fake_retrieve(monkeypatch, payload)
    with pytest.raises(DatasetError, match=r"corrupt or partial.*links\.csv declares"):
        load_movielens("latest")
    assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == []  # nothing left


def test_download_refuses_a_member_outside_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Path(os.environ["CFCORE_DATA_DIR"])  # the `isolated` fixture's empty cache
    ratings = fake_ratings("latest")
    payload = zip_with(write_release(tmp_path / "src", "latest", ratings), tmp_path / "x.zip")
    with zipfile.ZipFile(payload, "a") as zf:
        zf.writestr("../escape.txt", "x")
    fake_retrieve(monkeypatch, payload)
    with pytest.raises(DatasetError, match=r"'\.\./escape\.txt'"):
        load_movielens("latest")
    assert not (cache.parent / "escape.txt").exists()


# ---------------------------------------------------------------------------- strict parsing


def _insert(folder: Path, member: str, line: str, at: int) -> int:
    """Inserts `line` before line `at` (1-based) of a release file; returns its line number."""
    path = folder / member
    encoding = "latin-1" if folder.name == "ml-1m" else "utf-8"
    lines = path.read_text(encoding=encoding).splitlines()
    lines.insert(at - 1, line)
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return at


@pytest.mark.parametrize(
    ("name", "member", "line", "at", "expected"),
    [
        ("1m", "ratings.dat", "3::1::4::978300762::9", 7, r"has 5 fields, expected 4 \(user_id"),
        ("1m", "ratings.dat", "3::1::4::978300762::9", 1, r"has 5 fields, expected 4 \(user_id"),
        ("1m", "ratings.dat", "3::1::-5::978300762", 5, "rating is '-5', outside"),
        (
            "1m",
            "ratings.dat",
            "3::1::4.5::978300762",
            5,
            r"rating is '4\.5', outside .*whole stars",
        ),
        ("1m", "ratings.dat", "3::1::0::978300762", 5, "rating is '0', outside"),
        ("1m", "ratings.dat", "3::1::4:x:978300762", 4, "has 3 fields, expected 4"),
        ("1m", "ratings.dat", "3::1::4::97830:0762", 4, "timestamp is '97830:0762', which holds"),
        ("1m", "ratings.dat", "3::1::4", 9, "has 3 fields, expected 4"),
        ("1m", "users.dat", "99::F::x::10::48067", 3, "age is 'x', not an integer"),
        ("1m", "users.dat", "99::F::1::10::48:67", 3, "zip_code is '48:67', which holds a ':'"),
        ("1m", "users.dat", "99::F::1::10", 3, r"has 4 fields, expected 5 \(user_id, sex"),
        ("10m", "ratings.dat", "3::1::4.25::978300762", 6, r"rating is '4\.25', outside .*half"),
        ("10m", "ratings.dat", "3::1::5.5::978300762", 6, r"rating is '5\.5', outside"),
        ("10m", "ratings.dat", "3::1::0::978300762", 6, r"rating is '0', outside"),
        ("10m", "ratings.dat", "3::1::nan::978300762", 6, r"rating is missing"),
        ("25m", "ratings.csv", "3,1,4.0,978300762,9", 8, r"has 5 fields, expected 4 \(userId"),
        ("25m", "ratings.csv", "3,1,4.0,978300762,9", 2, r"has 5 fields, expected 4 \(userId"),
        ("25m", "ratings.csv", "3,1,6.0,978300762", 8, r"rating is '6\.0', outside"),
        ("25m", "ratings.csv", '3,"1,2",4.0,978300762', 8, "has 5 fields"),
        ("25m", "ratings.csv", "3,1,4.0,99999999999999999999", 8, "outside the 64-bit"),
        ("25m", "ratings.csv", "3,1,1e400,978300762", 8, "rating is '1e400', not a finite"),
        ("25m", "ratings.csv", "3,1,1e40,978300762", 8, r"rating is '1e40', outside .*scale"),
        ("25m", "ratings.csv", "3,1,4.0,1e400", 8, "timestamp is '1e400', not an integer"),
        ("25m", "movies.csv", "x,Title (1999),Drama", 3, "movieId is 'x', not an integer"),
        ("25m", "movies.csv", "77,Title (1999),Drama,Extra", 3, "has 4 fields, expected 3"),
    ],
)
@pytest.mark.filterwarnings("error::RuntimeWarning")  # no numpy cast warning on the way
def test_bad_line_is_named_with_user_facing_columns(
    name: str, member: str, line: str, at: int, expected: str, tmp_path: Path
) -> None:
    folder = release(tmp_path, name)
    number = _insert(folder, member, line, at)
    with pytest.raises(DatasetError) as info:
        load_movielens(name, folder, verify=False)  # verify=False skips only the counts
    message = str(info.value)
    assert f"{member}, line {number}" in message and re.search(expected, message), message
    no_internal_names(message)


def test_unreadable_release_file_is_a_file_access_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = release(tmp_path, "25m")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(movielens, "open", refuse, raising=False)  # as the kernel would
    with pytest.raises(FileAccessError, match=r"cannot read .*ratings\.csv: permission denied"):
        load_movielens("25m", folder, verify=False)


def test_header_must_be_the_releases(tmp_path: Path) -> None:
    folder = release(tmp_path, "25m")
    text = (folder / "ratings.csv").read_text()
    (folder / "ratings.csv").write_text(text.replace("timestamp", "timestamp,extra", 1))
    with pytest.raises(
        DatasetError, match=r"ratings\.csv cannot be parsed: its header \(line 1\) is"
    ):
        load_movielens("25m", folder, verify=False)


def test_bad_line_is_shortened(tmp_path: Path) -> None:
    folder = release(tmp_path, "10m")
    line = "3::1::" + "x" * 50_000 + "::978300762"  # under the line cap, over the field cap
    _insert(folder, "ratings.dat", line, 4)
    with pytest.raises(DatasetError) as info:
        load_movielens("10m", folder, verify=False)
    message = str(info.value)
    assert len(message) < 800, len(message)
    assert f"rating has 50,000 characters, more than the {MAX_FIELD_CHARS:,}" in message
    assert f"... ({len(line):,} characters)" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x00\x00\n" * 1000, r"line 1 has 1 fields, expected 4"),
        (b"1::1::4::978300760\n2::1::\xff::978300761\n", r"line 2 is not utf-8 text \(byte 0xff"),
        (b"1::1::4::978300760\r2::1::x::978300761\r", r"line 2: rating is 'x', not a number"),
        (b"", r"ratings\.dat holds no data"),
        (b"\n\n", r"ratings\.dat holds no data"),
    ],
    ids=["nul-lines", "not-utf8", "lone-cr", "empty", "blank-lines"],
)
def test_every_parse_failure_is_a_dataset_error(
    content: bytes, expected: str, tmp_path: Path
) -> None:
    folder = release(tmp_path, "10m")
    (folder / "ratings.dat").write_bytes(content)
    with pytest.raises(DatasetError, match=expected) as info:
        load_movielens("10m", folder, verify=False)
    no_internal_names(str(info.value))


def test_files_that_disagree(tmp_path: Path) -> None:
    # Each file parses, but a rating names a movie the movie file lacks.
    folder = release(tmp_path, "10m")
    _insert(folder, "ratings.dat", "3::424242::4::978300762", 2)
    with pytest.raises(DatasetError, match=r"files of MovieLens 10m at .* disagree: .*424242"):
        load_movielens("10m", folder, verify=False)
    _insert(folder, "movies.dat", "1::Toy Story again (1995)::Comedy", 2)
    with pytest.raises(DatasetError, match=r"movies\.dat: movie id 1 is listed twice"):
        load_movielens("10m", folder, verify=False)


def test_movies_dat_line_is_shortened(tmp_path: Path) -> None:
    folder = release(tmp_path, "1m")
    _insert(folder, "movies.dat", "7::" + "T" * 10_000 + "::Drama", 2)
    with pytest.raises(DatasetError, match=r"movies\.dat .*line 2.*\(10,\d{3} characters\)"):
        load_movielens("1m", folder, verify=False)


def test_strict_parse_keeps_good_files_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The strict reading changes nothing for sound files: the values written come back.
    ratings = fake_ratings("1m")
    fake_counts(monkeypatch, "1m", ratings)
    ml = load_movielens("1m", write_release(tmp_path, "1m", ratings))
    np.testing.assert_array_equal(ml.ratings.values, ratings["rating"].to_numpy(np.float32))
    assert set(np.unique(ml.ratings.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


# ---------------------------------------------------------------------------- a user's CSV


CATALOG_IDS = np.array([1, 2, 3])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"item_id,rating\n1,4\n" + b"2" * 100_000 + b",4\n", r"line 3 is longer than"),
        (b"item_id,rating\n1,4\n2,4,5\n", r"line 3 has 3 fields, expected 2"),
        (b"item_id,rating\n1,4,5\n", r"line 2 has 3 fields, expected 2"),
        (b"item_id,rating\n1,\xff\n", r"line 2 is not utf-8 text"),
        (b'item_id,rating\n1,"' + b"4\n" * 5000 + b'"\n', r"line 2: rating has 10,000 characters"),
    ],
    ids=["long-line", "extra-field", "extra-field-first-row", "not-utf8", "long-quoted-field"],
)
def test_user_csv_bad_line_is_named(content: bytes, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_bytes(content)
    for source in (path, io.BytesIO(content)):
        with pytest.raises(UserRatingsError, match=expected) as info:
            read_user_ratings(source, item_ids=CATALOG_IDS)
        assert len(str(info.value)) < 800


def test_user_csv_over_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("item_id,rating\n1,4\n" + "\n" * 2000)  # blank lines: skipped
    assert len(read_user_ratings(path, item_ids=CATALOG_IDS)) == 1
    monkeypatch.setenv(FILE_LIMIT_ENV, "1K")
    with pytest.raises(UserRatingsError, match=r"mine\.csv is 2,019 bytes, more than 1\.0 KiB"):
        read_user_ratings(path, item_ids=CATALOG_IDS)
    with pytest.raises(UserRatingsError, match=r"the ratings CSV holds more than 1\.0 KiB"):
        read_user_ratings(io.StringIO(path.read_text()), item_ids=CATALOG_IDS)


def test_a_csv_the_command_line_reads_has_a_budget(tmp_path: Path, monkeypatch) -> None:
    # `cfcore compare --ratings` and `cfcore plot --history` read CSVs of any origin: within
    # the budget of a file of unknown size, and a line cap.
    from cfcore.data.bounded import read_csv
    from cfcore.errors import ArgumentValueError

    path = tmp_path / "history.csv"
    path.write_text("step,train_mse\n1,1.0\n2,0.5\n")
    assert read_csv(path, ArgumentValueError)["train_mse"].tolist() == [1.0, 0.5]
    monkeypatch.setenv(FILE_LIMIT_ENV, "10")
    with pytest.raises(ArgumentValueError, match=r"history.csv is 27 bytes, more than 10 B"):
        read_csv(path, ArgumentValueError)
    monkeypatch.delenv(FILE_LIMIT_ENV)
    path.write_text("step,train_mse\n" + "1" * (MAX_LINE_BYTES + 10) + ",0.5\n")
    with pytest.raises(ArgumentValueError, match="history.csv"):
        read_csv(path, ArgumentValueError)
