"""The relay's plan, as `--dry` prints it: who sends a file to whom, round by round.

A tree that doubles: the controller sends the file to one device (none, when a device
already holds it verified), and every device that holds it sends it on to one device at a
time. After round k up to 2^k devices hold it, so N devices take about log2(N) + 1 copy
times while the controller's link carries one copy. A pipeline (each device forwarding
while it receives) would finish sooner on an idle LAN, but it forwards bytes nobody has
verified yet and one slow or failing device stalls everyone behind it; in the tree only a
verified file is ever sent, and a failed copy costs one receiver one retry.

The run itself schedules the same way but live (llama_docker/transfer/relay.py): a copy
starts as soon as a source is free, so a slow device holds back no one.
"""

from __future__ import annotations

CONTROLLER = "this controller"


def rounds(holders: list[str], receivers: list[str]) -> list[list[tuple[str, str]]]:
    """[(source, receiver)] per round, sources in the order they got the file."""
    sources = list(holders)
    waiting = list(receivers)
    plan: list[list[tuple[str, str]]] = []
    if not sources and waiting:
        first = waiting.pop(0)
        plan.append([(CONTROLLER, first)])
        sources.append(first)
    while waiting:
        this = list(zip(sources, waiting, strict=False))
        waiting = waiting[len(this):]
        plan.append(this)
        sources += [dst for _, dst in this]
    return plan


def controller_copies(holders: list[str], receivers: list[str]) -> int:
    """How many times the controller sends the file: once, or never when a device has it."""
    return 0 if holders or not receivers else 1


def plan_lines(name: str, holders: list[str], receivers: list[str]) -> list[str]:
    """`relay X: round 1: a -> b; round 2: a -> c, b -> d`, one line per file."""
    steps = [f"round {i}: " + ", ".join(f"{s} -> {d}" for s, d in r)
             for i, r in enumerate(rounds(holders, receivers), 1)]
    return [f"relay {name}: " + "; ".join(steps)] if steps else []
