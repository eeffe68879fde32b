"""Will a set of models fit? The router loads up to `models_max` at once, each in its own
process with its own context cache: RAM must hold the largest `models_max` together, and
disk every file of the set. Decided before the first byte moves."""

from __future__ import annotations

from dataclasses import dataclass

from llama_docker.device.fit import MIB, gib, memory_limit_mib

# llama-server's own default for --models-max; more is rarely wanted on a home device.
ROUTER_DEFAULT_MAX = 4


@dataclass(frozen=True)
class Need:
    """What one model of the set takes while it is loaded."""

    name: str
    weights: int  # the model file and its projector, in bytes
    kv: int  # its context cache at its own ctx-size

    @property
    def total(self) -> int:
        return self.weights + self.kv


def largest(needs: list[Need], count: int) -> list[Need]:
    """The `count` models that take the most RAM (the worst case the router can reach)."""
    return sorted(needs, key=lambda n: n.total, reverse=True)[:count]


def auto_models_max(needs: list[Need], margin_mib: int, have_bytes: int | None) -> int:
    """How many may be loaded at once when the knob says 0: as many of the largest as fit
    together in RAM beside the margin, at least 1, at most llama-server's default of 4."""
    cap = min(len(needs), ROUTER_DEFAULT_MAX)
    if have_bytes is None:
        return 1
    room = have_bytes - margin_mib * MIB
    fits, used = 0, 0
    for n in largest(needs, cap):
        used += n.total
        if used > room:
            break
        fits += 1
    return max(fits, 1)


def set_ram_refusal(needs: list[Need], models_max: int, margin_mib: int,
                    have_bytes: int | None) -> str | None:
    """One line naming the model, or the models loaded together, that do not fit; or None."""
    if have_bytes is None or not needs:
        return None
    margin = margin_mib * MIB
    top = largest(needs, models_max)
    if top[0].total + margin > have_bytes:
        n = top[0]
        return (f"not enough RAM for {n.name} (the largest of models): needs "
                f"{gib(n.total + margin)} ({gib(n.weights)} model + {gib(n.kv)} context + "
                f"{gib(margin)} margin), has {gib(have_bytes)}; drop it from models, or lower "
                "its --ctx-size or ctx_size")
    need = sum(n.total for n in top) + margin
    if need <= have_bytes:
        return None
    names = ", ".join(n.name for n in top)
    return (f"not enough RAM for models_max={models_max} models at once ({names}): needs "
            f"{gib(need)} ({gib(sum(n.weights for n in top))} models + "
            f"{gib(sum(n.kv for n in top))} context + {gib(margin)} margin), has "
            f"{gib(have_bytes)}; lower models_max (0 decides from RAM)")


def set_disk_refusal(missing: list[tuple[str, int]], margin_mib: int, free_bytes: int | None,
                     where: str) -> str | None:
    """One line naming each model whose files are not on the disk yet, with its bytes and
    the total, when they do not fit beside the margin; or None. `missing`: (name, bytes) in
    the knob's order, a file two models share counted once."""
    missing = [(name, n) for name, n in missing if n]
    total = sum(n for _, n in missing)
    if not total or free_bytes is None or total + margin_mib * MIB <= free_bytes:
        return None
    names = ", ".join(f"{name} {gib(n)}" for name, n in missing)
    return (f"not enough disk at {where} for models ({names}): needs "
            f"{gib(total + margin_mib * MIB)} ({gib(total)} models + "
            f"{gib(margin_mib * MIB)} margin), has {gib(free_bytes)} free; drop one from "
            "models, free some space or point models_dir at a bigger disk")


def set_memory_limit_mib(needs: list[Need], models_max: int) -> int:
    """The container's cap: each of the `models_max` largest with its compute room, as one
    model alone gets (fit.memory_limit_mib), since each runs in its own process."""
    return sum(memory_limit_mib(n.weights, n.kv) for n in largest(needs, models_max))
