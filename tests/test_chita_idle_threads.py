"""quiet_idle_threads: the OpenMP and OpenBLAS environment defaults are set before numpy loads (the command
line's first step), a user's own values are kept, and a call after numpy is imported says it is too late."""
import logging
import os
import subprocess
import sys

import pytest

from chita_nn.core.idle_threads import DEFAULTS, quiet_idle_threads

_PROBE = ("import os, sys\n"
          "from chita_nn import quiet_idle_threads\n"
          "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"
          "print(sorted(quiet_idle_threads()), os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])\n")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env.update(extra)
    return env


def test_defaults_are_set_before_numpy_loads():
    out = subprocess.run([sys.executable, "-c", _PROBE], env=_clean_env(), capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["['OMP_WAIT_POLICY',", "'OPENBLAS_THREAD_TIMEOUT']", "PASSIVE", "4"]


def test_a_users_values_are_kept():
    out = subprocess.run([sys.executable, "-c", _PROBE], env=_clean_env(OPENBLAS_THREAD_TIMEOUT="8"),
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert out == ["['OMP_WAIT_POLICY']", "PASSIVE", "8"]


def _unset(monkeypatch):
    for name in DEFAULTS:  # set, then removed: the test's changes are undone either way
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def test_too_late_after_numpy_is_logged(monkeypatch, caplog):
    import numpy  # noqa: F401

    _unset(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="chita_nn.core.idle_threads"):
        assert sorted(quiet_idle_threads()) == sorted(DEFAULTS)
    assert "after importing numpy" in caplog.text


def test_the_command_line_sets_them_first(monkeypatch):
    from chita_nn import cli

    _unset(monkeypatch)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert {name: os.environ[name] for name in DEFAULTS} == DEFAULTS
