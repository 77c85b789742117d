"""The README's examples, run as written."""
import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(heading):
    """The ```python blocks of the README section under ``heading`` (up to the next heading)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, flags=re.M | re.S)
    assert match, f"README has no section {heading!r}"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), flags=re.M | re.S)


@pytest.mark.usefixtures("torch_single_thread")
def test_per_layer_solvers_example(capsys):
    (code,) = python_blocks("Per-layer solvers on your own H")
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    errors = namespace["errors"]
    assert set(errors) == {"chita", "sparsegpt", "wanda", "magnitude"}
    assert str(errors) in capsys.readouterr().out
    assert all(0 < error < 1 for error in errors.values())
    assert errors["chita"] <= min(errors["sparsegpt"], errors["wanda"])  # what the example's comment says
    W_new, keep = namespace["W_new"], namespace["keep"]  # the last method's: half of every row, zeros elsewhere
    assert keep.dtype == torch.bool and keep.sum(dim=1).tolist() == [16] * 16
    assert not W_new[~keep].any()
