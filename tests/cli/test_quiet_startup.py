"""Quiet start-up of the command line: the frameworks' log lines stay off stderr unless `-v`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfcore.backend import registry
from cfcore.cli import _quiet, app

from .._support.tiny_data import CLI, cli_env, write_tiny_release
from ..conftest import require_backend

# What TensorFlow 2.21 writes on a machine without CUDA (copied from a real run), and lines that
# must go through.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795977857.149210   27268 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results\n",
    "I0000 00:00:1795977857.150362   27268 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n",
    "E0000 00:00:1795977863.410190   27268 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    "W0612 10:11:12.123456    4242 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n",
]
KEPT = [
    "Traceback (most recent call last):\n",
    "E0000 00:00:1795977863.410190   27268 op_kernel.cc:1818] OP_REQUIRES failed: out of memory\n",
    "UserWarning: something the user should see\n",
    "I am a line that merely starts with a capital I0000\n",
]
FRAMEWORK_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ |absl::InitializeLog|cuInit", re.M)


@pytest.fixture
def restore_quiet(monkeypatch: pytest.MonkeyPatch):
    """Puts the registry's import guard, the environment and the loggers back after the test."""
    monkeypatch.setattr(registry, "import_guard", registry.import_guard)
    for name in _quiet.QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in _quiet.QUIET_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)


def test_noise_lines_are_recognised() -> None:
    assert [line for line in NOISE if not _quiet.is_noise(line)] == []
    assert [line for line in KEPT if _quiet.is_noise(line)] == []


def test_filtered_stderr_drops_the_noise_and_keeps_the_rest(capfd: pytest.CaptureFixture) -> None:
    with _quiet.filtered_stderr():
        # Written to fd 2 directly, as the frameworks' C++ code does.
        for line in NOISE + KEPT:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "".join(KEPT)


def test_filtered_stderr_restores_fd2_when_the_block_raises(capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(ImportError), _quiet.filtered_stderr():
        os.write(2, NOISE[1].encode() + KEPT[0].encode())
        raise ImportError("no framework")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == KEPT[0] + "after\n"


def test_quiet_mode_sets_the_environment_loggers_and_guard(restore_quiet) -> None:
    undo = _quiet.configure(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert logging.getLogger("jax._src.xla_bridge").level == logging.ERROR
    assert registry.import_guard is _quiet.filtered_stderr
    undo()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert registry.import_guard is contextlib.nullcontext


def test_quiet_mode_keeps_the_users_own_setting(
    restore_quiet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    undo = _quiet.configure(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    undo()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_verbose_leaves_the_environment_and_loggers_alone(restore_quiet) -> None:
    env = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in _quiet.QUIET_LOGGERS}
    _quiet.configure(verbose=True)
    assert dict(os.environ) == env
    assert {name: logging.getLogger(name).level for name in _quiet.QUIET_LOGGERS} == levels
    assert registry.import_guard is contextlib.nullcontext


def test_in_process_command_leaves_no_trace(restore_quiet) -> None:
    # The callback's changes are undone when the command ends (tests, notebooks).
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert registry.import_guard is contextlib.nullcontext
    result = CliRunner().invoke(app, ["--help"])
    assert "--verbose" in result.output and "-v" in result.output


def _train_tf(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    data = write_tiny_release(tmp_path / "data")
    args = [*CLI, *flags, "train", "--backend", "tf", "--dataset", str(data)]
    args += ["--out", str(tmp_path / "out"), "--steps", "4", "--eval-every", "2"]
    args += ["--dim", "3", "--lr", "1", "--no-progress"]
    proc = subprocess.run(args, capture_output=True, text=True, env=cli_env(), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "model.npz").is_file()
    return proc


@pytest.mark.subprocess
@pytest.mark.slow  # a TensorFlow start-up: 10-40 s on 2 shared cores
def test_train_tf_prints_no_framework_lines(tmp_path: Path) -> None:
    require_backend("tf")
    proc = _train_tf(tmp_path)
    assert FRAMEWORK_LINE.search(proc.stderr) is None, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.subprocess
@pytest.mark.slow
def test_train_tf_verbose_lets_them_through(tmp_path: Path) -> None:
    # TensorFlow 2.21 on CPU logs absl's pre-initialisation notice and oneDNN/CUDA lines at
    # import: with -v they reach stderr untouched.
    require_backend("tf")
    proc = _train_tf(tmp_path, "-v")
    assert FRAMEWORK_LINE.search(proc.stderr) is not None, proc.stderr
