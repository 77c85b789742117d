"""``chita-nn demo`` prints its table and a few lines; the log (stages, the time left) comes at ``-v``; a cell
whose CHITA stages all kept the magnitude solution is marked and explained under the table."""
import logging

from chita_nn.cli import main
from chita_nn.methods import oneshot

SMALL = ["--n-rows", "64", "--samples-per-row", "2", "--stages", "2", "--epochs", "5",
         "--methods", "magnitude", "chita", "chita++"]
ROWS = ["--sparsities", "0.5", "0.8", "0.9"]


def _library_records(caplog):
    return [r for r in caplog.records if r.name.startswith("chita_nn")]


def test_demo_prints_its_table_and_a_few_lines(capsys, caplog):
    assert main(["demo", *ROWS, *SMALL]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("digits MLP trained") and lines[-1].startswith("total")
    assert [line.split()[0] for line in lines[2:5]] == ["0.50", "0.80", "0.90"]
    assert len(lines) <= 7 and not captured.err
    assert not _library_records(caplog)


def test_demo_logs_stages_and_the_time_left_at_v(capsys, caplog):
    assert main(["demo", "-v", *ROWS, *SMALL]) == 0
    messages = [r.getMessage() for r in _library_records(caplog)]
    assert any(m.startswith("stage 1/2: sparsity") and "kept" in m for m in messages)
    assert not any("step nan" in m for m in messages)
    # From the second row's time (the first pays one-time costs), one estimate with one row left.
    [left] = [m for m in messages if " s left" in m]
    assert "rows left: 1" in left


def test_demo_marks_cells_that_are_magnitude_pruning(monkeypatch, capsys):
    prune = oneshot.prune

    def every_stage_falls_back(model, data, recipe, **kwargs):
        report = prune(model, data, recipe, **kwargs)
        for stage in report.stages:
            stage.kept = "magnitude"
        return report

    monkeypatch.setattr(oneshot, "prune", every_stage_falls_back)
    assert main(["demo", "--sparsities", "0.5", *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = lines[2].split()
    assert row[0] == "0.50" and not row[1].endswith("*") and row[2].endswith("*") and row[3].endswith("*")
    assert lines[3].startswith("* every stage kept the magnitude solution")
