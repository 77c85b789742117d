"""export --format compressed-tensors: a pruned tiny Llama written as llm-compressor's sparse checkpoint and
read back by the compressed-tensors package itself (2:4 -> sparse-24-bitmask, else sparse-bitmask), the
targets / ignore lists, and the one-line errors."""
import json
import sys
import types

import pytest
import torch

transformers = pytest.importorskip("transformers")

from chita_nn import export, load_export, magnitude_prune  # noqa: E402
from chita_nn.cli import main  # noqa: E402
from chita_nn.core.compressed import follows_2_4, require_compressed_tensors  # noqa: E402
from chita_nn.core.export import dense_state_dict  # noqa: E402
from chita_nn.zoo.hf import save_pretrained  # noqa: E402

try:
    require_compressed_tensors()
    REASON = ""
except ModuleNotFoundError as exc:
    REASON = str(exc)
needs_package = pytest.mark.skipif(bool(REASON), reason=REASON)
LAYER_1_DOWN = "re:.*layers\\.1\\.mlp\\.down_proj"
LM_HEAD = "re:(.*\\.)?lm_head"


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    yield


def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    return transformers.LlamaForCausalLM(config).eval()


IDS = torch.randint(0, 64, (3, 11), generator=torch.Generator().manual_seed(1))


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _sparsity_config(folder):
    quantization = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors"
    return quantization["sparsity_config"]


def _read_back(folder):
    """The model as the package's ModelCompressor restores it: its documented decompress path on a model built
    from the folder's config (transformers 5 refuses from_pretrained on such a folder with compressed-tensors 0.13,
    and newer compressed-tensors no longer decompress it)."""
    from compressed_tensors.compressors import ModelCompressor

    compressor = ModelCompressor.from_pretrained(str(folder))
    torch.manual_seed(123)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder)).eval()
    compressor.decompress(str(folder), model)
    return model


def _check_round_trip(pruned, folder):
    """The package restores every weight of the pruned model exactly, so the logits match; the config's
    targets / ignore select exactly the layers stored compressed."""
    from compressed_tensors.utils.match import match_named_modules
    from safetensors import safe_open

    expected = dense_state_dict(pruned)
    restored = _read_back(folder)
    assert set(restored.state_dict()) == set(expected)
    assert all(torch.equal(restored.state_dict()[key], value) for key, value in expected.items())
    torch.testing.assert_close(_logits(restored), _logits(pruned))
    config = _sparsity_config(folder)
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        stored = {key.rsplit(".", 1)[0] for key in fh.keys() if key.endswith(".compressed")}
        assert not any(key in fh.keys() for key in (f"{name}.weight" for name in stored))
    assert stored and {name for name, _ in match_named_modules(restored, config["targets"], config["ignore"])} == stored
    loaded = load_export(folder)  # chita_nn's reader: the same package underneath
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], v) for k, v in expected.items())
    return config, stored


@needs_package
def test_2_4_llama_is_sparse_24_bitmask_and_restores_exactly(tmp_path):
    model = _tiny_llama()
    magnitude_prune(model, pattern="2:4")
    size = export(model, tmp_path / "ct", "compressed-tensors")
    config, stored = _check_round_trip(model, tmp_path / "ct")
    assert config["format"] == "sparse-24-bitmask" and config["sparsity_structure"] == "2:4"
    assert config["targets"] == ["Linear"] and config["ignore"] == ["lm_head"]
    assert len(stored) == 14 and "lm_head" not in stored
    assert 0.2 < config["global_sparsity"] < 0.5  # half of the Linear weights; embeddings, norms, lm_head dense
    dense = export(model, tmp_path / "dense.safetensors", "safetensors")
    assert size < dense  # values at half size plus a bit mask: the sparse layers are smaller
    assert hasattr(model.model.layers[0].self_attn.q_proj, "weight_mask")  # the model itself is left alone


@needs_package
def test_unstructured_50_percent_is_sparse_bitmask(tmp_path):
    model = _tiny_llama()
    magnitude_prune(model, 0.5, scope="layerwise")
    export(model, tmp_path / "ct", "compressed-tensors")
    config, stored = _check_round_trip(model, tmp_path / "ct")
    assert config["format"] == "sparse-bitmask" and config["sparsity_structure"] == "unstructured"
    assert len(stored) == 14 and config["ignore"] == ["lm_head"]
    assert not follows_2_4(dense_state_dict(model)["model.layers.0.mlp.up_proj.weight"])


@needs_package
def test_one_layer_that_is_not_2_4_makes_the_model_unstructured(tmp_path):
    model = _tiny_llama()
    magnitude_prune(model, pattern="2:4", ignore=("re:.*down_proj", LM_HEAD))
    export(model, tmp_path / "dense-down", "compressed-tensors")
    config, stored = _check_round_trip(model, tmp_path / "dense-down")  # dense layers are only ignored
    assert config["format"] == "sparse-24-bitmask" and config["sparsity_structure"] == "2:4"
    assert sorted(config["ignore"]) == ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    magnitude_prune(model, 0.5, targets=(LAYER_1_DOWN,), ignore=(), scope="layerwise")
    assert not follows_2_4(dense_state_dict(model)["model.layers.1.mlp.down_proj.weight"])
    export(model, tmp_path / "mixed", "compressed-tensors")
    config, stored = _check_round_trip(model, tmp_path / "mixed")
    assert config["format"] == "sparse-bitmask" and config["sparsity_structure"] == "unstructured"
    assert "model.layers.1.mlp.down_proj" in stored and len(stored) == 13


@needs_package
def test_a_minority_of_sparse_layers_is_named(tmp_path):
    model = _tiny_llama()
    magnitude_prune(model, pattern="2:4", targets=("re:.*q_proj",))
    export(model, tmp_path / "ct", "compressed-tensors")
    config, stored = _check_round_trip(model, tmp_path / "ct")
    assert config["targets"] == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    assert len(config["ignore"]) == 13 and config["format"] == "sparse-24-bitmask"


@needs_package
def test_cli_exports_a_pruned_hf_folder(tmp_path, capsys):
    model = _tiny_llama()
    magnitude_prune(model, pattern="2:4")
    save_pretrained(model, tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), "--format", "compressed-tensors"]) == 0
    out = tmp_path / "model.compressed-tensors"
    assert f"wrote {out}" in capsys.readouterr().out
    assert _sparsity_config(out)["format"] == "sparse-24-bitmask"
    torch.testing.assert_close(_logits(_read_back(out)), _logits(model))
    assert main(["export", str(tmp_path / "model"), "--format", "compressed-tensors"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(out), "--format", "compressed-tensors", "--out", str(tmp_path / "again")]) == 2
    assert "quantization_config" in capsys.readouterr().err and not (tmp_path / "again").exists()


@needs_package
def test_models_it_cannot_export(tmp_path):
    from chita_nn.zoo.models import DigitsMLP

    with pytest.raises(TypeError, match="PreTrainedModel.*DigitsMLP"):
        export(DigitsMLP(), tmp_path / "x", "compressed-tensors")
    with pytest.raises(ValueError, match="50% zeros"):
        export(_tiny_llama(), tmp_path / "x", "compressed-tensors")
    assert not (tmp_path / "x").exists()


def _without_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # import fails as if not installed
    return "chita[serve]"


def _package_too_new(monkeypatch):
    package = types.ModuleType("compressed_tensors")
    package.__version__ = "0.20.1"
    monkeypatch.setitem(sys.modules, "compressed_tensors", package)
    monkeypatch.setitem(sys.modules, "compressed_tensors.compressors", types.ModuleType("compressors"))
    return "0.20.1"


@pytest.mark.parametrize("breakage", [_without_package, _package_too_new])
def test_missing_package_is_one_line_naming_it_and_the_extra(breakage, tmp_path, monkeypatch, capsys):
    _tiny_llama().save_pretrained(tmp_path / "model")
    capsys.readouterr()  # save_pretrained's progress bar
    needle = breakage(monkeypatch)
    with pytest.raises(ModuleNotFoundError, match="compressed-tensors") as caught:
        export(_tiny_llama(), tmp_path / "out", "compressed-tensors")
    assert "pip install 'chita[serve]'" in str(caught.value) and needle in str(caught.value)
    assert main(["export", str(tmp_path / "model"), "--format", "compressed-tensors"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "compressed-tensors" in lines[0] and "chita[serve]" in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "model.compressed-tensors").exists()


def test_cli_wants_a_folder(tmp_path, capsys):
    (tmp_path / "pruned.pt").write_bytes(b"x")
    assert main(["export", str(tmp_path / "pruned.pt"), "--format", "compressed-tensors"]) == 2
    err = capsys.readouterr().err
    assert "PRUNED" in err and "not a folder" in err
