"""The global CHITA solve's forecast: logged before the solve, a warning naming the options that bring time and
memory down when it is large (the prediction monkeypatched), a progress bar of the IHT steps during a long solve,
and nothing of it in block mode."""
import copy
import logging

import pytest

import chita_nn.core.solve_cost as solve_cost
import l0reg
from chita_nn import CHITA, prune
from chita_nn.methods import blocks
from chita_nn.zoo.datasets import load_digits_data
from chita_nn.zoo.models import train_digits_mlp

FAST = dict(n_rows=64, samples_per_row=2, line_search=False)
LOGGER = "chita_nn.core.solve_cost"


@pytest.fixture(scope="module")
def digits():
    train, _ = load_digits_data(seed=0)
    return train_digits_mlp(train, epochs=5, seed=0), train


def _messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_large_predicted_solve_warns_with_the_options_that_help(digits, monkeypatch, caplog):
    monkeypatch.setattr(solve_cost, "predict_solve_seconds", lambda *args, **kwargs: 1000.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        prune(copy.deepcopy(digits[0]), digits[1], CHITA(sparsity=0.9, **FAST))
    [warning] = _messages(caplog, logging.WARNING)
    assert "about 1000 s over 1 stage (up to 1000 s" in warning and "64 Fisher rows x 6,464 weights" in warning
    for option in ("--block-size", "--n-rows", "--samples-per-row", "block_size", "n_rows", "samples_per_row"):
        assert option in warning


def test_small_solve_is_an_info_line(digits, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        prune(copy.deepcopy(digits[0]), digits[1], CHITA(sparsity=0.9, **FAST))
    assert not _messages(caplog, logging.WARNING)
    [info] = _messages(caplog, logging.INFO)
    assert info.startswith("the global solve (64 Fisher rows x 6,464 weights): about ")


def test_block_mode_has_no_global_forecast(digits, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        prune(copy.deepcopy(digits[0]), digits[1], CHITA(sparsity=0.9, block_size="layer", **FAST))
    assert not [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("seconds, bar", [(1000.0, True), (0.5, False)])
def test_long_solve_shows_a_progress_bar_of_its_steps(digits, monkeypatch, capsys, seconds, bar):
    monkeypatch.setattr(solve_cost, "predict_solve_seconds", lambda *args, **kwargs: seconds)
    steps, solve_once = [], l0reg.solve

    def solve(*args, callback=None, **kwargs):
        steps.append(callback)
        return solve_once(*args, callback=callback, **kwargs)

    monkeypatch.setattr(blocks.l0reg, "solve", solve)
    prune(copy.deepcopy(digits[0]), digits[1], CHITA(sparsity=0.9, **FAST), progress=True)
    assert len(steps) == 1 and (steps[0] is not None) == bar
    assert ("global solve" in capsys.readouterr().err) == bar
