"""RAM and disk arithmetic, and the lines a refused host prints."""

from __future__ import annotations

from llama_docker.device.fit import GIB, MIB, Shape, disk_refusal, kv_cache_bytes, ram_refusal


def test_kv_cache_of_a_7b_at_2048_is_1_gib() -> None:
    # llama.cpp prints "KV self size = 1024.00 MiB" for LLaVA 1.5 7B at n_ctx 2048.
    shape = Shape(n_layer=32, n_embd=4096, n_head=32, n_head_kv=32)
    assert kv_cache_bytes(shape, 2048) == 1024 * MIB


def test_grouped_query_attention_shrinks_kv() -> None:
    full = Shape(n_layer=24, n_embd=896, n_head=14, n_head_kv=14)
    gqa = Shape(n_layer=24, n_embd=896, n_head=14, n_head_kv=2)
    assert kv_cache_bytes(gqa, 4096) * 7 == kv_cache_bytes(full, 4096)


def test_pinebook_with_7b_is_refused_with_advice() -> None:
    line = ram_refusal(int(4.1 * GIB), GIB, 512, 4 * GIB - 300 * MIB, "llava-v1.5-7b-q4")
    assert line is not None and "\n" not in line
    assert "needs 5.6 GiB" in line and "has 3.7 GiB" in line
    assert "qwen2.5-0.5b-instruct" in line


def test_fits() -> None:
    assert ram_refusal(400 * MIB, 100 * MIB, 512, 2 * GIB, "m") is None
    assert ram_refusal(400 * MIB, 100 * MIB, 512, None, "m") is None


def test_disk() -> None:
    assert disk_refusal(0, 1024, 1, "/m") is None
    assert disk_refusal(GIB, 1024, 3 * GIB, "/m") is None
    line = disk_refusal(4 * GIB, 1024, 2 * GIB, "/var/lib/llama-docker/models")
    assert line is not None and "needs 5.0 GiB" in line and "has 2.0 GiB free" in line


def test_unknown_shape_scales_the_context_cache_with_the_model_size() -> None:
    # Before a download only the size is known: a 0.4 GB model must not be charged a 7B's
    # 1 GiB of context, or a 2 GB Pi would be refused a model it can run.
    small = kv_cache_bytes(None, 2048, 400_000_000)
    assert 100 * MIB < small < 120 * MIB
    assert kv_cache_bytes(None, 2048, 3_800_000_000) == 1024 * MIB
    assert kv_cache_bytes(None, 2048) == 1024 * MIB
