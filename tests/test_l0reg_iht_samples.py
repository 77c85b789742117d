"""IHT tries the line search's samples (supports beyond the path's breakpoints) at its first step, after a step
they won, every ``_SAMPLE_EVERY`` steps and before it stops for want of a step."""
import numpy as np
import pytest

import l0reg._iht as iht_module
from l0reg import TopK
from l0reg._design import Design
from l0reg._iht import _SAMPLE_EVERY, iht
from l0reg._linesearch import N_SAMPLES, line_search


def _state(seed, order):
    rng = np.random.default_rng(seed)
    n, p, k = 40, 80, 10
    A = np.asarray(rng.standard_normal((n, p)) * np.exp(rng.standard_normal(p)), order=order)
    w_bar = rng.standard_normal(p)
    b = A @ w_bar + 0.1 * rng.standard_normal(n)
    w = np.zeros(p)
    return Design(A), TopK(k).bind(p), b, w, b.copy(), w_bar, n * 0.01, 0.5 * b @ b + 0.5 * n * 0.01 * w_bar @ w_bar


def _recorded(monkeypatch):
    calls = []

    def recording(*args, **kwargs):
        out = line_search(*args, **kwargs)
        calls.append((kwargs.get("n_samples", N_SAMPLES) > 0, out[0], out[4]))
        return out

    monkeypatch.setattr(iht_module, "line_search", recording)
    return calls


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("order", "CF")
def test_samples_follow_the_schedule(monkeypatch, seed, order):
    calls = _recorded(monkeypatch)
    design, projection, b, w, r, w_bar, nlam, value = _state(seed, order)
    iht(design, projection, b, w, r, w_bar, nlam, max_iter=3 * _SAMPLE_EVERY, tol=0.0, value=value, history=[])
    assert calls[0][0]  # the first step samples
    value, won, step, i = calls[0][1], calls[0][2], 1, 1
    while i < len(calls):
        step += 1
        tried, found, won_now = calls[i]
        assert tried == (won or (step - 1) % _SAMPLE_EVERY == 0)
        if not tried and not found < value:  # no step without samples: retried with them, then stops
            assert calls[i + 1][0] and i + 2 == len(calls)
            tried, found, won_now = calls[i + 1]
            i += 1
        value, won = min(value, found), won_now
        i += 1
    assert sum(tried for tried, _, _ in calls) < len(calls)  # some steps skip the samples


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", "CF")
def test_iht_stops_only_where_no_sample_improves_either(seed, order):
    design, projection, b, w, r, w_bar, nlam, value = _state(seed, order)
    w, r, value, n_iter, converged = iht(design, projection, b, w, r, w_bar, nlam, max_iter=500, tol=0.0,
                                         value=value, history=[])
    assert converged and n_iter < 500
    scale, inv_diag = iht_module.jacobi_scale(design, nlam)
    g, q = design.step_direction(r, w, w_bar, nlam, inv_diag)
    assert not line_search(design, projection, r, w, g, w_bar, nlam, scale, q=q)[0] < value


def test_a_step_without_samples_that_finds_nothing_is_retried_with_them(monkeypatch):
    """The stopping test is the full line search's: were the breakpoints alone to find no step, the samples
    are tried before IHT stops (here the breakpoints-only search is made to fail every time)."""
    def blind_without_samples(*args, **kwargs):
        out = line_search(*args, **kwargs)
        return (np.inf,) + out[1:] if kwargs.get("n_samples") == 0 else out

    design, projection, b, w, r, w_bar, nlam, value = _state(0, "F")
    reference = iht(design, projection, b, w, r, w_bar, nlam, max_iter=20, tol=0.0, value=value, history=[])
    monkeypatch.setattr(iht_module, "line_search", blind_without_samples)
    blind = iht(design, projection, b, w, r, w_bar, nlam, max_iter=20, tol=0.0, value=value, history=[])
    assert blind[3] == reference[3] > 2
    np.testing.assert_allclose(blind[2], reference[2], rtol=1e-12)
