"""The persistent compilation cache (`cfcore.enable_compilation_cache`, `$CFCORE_COMPILATION_CACHE`).

Each run is a process of its own, since a process keeps what it compiled in memory anyway: the
first fills the folder, the second must add nothing to it (every program read back from it,
none compiled again) and give the same numbers.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import cfcore
from cfcore.backend import compilation_cache

from .conftest import require_backend
from .tiny_data import cli_env

# One WALS sweep and a few Adam steps on a tiny problem: a handful of distinct programs.
SCRIPT = """
import json, sys
{before}
import cfcore
{enable}
events = {{}}
if sys.argv[1] == "jax":  # JAX counts the programs it read from the cache and compiled
    import jax.monitoring
    def count(name, **_):
        events[name] = events.get(name, 0) + 1
    jax.monitoring.register_event_listener(count)
r = cfcore.synthetic_ratings(30, 20, 200, seed=0)
w = cfcore.WALS(embedding_dim=4)
w.fit(r, steps=1, backend=sys.argv[1], progress=False)
m = cfcore.BiasedMF(embedding_dim=4)
m.fit(r, steps=3, optimizer=cfcore.optimizers.Adam(0.01), batch_size=50, backend=sys.argv[1],
      progress=False)
print(json.dumps({{"wals": w.embeddings["item"].tolist(), "biased": m.embeddings["user"].tolist(),
                  "events": events}}))
"""


def _run(backend: str, *, before: str = "", enable: str = "", **env: str) -> dict:
    code = SCRIPT.format(before=before, enable=enable)
    out = subprocess.run(
        [sys.executable, "-c", code, backend],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def _entries(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_a_second_process_reads_every_program_back(backend, tmp_path):
    require_backend(backend)
    folder = tmp_path / "cache"
    enable = f"cfcore.enable_compilation_cache({str(folder)!r})"
    first = _run(backend, enable=enable)
    (sub,) = folder.glob(f"{backend}-*")  # one subfolder: this framework version and CPU
    filled = _entries(sub)
    assert len(filled) >= 2, filled  # the sweep and the training chunk at least
    # TensorFlow says what it loads only in its verbose log (the persistor's VLOG).
    verbose = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_executable_persistor=1"}
    second = _run(backend, enable=enable, **(verbose if backend == "tf" else {}))
    assert _entries(sub) == filled  # nothing compiled again, nothing rewritten
    if backend == "jax":
        hits = second["events"].get("/jax/compilation_cache/cache_hits", 0)
        assert hits >= len(filled), second["events"]
        assert "/jax/compilation_cache/cache_misses" not in second["events"], second["events"]
    else:
        assert second["stderr"].count("Loading cached entry for:") >= len(filled), second["stderr"]
    assert second["wals"] == first["wals"] and second["biased"] == first["biased"]


@pytest.mark.parametrize("backend", ["jax", "tf"])
def test_the_environment_variable_enables_it(backend, tmp_path):
    require_backend(backend)
    folder = tmp_path / "env-cache"
    _run(backend, CFCORE_COMPILATION_CACHE=str(folder))
    assert [p for p in folder.glob(f"{backend}-*/*") if p.is_file()], list(folder.rglob("*"))


def test_tensorflow_started_before_warns_and_caches_nothing(tmp_path):
    # TensorFlow reads its XLA flags when it first lists its devices (as a script that splits the
    # CPU into logical devices does first): a cache asked for after that cannot apply to it.
    require_backend("tf")
    folder = tmp_path / "late"
    got = _run(
        "tf",
        before="import tensorflow as tf; tf.config.list_physical_devices('CPU')",
        enable=f"cfcore.enable_compilation_cache({str(folder)!r})",
    )
    assert "applies to TensorFlow only in processes that call" in got["stderr"]
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_bad_folders_are_refused(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(cfcore.FileAccessError, match="cannot create the compilation cache"):
        cfcore.enable_compilation_cache(afile / "under")
    with pytest.raises(cfcore.ArgumentTypeError, match="must be a path"):
        cfcore.enable_compilation_cache(3)  # type: ignore[arg-type]


def test_flags_keep_the_others_and_replace_an_old_folder():
    flags = compilation_cache.tf_xla_flags(
        f"--tf_xla_auto_jit=2 {compilation_cache.TF_FLAG}=/old --tf_xla_cpu_global_jit",
        Path("/new"),
    )
    assert flags.split() == [
        "--tf_xla_auto_jit=2",
        "--tf_xla_cpu_global_jit",
        f"{compilation_cache.TF_FLAG}=/new",
    ]


def test_each_cpu_feature_set_gets_its_own_subfolder(tmp_path):
    # A program compiled for one CPU's instructions must not be loaded on another's.
    features = compilation_cache.cpu_features()
    assert features.strip(), "no CPU features detected"
    here = compilation_cache.subfolder(tmp_path, "jax", "1.0")
    assert here.name.startswith(f"jax-1.0-{platform.machine()}-")
    assert compilation_cache.subfolder(tmp_path, "tf", "1.0").name != here.name
    with mock.patch.object(compilation_cache, "cpu_features", return_value="SSE SSE2"):
        assert compilation_cache.subfolder(tmp_path, "jax", "1.0") != here
