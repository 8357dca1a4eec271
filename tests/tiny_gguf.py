"""The tiny Qwen3 of ``tiny_qwen3.py`` written as a GGUF (fp32 weights), for llama.cpp tests
that need no real model: the same weights and vocabulary llama.cpp would read from a converted
Qwen3, so the llama.cpp reply path can be checked against the PyTorch reference exactly where
no quantization stands between them.

Written with the ``gguf`` package (a dependency of transformers' GGUF loading): Qwen3's
metadata keys, llama.cpp's tensor names from ``gguf``'s own name map, and the byte-level BPE
vocabulary (tokens in id order, their types, the merges) so that llama.cpp can load the model.
The tests feed token ids, never text, to llama.cpp, so its tokenizer only has to load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4


def write_tiny_gguf(model_dir: Path, path: Path) -> Path:
    """``model_dir`` (a saved tiny Qwen3) -> ``path`` (a GGUF llama.cpp loads); returns it."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    layers = config["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_name("tiny-qwen3")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    rope = config.get("rope_parameters") or {}  # transformers 5; older configs: rope_theta
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = dict(spec["model"]["vocab"])
    kinds = {tid: TOKEN_NORMAL for tid in vocab.values()}
    for added in spec["added_tokens"]:
        vocab[added["content"]] = added["id"]
        kinds[added["id"]] = TOKEN_CONTROL if added["special"] else TOKEN_USER_DEFINED
    by_id = sorted((tid, tok) for tok, tid in vocab.items())
    assert [tid for tid, _ in by_id] == list(range(len(by_id))), "token ids have gaps"
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list([tok for _, tok in by_id])
    writer.add_token_types([kinds[tid] for tid, _ in by_id])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, layers)
    for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
        base, suffix = name.rsplit(".", 1)
        mapped = names.get_name(base)
        if mapped is None:
            raise ValueError(f"no GGUF name for {name}")
        writer.add_tensor(f"{mapped}.{suffix}", np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
