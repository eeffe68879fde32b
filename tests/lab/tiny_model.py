"""A tiny but real llama-architecture GGUF that llama-server loads and generates with.

Deterministic: the same arguments give the same bytes (and so the same sha256), so tests can
pin hashes. Nothing is downloaded; the weights are random numbers from a fixed seed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
WORDS = ["\u2581", "\u2581the", "\u2581a", "\u2581is", "\u2581to"]


def write_tiny_gguf(
    path: Path, *, seed: int = 42, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
    n_ff: int = 128, n_ctx: int = 512, f16: bool = False,
) -> str:
    """Write the model to `path` and return its sha256.

    Wider layers make a bigger model that still loads (llama.cpp refuses unknown tensors):
    n_embd=1024, n_ff=4096 is about 64 MiB of F32 weights per layer. `f16`: the weight
    matrices in F16 (norms stay F32), as a real model's F16 file: half the bytes per layer,
    and the same compute per token as one.
    """
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *BYTE_TOKENS, *WORDS]
    types = [2, 3, 3] + [6] * 256 + [1] * len(WORDS)
    vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llama-docker tiny test model")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(1 if f16 else 0)  # mostly F16, or all F32
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(WORDS))])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def t(name: str, *shape: int, scale: float = 0.05) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(
            np.float16 if f16 else np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    t("token_embd.weight", vocab, n_embd)
    ones("output_norm.weight", n_embd)
    t("output.weight", vocab, n_embd)
    for i in range(n_layer):
        ones(f"blk.{i}.attn_norm.weight", n_embd)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", n_embd, n_embd)
        ones(f"blk.{i}.ffn_norm.weight", n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")
    print(write_tiny_gguf(out), out)
