"""Child processes of the tests, killed with everything they started when their test ends.

Each child runs in a session of its own, so a Ctrl-C or a signal meant for pytest's process group never reaches
it (pytest stops it), and it carries ``CHITA_TEST_PROCESS=<pytest pid>.<n>`` in its environment. Its descendants
inherit that variable, so they are found in ``/proc`` even where they left the child's process group (torchrun
starts each rank in a session of its own) or outlived the child.
"""
import itertools
import os
import signal
import subprocess
import time
from contextlib import contextmanager

TAG = "CHITA_TEST_PROCESS"
SESSION = str(os.getpid())
_numbers = itertools.count()


def _tagged(tag):
    """Pids of the processes (pytest aside) whose environment holds ``TAG=tag``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                variables = f.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if f"{TAG}={tag}".encode() in variables:
            pids.append(int(entry.name))
    return pids


def _kill(tag, timeout=10.0):
    """SIGKILL every process tagged ``tag`` until none is left (a dying process still shows its environment
    for a moment)."""
    deadline = time.monotonic() + timeout
    while (pids := _tagged(tag)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


@contextmanager
def started(cmd, env=None, **popen_options):
    """``subprocess.Popen(cmd, ...)`` in a new session; on leaving, the child and all its descendants are killed."""
    tag = f"{SESSION}.{next(_numbers)}"
    env = {**(os.environ if env is None else env), TAG: tag}
    with subprocess.Popen(cmd, env=env, start_new_session=True, **popen_options) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            if os.path.isdir("/proc"):
                _kill(tag)


def run(cmd, timeout, check=False, **popen_options):
    """Like ``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)``, with the child
    started by :func:`started` (so nothing it started outlives the call, a timeout or an interrupt included)."""
    with started(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_options) as proc:
        out, err = proc.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done

