"""`cfcore experiment`: the config's checks, the intervals, the test split's one reading, peers
and the files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cfcore
from cfcore.cli import app
from cfcore.tuning import ExperimentResult, load_experiment, run_experiment
from cfcore.tuning.stats import paired_interval, t_interval
from cfcore.viz import read_page

# Student t quantiles t(0.975, df) from a printed table (df 1, 2, 4), not from the code's scipy.
T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105}


def hand_interval(values):
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return mean, T975[n - 1] * sd / math.sqrt(n)


@pytest.mark.parametrize("values", [[0.91, 0.93], [1.0, 2.0, 4.0], [0.3, 0.1, 0.4, 0.15, 0.9]])
def test_t_interval_is_the_hand_formula(values):
    got = t_interval(values)
    mean, half = hand_interval(values)
    assert got.n == len(values)
    assert got.mean == pytest.approx(mean, rel=1e-12)
    assert got.half == pytest.approx(half, rel=1e-8)
    assert (got.low, got.high) == pytest.approx((mean - half, mean + half), rel=1e-8)


def test_one_seed_has_no_interval():
    got = t_interval([0.9])
    assert got.half is None and got.low is None
    assert got.text() == "0.9000 (n=1, no interval)"


def pairs(r: cfcore.Ratings) -> np.ndarray:
    return r.users.astype(np.int64) * r.num_items + r.items


# ------------------------------------------------------------------------------ peers and spies


class MeanPeer:
    """A peer of ratings: the training mean plus `shift`; records what it was shown."""

    kind = "ratings"
    fitted: list[np.ndarray] = []
    predicted: list[np.ndarray] = []

    def __init__(self, shift: float = 0.0) -> None:
        if not math.isfinite(shift):
            raise ValueError(f"shift must be finite, got {shift}")
        self.shift = shift

    def fit(self, train, *, seed):
        MeanPeer.fitted.append(pairs(train))
        self.mean = float(np.mean(train.values)) + self.shift

    def predict(self, users, items):
        MeanPeer.predicted.append(users.astype(np.int64) * 10**6 + items)
        return np.full(len(users), self.mean)


class SpyWALS(cfcore.WALS):
    """WALS recording the ratings it is evaluated on."""

    evaluated: list[np.ndarray] = []

    def evaluate(self, ratings):
        SpyWALS.evaluated.append(pairs(ratings))
        return super().evaluate(ratings)


def explicit_config(data_dir, **protocol):
    return {
        "name": "test",
        "protocol": {
            "kind": "explicit",
            "datasets": ["100k"],
            "folds": ["u1", "u2"],
            "backend": "jax",
            "data_dir": str(data_dir),
            **protocol,
        },  # fmt: skip
        "contender": [
            {
                "name": "wals",
                "model": SpyWALS,
                "steps": 2,
                "space": {"embedding_dim": 4, "regularization_coeff": [0.1, 10.0]},
            },
            {"name": "mean", "adapter": MeanPeer, "space": {"shift": [0.0, 0.5]}},
        ],  # fmt: skip
    }


@pytest.fixture(scope="module")
def explicit_run(ml100k_files):
    SpyWALS.evaluated.clear()
    MeanPeer.fitted.clear()
    MeanPeer.predicted.clear()
    return run_experiment(explicit_config(ml100k_files.parent))


def test_the_test_split_is_read_once_per_contender_and_fold(explicit_run, ml100k):
    # Per fold, in order: 2 points' validations, then the test; the peer's likewise.
    assert len(SpyWALS.evaluated) == 6 and len(MeanPeer.predicted) == 6
    assert len(MeanPeer.fitted) == 6  # 2 points and the refit per fold
    for i, fold in enumerate(("u1", "u2")):
        train, test = ml100k.fold(fold)
        test_pairs, train_pairs = pairs(test), pairs(train)
        model_reads = SpyWALS.evaluated[3 * i : 3 * i + 3]
        peer_reads = MeanPeer.predicted[3 * i : 3 * i + 3]
        peer_test = test.users.astype(np.int64) * 10**6 + test.items
        # The last reading is the whole test part; the validations lie inside the train part.
        assert np.array_equal(np.sort(model_reads[-1]), np.sort(test_pairs))
        assert np.array_equal(np.sort(peer_reads[-1]), np.sort(peer_test))
        for got in model_reads[:-1]:
            assert np.isin(got, train_pairs).all() and not np.isin(test_pairs, got).any()
        for got in peer_reads[:-1]:
            assert not np.isin(peer_test, got).any()
        for got in MeanPeer.fitted[3 * i : 3 * i + 3]:
            assert np.isin(got, train_pairs).all() and not np.isin(test_pairs, got).any()


def test_a_peer_is_tuned_and_scored_like_a_model(explicit_run, ml100k):
    runs = explicit_run.runs
    assert list(runs.contender) == ["wals", "mean", "wals", "mean"]
    for fold in ("u1", "u2"):
        train, test = ml100k.fold(fold)
        row = runs[(runs.contender == "mean") & (runs.seed == fold)].iloc[0]
        # The mean predictor's best shift on any split is 0 (ratings average above 3); refitted
        # on the whole training part, its test RMSE is that of the training mean.
        assert json.loads(row.best) == {"shift": 0.0}
        want = np.sqrt(np.mean((test.values - train.values.mean()) ** 2))
        assert row.rmse == pytest.approx(want, rel=1e-6)  # the peer's float32 mean


def test_summary_and_paired_differences(explicit_run):
    runs = explicit_run.runs
    summary, paired = explicit_run.summary(), explicit_run.paired()
    for _, s in summary.iterrows():
        values = runs[runs.contender == s.contender][s.metric].tolist()
        mean, half = hand_interval(values)
        assert (s["mean"], s.half) == pytest.approx((mean, half), rel=1e-8)
    (row,) = paired[paired.metric == "rmse"].itertuples()
    by = runs.set_index(["contender", "seed"]).rmse
    diffs = [by["wals", f] - by["mean", f] for f in ("u1", "u2")]
    assert (row.a, row.b, row.seeds) == ("wals", "mean", "u1,u2")
    assert (row.mean, row.half) == pytest.approx(hand_interval(diffs), rel=1e-8)


def test_paired_differences_match_seeds_not_positions():
    exp = load_experiment({"protocol": {"kind": "explicit", "datasets": ["100k"], "seeds": [0, 1, 2]},
                           "contender": [{"name": "a", "adapter": MeanPeer},
                                         {"name": "b", "adapter": MeanPeer}]})  # fmt: skip
    runs = pd.DataFrame({
        "dataset": "100k", "contender": ["a", "a", "a", "b", "b"],
        "seed": ["0", "1", "2", "2", "0"], "rmse": [1.0, 2.0, 4.0, 3.5, 0.25], "mae": 0.0,
    })  # fmt: skip
    got = ExperimentResult(exp, runs).paired()
    row = got[got.metric == "rmse"].iloc[0]
    # Seeds 0 and 2 only (b never ran seed 1), each a matched with its own seed's b.
    assert row.seeds == "0,2" and row.n == 2
    assert (row["mean"], row.half) == pytest.approx(hand_interval([1.0 - 0.25, 4.0 - 3.5]))
    assert paired_interval([1.0, 4.0], [0.25, 3.5]).mean == pytest.approx(row["mean"])


def test_files_are_written_atomically(explicit_run, tmp_path, monkeypatch):
    import cfcore.tuning.experiment as experiment
    import cfcore.viz.pages as pages

    written = []

    def spy(real):
        def write(path, fn):
            written.append(Path(path).name)
            return real(path, fn)

        return write

    monkeypatch.setattr(experiment, "atomic_write", spy(experiment.atomic_write))
    monkeypatch.setattr(pages, "atomic_write", spy(pages.atomic_write))
    explicit_run.save(tmp_path)
    assert sorted(written) == ["report.html", "results.json", "results.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)  # no temporaries left
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["format"] == "cfcore-experiment/1" and len(doc["runs"]) == 4
    assert doc["paired"][0]["a"] == "wals" and doc["seeds"] == ["u1", "u2"]
    text = (tmp_path / "results.md").read_text()
    assert "| wals − mean |" in text and " ± " in text
    headings = [h for h, _ in read_page(tmp_path / "report.html")]
    assert [h.split(":")[0] for h in headings] == ["rmse", "mae"]


def test_implicit_protocol_with_a_peer(latest_files):
    class Popular:
        kind = "positives"

        def fit(self, train, *, seed):
            self.counts = np.bincount(train.items, minlength=train.num_items).astype(float)

        def scores(self, fold_in):
            return np.broadcast_to(self.counts, (fold_in.num_rows, len(self.counts)))

    config = {
        "protocol": {"kind": "implicit", "datasets": [{"name": "latest-small", "test_share": 0.1}],
                     "seeds": [0], "data_dir": str(latest_files.parent),
                     "metrics": ["recall@20", "ndcg@100"], "backend": "jax"},
        "contender": [{"name": "pop", "adapter": Popular},
                      {"name": "ials", "model": "ials", "steps": 2, "metric": "ndcg@100",
                       "space": {"embedding_dim": 4, "regularization_coeff": [0.01, 0.1]}}],
    }  # fmt: skip
    result = run_experiment(config)
    ials = result.runs.iloc[1]
    # Tuned on validation users carved from the training users' positives (all 1.0: the
    # threshold is not applied twice), so its validation metric is a real one.
    assert 0 < ials.validation < 1 and 0 < ials["ndcg@100"] < 1
    from cfcore.eval.implicit import evaluate_strong_generalization, strong_generalization_split
    from cfcore.eval.popularity import PopularityScorer

    ds = cfcore.datasets.load_movielens("latest-small", data_dir=latest_files)
    split = strong_generalization_split(ds.ratings, heldout_share=0.1, seed=0)
    want = evaluate_strong_generalization(
        PopularityScorer.from_ratings(split.train), split, (20, 100)
    )
    row = result.runs.iloc[0]
    assert row["recall@20"] == pytest.approx(want["recall@20"])
    assert row["ndcg@100"] == pytest.approx(want["ndcg@100"])
    assert "n=1, no interval" in result.markdown()


# ------------------------------------------------------------------------------ config errors

GOOD = """
[protocol]
kind = "explicit"
datasets = ["100k"]
folds = ["u1", "u2"]
[[contender]]
model = "biased"
space = { regularization_coeff = [0.1, 1.0] }
"""


def test_fit_options_reach_every_fit_of_a_contender():
    config = {"protocol": {"kind": "explicit", "datasets": ["100k"], "folds": ["u1"]},
              "contender": [{"model": "biased", "optimizer": "adam", "learning_rate": 0.01,
                             "fit_options": {"batch_size": 1000}}]}  # fmt: skip
    plan = cfcore.tuning.load_experiment(config).contenders[0].plan
    assert dict(plan.settings.fit_options) == {"batch_size": 1000}


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("[protocol]", "colour = 1\n[protocol]", r"unknown key the config\.colour"),
        ('kind = "explicit"', 'kind = "explicit"\nfolds_ = 1', r"unknown key protocol\.folds_"),
        ('kind = "explicit"', 'kind = "both"', r"protocol\.kind"),
        ('"u2"]', '"u9"]', r"unknown fold 'u9'"),
        ('"100k"]', '"100k", "1m"]', r"protocol\.folds are ml-100k's"),
        ('"100k"]', '"nosuch-release"]', r"protocol\.datasets\[0\]: 'nosuch-release' is neither"),
        ('model = "biased"', 'model = "nosuch"', r"contender\[0\].*unknown model 'nosuch'"),
        ('model = "biased"', 'model = "ials"', r"contender\[0\].*model of positives"),
        ("regularization_coeff", "regularisation", r"contender\[0\].*no hyper-parameter"),
        ("[0.1, 1.0]", "[-1.0]", r"contender\[0\].*regularization_coeff"),
        ('model = "biased"', 'model = "biased"\nsteps = 0', r"contender\[0\].*steps"),
        ('model = "biased"', 'model = "biased"\npatience = 2', r"contender\[0\]\.patience"),
        ('model = "biased"', 'adapter = "nosuch_module_x:Peer"', r"contender\[0\]\.adapter"),
        ('model = "biased"', 'adapter = "tests.tune.test_experiment:NoSuch"', r"no class 'NoSuch'"),
        ('model = "biased"', 'model = "biased"\nadapter = "tests.tune.test_experiment:MeanPeer"',
         r"contender\[0\] needs either model .* or adapter"),
        ('model = "biased"\nspace = { regularization_coeff = [0.1, 1.0] }',
         'adapter = "tests.tune.test_experiment:MeanPeer"\nlearning_rate = 0.1',
         r"contender\[0\]\.learning_rate: an adapter's fit takes no learning_rate"),
        ('model = "biased"', 'model = "biased"\nfit_options = { batch = 10 }',
         r"contender\[0\]: fit_options: BiasedMF\.fit has no argument 'batch'"),
        ('model = "biased"', 'model = "biased"\nfit_options = 10',
         r"contender\[0\]\.fit_options has a bad type"),
        ('model = "biased"\nspace = { regularization_coeff = [0.1, 1.0] }',
         'adapter = "tests.tune.test_experiment:MeanPeer"\nfit_options = { batch_size = 8 }',
         r"contender\[0\]\.fit_options: an adapter's fit takes no fit_options"),
        ('model = "biased"\nspace = { regularization_coeff = [0.1, 1.0] }',
         'adapter = "tests.tune.test_experiment:MeanPeer"\nspace = { shift = [nan] }',
         r"contender\[0\]: MeanPeer refuses"),
    ],
)  # fmt: skip
def test_config_errors_name_the_file_and_key(tmp_path, monkeypatch, old, new, match):
    import cfcore.tuning.experiment as experiment

    def no_data(*args, **kwargs):
        raise AssertionError("data read before the config was checked")

    monkeypatch.setattr(experiment, "_load_dataset", no_data)
    assert old in GOOD
    path = tmp_path / "exp.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(cfcore.CfcoreError, match=match) as err:
        run_experiment(path)
    assert str(err.value).startswith(str(path))


def test_the_command_line_refuses_a_bad_config_before_reading_data(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(GOOD.replace("[protocol]", "[protocol]\ncolor = 2"))
    out = tmp_path / "out"
    got = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out)])
    assert got.exit_code != 0
    assert "protocol.color" in got.output and "exp.toml" in got.output
    assert not out.exists()


PEER_FILE = """
import numpy as np


class Median:
    kind = "ratings"

    def fit(self, train, *, seed):
        self.value = float(np.median(train.values))

    def predict(self, users, items):
        return np.full(len(users), self.value)
"""


def test_the_command_line_writes_the_three_files(tmp_path, ml100k_files):
    (tmp_path / "peer.py").write_text(PEER_FILE)
    config = f"""
[protocol]
kind = "explicit"
datasets = ["100k"]
folds = ["u1", "u2"]
metrics = ["mae"]
data_dir = "{ml100k_files.parent}"
[[contender]]
adapter = "peer.py:Median"
[[contender]]
name = "mean"
adapter = "{Path(__file__).name}:MeanPeer"
"""
    (tmp_path / "exp.toml").write_text(config)
    # The adapter files are found beside the config (this module: copied there).
    (tmp_path / Path(__file__).name).write_text(Path(__file__).read_text())
    out = tmp_path / "out"
    got = CliRunner().invoke(app, ["experiment", str(tmp_path / "exp.toml"), "--out", str(out)])
    assert got.exit_code == 0, got.output
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json", "results.md"]
    doc = json.loads((out / "results.json").read_text())
    assert doc["contenders"] == ["Median", "mean"]
    (diff,) = doc["paired"]
    runs = {(r["contender"], r["seed"]): r["mae"] for r in doc["runs"]}
    want = [runs["Median", f] - runs["mean", f] for f in ("u1", "u2")]
    assert (diff["mean"], diff["half"]) == pytest.approx(hand_interval(want), rel=1e-8)
    assert "Median − mean" in got.output
