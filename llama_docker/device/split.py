"""A model split over a head and its RPC workers: who holds which layers, and the head's
llama-server arguments that say so. Decided before the first byte moves.

llama.cpp's RPC backend makes each worker a device of the head's llama-server. Layers it
offloads (`--n-gpu-layers`) go to those devices in the proportions of `--tensor-split`;
the rest stay in the head's own RAM. The KV cache of a layer sits with the layer, so each
layer costs its weights and its share of the context cache wherever it lands. Layers are
dealt in proportion to each device's free memory (less the margin), never more than it can
hold; the sum not enough is refused with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_docker.device.fit import MIB, gib

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Member:
    """One device of the split, head first."""

    name: str
    free: int  # bytes the model may take there (llama_docker/device/memory.py)
    bound: str = "MemAvailable"  # what bounds `free`


@dataclass(frozen=True)
class Split:
    """Layers per member (head first) of a model of `n_layer` layers."""

    members: tuple[Member, ...]
    layers: tuple[int, ...]

    @property
    def head_layers(self) -> int:
        return self.layers[0]

    @property
    def worker_layers(self) -> tuple[int, ...]:
        return self.layers[1:]

    def line(self) -> str:
        """`split: 10 layers here (3.1 GiB free), 12 on pi2.local (3.8 GiB free), ...`"""
        parts = [f"{n} layers {'here' if i == 0 else 'on ' + m.name} ({gib(m.free)} free)"
                 for i, (m, n) in enumerate(zip(self.members, self.layers, strict=True))]
        return "split: " + ", ".join(parts)


def refusal(name: str, weights: int, kv: int, margin_mib: int, members: list[Member]) -> str:
    need = weights + kv
    usable = sum(max(m.free - margin_mib * MIB, 0) for m in members)
    each = ", ".join(f"{m.name} {gib(m.free)}" for m in members)
    return (f"not enough memory for {name} split over {len(members)} devices: needs "
            f"{gib(need)} ({gib(weights)} model + {gib(kv)} context), has {gib(usable)} "
            f"free after a {gib(margin_mib * MIB)} margin on each ({each} free); add a device "
            "to split_over, choose a smaller model or lower ctx_size")


def split_layers(name: str, weights: int, kv: int, n_layer: int, margin_mib: int,
                 members: list[Member], previous: tuple[int, ...] | None = None
                 ) -> Split | str:
    """The layers of each member, in proportion to its free memory; or the refusal line.

    `previous`: the layers the head serves with now (previous_layers). Kept while every
    member can still hold its share: free memory moves a little between runs (caches come
    and go), and a deal redone on each run would restart the split for nothing."""
    usable = [max(m.free - margin_mib * MIB, 0) for m in members]
    per_layer = max(-(-(weights + kv) // max(n_layer, 1)), 1)
    caps = [u // per_layer for u in usable]
    if sum(usable) < weights + kv or sum(caps) < n_layer:
        return refusal(name, weights, kv, margin_mib, members)
    if (previous and len(previous) == len(members) and sum(previous) == n_layer
            and all(0 <= n <= c for n, c in zip(previous, caps, strict=True))):
        return Split(members=tuple(members), layers=previous)
    total = sum(usable)
    targets = [n_layer * u / total for u in usable]
    layers = [min(int(t), c) for t, c in zip(targets, caps, strict=True)]
    while sum(layers) < n_layer:  # the rest, one at a time, to who is furthest below its share
        open_ = [i for i in range(len(layers)) if layers[i] < caps[i]]
        i = max(open_, key=lambda j: (targets[j] - layers[j], -j))
        layers[i] += 1
    return Split(members=tuple(members), layers=tuple(layers))


def previous_layers(unit_text: str, ports: list[int], n_layer: int) -> tuple[int, ...] | None:
    """The layers per member (head first) of the head's unit as server_args wrote it, when it
    names the same links (`ports`) and a model of `n_layer` layers; else None."""
    words = unit_text.replace("\\\n", " ").split()

    def after(flag: str) -> str | None:
        return words[words.index(flag) + 1] if flag in words[:-1] else None

    rpc, shares = after("--rpc"), after("--tensor-split")
    if rpc != ",".join(f"{LOOPBACK}:{p}" for p in ports) or shares is None:
        return None
    try:
        workers = tuple(int(n) for n in shares.split(","))
    except ValueError:
        return None
    head = n_layer - sum(workers)
    if len(workers) != len(ports) or head < 0 or min(workers) < 0:
        return None
    return (head, *workers)


def forward_port(rpc_port: int, index: int) -> int:
    """The head's loopback port of its link to worker `index` (0-based)."""
    return rpc_port + 1 + index


def server_args(split: Split, ports: list[int]) -> tuple[str, ...]:
    """The head's llama-server arguments: its workers (the links' loopback ports), how many
    layers leave the head (the output layer with them), and each worker's share. llama.cpp's
    own fitting is off: it would move the layers the fit above placed."""
    offloaded = sum(split.worker_layers)
    rpc = ",".join(f"{LOOPBACK}:{p}" for p in ports)
    return ("--rpc", rpc, "--n-gpu-layers", str(offloaded + 1 if offloaded else 0),
            "--tensor-split", ",".join(str(n) for n in split.worker_layers), "--fit", "off")
