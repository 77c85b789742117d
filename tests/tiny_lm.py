"""Test helpers: a tiny Llama written as a real GGUF file (Q8_0 weights, a byte-level BPE tokenizer), and an
installed-looking distribution (a ``.dist-info`` folder) for the offline model packages."""
import base64
import hashlib

import numpy as np

VOCAB_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ s", "e r", "o n"]


def _byte_tokens():
    """GPT-2's printable stand-ins for the 256 bytes (its ``bytes_to_unicode`` table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def write_tiny_gguf(path, *, hidden=32, ffn=64, layers=2, heads=4, kv_heads=2, seed=0):
    """Write a Llama of ``layers`` blocks as a GGUF file at ``path`` (2-d weights quantised to Q8_0, as
    llama.cpp ships them; ``lm_head`` tied to the embedding); returns the vocabulary size."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *_byte_tokens(), *(m.replace(" ", "") for m in VOCAB_MERGES)]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(VOCAB_MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)

    def matrix(name, rows, columns):
        blocks = quantize((rng.standard_normal((rows, columns)) * 0.1).astype(np.float32),
                          gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    head = hidden // heads
    matrix("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name, rows, columns in (("attn_q", hidden, hidden), ("attn_k", kv_heads * head, hidden),
                                    ("attn_v", kv_heads * head, hidden), ("attn_output", hidden, hidden),
                                    ("ffn_gate", ffn, hidden), ("ffn_up", ffn, hidden), ("ffn_down", hidden, ffn)):
            matrix(f"blk.{i}.{name}.weight", rows, columns)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(tokens)


def fake_distribution(root, name, files, version="0.1.0"):
    """Lay out under ``root`` (a folder to put on ``sys.path``) an installed distribution ``name`` holding
    ``files`` (``{relative path: bytes}``), listed in its RECORD as pip lists them."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = []
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{relative},sha256={digest},{len(data)}")
    record += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return root
