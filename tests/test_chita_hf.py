"""Hugging Face models: pruned with N:M masks, saved with save_pretrained (safetensors), reloaded with zeros."""
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
