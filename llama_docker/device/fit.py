"""Will the model fit? RAM and disk arithmetic, done before the first byte moves."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Shape:
    """The few numbers of a model that size its context (KV) cache."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int


SEVEN_B = Shape(n_layer=32, n_embd=4096, n_head=32, n_head_kv=32)
SEVEN_B_Q4_BYTES = 3_800_000_000


def kv_cache_bytes(shape: Shape | None, ctx_size: int, model_bytes: int | None = None) -> int:
    """f16 K and V for every layer and context slot.

    Before a model is downloaded its shape is unknown: the cache is then estimated from its
    size, scaled from a 7B Q4 model (about 1 GiB at 2048 tokens for 3.8 GB of weights). The
    exact figure replaces the estimate once the file's header can be read.
    """
    if shape is None:
        kv7b = kv_cache_bytes(SEVEN_B, ctx_size)
        return kv7b if not model_bytes else max(kv7b * model_bytes // SEVEN_B_Q4_BYTES, 1)
    kv_width = shape.n_embd * shape.n_head_kv // max(shape.n_head, 1)
    return 2 * shape.n_layer * ctx_size * kv_width * 2


def gib(n: int) -> str:
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / MIB:.1f} MiB" if n < 10 * MIB else f"{n / MIB:.0f} MiB"


def ram_refusal(model_bytes: int, kv_bytes: int, margin_mib: int, have_bytes: int | None,
                name: str) -> str | None:
    """One line saying why the model cannot run in this RAM, or None when it fits."""
    need = model_bytes + kv_bytes + margin_mib * MIB
    if have_bytes is None or need <= have_bytes:
        return None
    return (f"not enough RAM for {name}: needs {gib(need)} ({gib(model_bytes)} model + "
            f"{gib(kv_bytes)} context + {gib(margin_mib * MIB)} margin), has {gib(have_bytes)}; "
            "choose a smaller model (e.g. model = 'qwen2.5-0.5b-instruct') or lower ctx_size")


def disk_refusal(missing_bytes: int, margin_mib: int, free_bytes: int | None, where: str
                 ) -> str | None:
    """One line saying why the files cannot land on this disk, or None when they fit."""
    if missing_bytes == 0 or free_bytes is None:
        return None
    need = missing_bytes + margin_mib * MIB
    if need <= free_bytes:
        return None
    return (f"not enough disk at {where}: needs {gib(need)} ({gib(missing_bytes)} model + "
            f"{gib(margin_mib * MIB)} margin), has {gib(free_bytes)} free; free some space or "
            "point models_dir at a bigger disk")


def memory_limit_mib(model_bytes: int, kv_bytes: int) -> int:
    """The container's memory cap: the weights, the context cache and room for compute
    buffers (a quarter of the weights, at least 512 MiB). A runaway server is stopped there
    instead of pushing the device into swap."""
    return (model_bytes + kv_bytes + max(512 * MIB, model_bytes // 4)) // MIB + 1
