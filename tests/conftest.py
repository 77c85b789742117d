"""Shared fixtures; SIGTERM and SIGHUP stop the run as Ctrl-C does."""
import signal

import numpy as np
import pytest

_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_inherited = {}


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pytest_configure(config):
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so the teardowns run (and stop the tests' child processes, which
    live in sessions of their own) before pytest exits; a signal ignored when pytest started stays ignored."""
    for signum in _STOPPING_SIGNALS:
        _inherited[signum] = signal.getsignal(signum)
        if _inherited[signum] is signal.SIG_DFL:
            signal.signal(signum, _interrupt)


def pytest_unconfigure(config):
    for signum, handler in _inherited.items():
        signal.signal(signum, handler)


@pytest.fixture
def rng():
    """A fresh, seeded generator per test."""
    return np.random.default_rng(20240611)


@pytest.fixture
def sparse_regression():
    """Factory ``(n, p, k, noise, seed) -> (X, y, w_true)`` with ``y = X w_true + noise·ε``.

    X is standard Gaussian; w_true has k nonzeros of magnitude in [1, 3] with
    random signs on a random support.
    """
    def make(n, p, k, noise=0.1, seed=0):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, p))
        w_true = np.zeros(p)
        support = rng.choice(p, size=k, replace=False)
        w_true[support] = rng.uniform(1.0, 3.0, size=k) * rng.choice([-1.0, 1.0], size=k)
        return X, X @ w_true + noise * rng.standard_normal(n), w_true
    return make


@pytest.fixture(scope="module")
def torch_single_thread():
    """One torch thread for modules of tiny models: a thread pool only adds
    synchronisation there, and stalls badly when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_mlp():
    """A digits MLP trained for 5 epochs and its training set (the block-mode tests' model)."""
    from chita_nn.zoo.datasets import load_digits_data
    from chita_nn.zoo.models import train_digits_mlp

    train, _ = load_digits_data(seed=0)
    return train_digits_mlp(train, epochs=5, seed=0), train
