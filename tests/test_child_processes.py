"""The tests' child processes (``_procs``) end with their test: a child and what it started in a session of its own
(as torchrun starts its ranks) are gone when the test fails, and when pytest is stopped by SIGINT or SIGTERM."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _procs import run, started

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the descendants are found in /proc")

TESTS = Path(__file__).parent

#: Starts a grandchild in a new session, writes both pids to argv[1], then sleeps.
TREE = textwrap.dedent("""
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {grandchild.pid}")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
""")


def _hanging_test(pids_file):
    """A test module whose one test runs TREE through ``_procs.run``."""
    return textwrap.dedent(f"""
        import sys
        from _procs import run

        def test_hangs():
            run([sys.executable, "-c", {TREE!r}, {str(pids_file)!r}], timeout=600)
    """)

#: pytest with SIGINT and SIGTERM as in a foreground run, even where this pytest started with them ignored (as a
#: background job of a shell without job control ignores SIGINT).
PYTEST = ("import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "signal.signal(signal.SIGTERM, signal.SIG_DFL); sys.exit(pytest.main(sys.argv[1:]))")


def _pids(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not written"
        time.sleep(0.02)
    return [int(pid) for pid in path.read_text().split()]


def _alive(pid):
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(map(_alive, pids))


def test_leaving_kills_the_child_and_its_descendants_in_other_sessions(tmp_path):
    with pytest.raises(RuntimeError, match="the test failed"):
        with started([sys.executable, "-c", TREE, str(tmp_path / "pids")]):
            pids = _pids(tmp_path / "pids")
            assert all(map(_alive, pids))
            raise RuntimeError("the test failed")
    assert _gone(pids)


def test_a_timeout_kills_the_tree(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run([sys.executable, "-c", TREE, str(tmp_path / "pids")], timeout=5)
    assert _gone(_pids(tmp_path / "pids", timeout=0))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_pytest_run_leaves_no_process(tmp_path, signum):
    pids_file = tmp_path / "pids"
    (tmp_path / "test_hanging.py").write_text(_hanging_test(pids_file))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", PYTEST, "-q", "-p", "conftest", "-p", "no:cacheprovider", "test_hanging.py"]
    with started(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pytest_run:
        pids = _pids(pids_file)
        pytest_run.send_signal(signum)
        output, _ = pytest_run.communicate(timeout=60)
    assert pytest_run.returncode == pytest.ExitCode.INTERRUPTED, output
    assert _gone(pids), output
