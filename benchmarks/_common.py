"""Helpers shared by the benchmark scripts: machine/version stamp, result writing, cfcore training."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from cfcore.io.atomic import atomic_write  # noqa: E402

# The compilation cache is on by default (the user's cache folder): a benchmark times cold
# compilation unless it asks for the cache itself (biased_peers.py --compilation-cache) or the
# caller set $CFCORE_COMPILATION_CACHE.
os.environ.setdefault("CFCORE_COMPILATION_CACHE", "off")

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = os.environ.get("CFCORE_DATA_DIR") or str(
    Path(__file__).resolve().parents[2] / "shared" / "data"
)


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stamp() -> str:
    """One markdown paragraph: date, machine and versions, to sit beside every table."""
    pkgs = ", ".join(
        f"{p} {_version(p)}" for p in ("numpy", "jax", "jaxlib", "optax", "tensorflow", "torch")
    )
    return (
        f"Measured {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} on {cpu_name()} "
        f"({os.cpu_count()} cores visible), Python {platform.python_version()}, {pkgs}."
    )


def write_result(name: str, text: str, out_dir: str | Path | None = None) -> Path:
    path = Path(out_dir or RESULTS) / name
    atomic_write(path, lambda p: p.write_text(text))
    return path


def missing_gpu(device: str) -> str | None:
    """None when `device` is "cpu" or JAX sees a GPU, else the reason the GPU rows cannot run."""
    if device != "gpu":
        return None
    import jax

    if jax.devices()[0].platform != "gpu":
        return f"no GPU visible to JAX (devices: {jax.devices()})"
    return None


class CfcoreTraining:
    """cfcore's own training of an `MFSpec` from `params` on `data`, driven as `fit` drives it.

    The pieces are core's (`cfcore.train`): the spec's loss (`cfcore.maths.objectives.mf_loss`), the
    optimizer's update rule (`cfcore.optim.make_rule`), `make_step` (one compiled, unguarded step
    called from Python) and `make_chunk` (`fit`'s compiled loop of guarded steps: full batch, or
    one minibatch per step taken on the device from `[k, B]` positions into `data`). The state
    (parameters, optimizer state and the previous ones the guard keeps) lives here between calls.

    Args:
        be: a backend from `cfcore.get_backend`.
        spec: a `cfcore.MFSpec`.
        optimizer: a `cfcore.optimizers` spec.
        params: host `{"user", "item"}` initial values.
        data: the training ratings (`Ratings`, `Batch` or dict), put on the device once.
        pair_layout: also build the backend's pair layout of `data` (a `Ratings`) for full-batch
            gather steps, as `fit` does (`BoundBackend.device_batch`); off by default so the
            scripts measured before it existed time what they timed then.
    """

    def __init__(self, be, spec, optimizer, params, data, pair_layout: bool = False) -> None:
        from cfcore.maths import objectives as losses
        from cfcore.optim import make_rule

        self.be = be
        self.rule = make_rule(be, optimizer)
        self.loss = losses.mf_loss(be, spec)
        self.data = be.device_batch(data, pair_layout=pair_layout and spec.mse == "gather")
        self.params = be.params_from_numpy(params)
        self.opt_state = self.rule.init(self.params)
        self.prev_params, self.prev_opt_state = self.params, self.opt_state
        self._step = None
        self._chunks: dict[bool, object] = {}

    def steps(self, k: int):
        """`k` calls of the compiled single step (`make_step`); the last step's loss parts."""
        from cfcore.train import make_step

        if self._step is None:
            self._step = make_step(self.be, self.loss, self.rule)
        params, opt_state, terms = self.params, self.opt_state, None
        for _ in range(k):
            params, opt_state, terms = self._step(params, opt_state, self.data)
        self.params, self.opt_state = params, opt_state
        return terms

    def chunk(self, num_steps: int, batch_index=None) -> int:
        """One compiled chunk of `num_steps` guarded steps, as `fit` runs it.

        Full batch when `batch_index` is None, else one minibatch per row of the host `[k, B]`
        positions (sent to the device with the chunk, as `fit` does). The chunk's result is
        read on the host (its divergence flag), as `fit` does after every chunk.

        Returns:
            The chunk's `bad_step` (-1 when every step was applied).
        """
        from cfcore.train import make_chunk

        minibatch = batch_index is not None
        run = self._chunks.get(minibatch)
        if run is None:
            be = self.be
            keys = ("users", "items", "values")  # a pair layout is never sliced
            take = (
                (lambda data, idx: {k: be.xp.take(data[k], idx) for k in keys})
                if minibatch
                else (lambda data, x: data)
            )
            run = self._chunks[minibatch] = make_chunk(be, self.loss, self.rule, take)
        out = run(
            self.params,
            self.opt_state,
            self.prev_params,
            self.prev_opt_state,
            self.data,
            xs=self.be.asarray(batch_index) if minibatch else None,
            num_steps=None if minibatch else num_steps,
        )
        self.params, self.opt_state = out.params, out.opt_state
        self.prev_params, self.prev_opt_state = out.prev_params, out.prev_opt_state
        return out.bad_step

    def sync(self) -> None:
        """Waits until the current parameters are computed (before a clock stops)."""
        self.be.sync(self.params)
