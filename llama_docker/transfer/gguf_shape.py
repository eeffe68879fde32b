"""Read a GGUF's header for the numbers that size its KV cache."""

from __future__ import annotations

from pathlib import Path

from llama_docker.device.fit import Shape


def read_shape(path: Path) -> Shape | None:
    """The model's layer/width/head counts, or None when the header does not say."""
    from gguf import GGUFReader  # numpy-heavy; only needed when a file is at hand

    reader = GGUFReader(str(path))

    def field(key: str) -> int | None:
        f = reader.fields.get(key)
        return int(f.contents()) if f is not None else None

    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        return None
    arch = arch_field.contents()
    n_layer, n_embd, n_head = (field(f"{arch}.{k}") for k in
                               ("block_count", "embedding_length", "attention.head_count"))
    if not (n_layer and n_embd and n_head):
        return None
    n_head_kv = field(f"{arch}.attention.head_count_kv") or n_head
    return Shape(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv)
