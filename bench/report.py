"""docs/BENCHMARKS.md, rendered from docs/benchmarks.json (the latest result of every benchmark).

The doc is only ever rendered from the committed results, never edited: a partial run replaces
the results it measured and re-renders, every other section keeps its own date and commit.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Any

from . import results

REPO = results.REPO
DOC = REPO / "docs" / "BENCHMARKS.md"
ORDER = ["push", "download", "upstream", "resume", "hash", "noop", "fleet", "serve", "vulkan",
         "ondemand", "gateway", "relay", "relay-image", "split"]
TITLES = {
    "push": "1. Push throughput (controller to one device)",
    "download": "2. Controller download",
    "upstream": "3. Upstream bytes for N devices",
    "resume": "4. Resume waste",
    "hash": "5. Hash cost",
    "noop": "6. No-op re-run",
    "fleet": "7. Fleet scaling (first deploy)",
    "serve": "8. Serving overhead",
    "vulkan": "9. Vulkan against the CPU (the lab's software Vulkan device)",
    "ondemand": "10. Loading on demand (several models on one device)",
    "gateway": "11. Gateway latency and memory",
    "relay": "12. Redeploy past one uplink (the relay)",
    "relay-image": "13. The server image past one uplink",
    "split": "14. A model split over devices (llama.cpp RPC)",
}


def machine() -> list[str]:
    """This machine, as the doc lists it (kept with every result: figures are of one machine)."""
    info = {}
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            info["ram"] = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    osr = dict(line.rstrip().split("=", 1) for line in open("/etc/os-release") if "=" in line)
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return [
        f"- nproc: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}",
        f"- RAM: {info.get('ram', '?')}",
        f"- CPU: {info.get('cpu', '?')}",
        f"- kernel: {platform.release()}",
        f"- OS: {osr.get('PRETTY_NAME', '?').strip(chr(34))}, Python {platform.python_version()},"
        f" {ssh}",
        "- lab devices: containers on the same machine (same kernel, same 2 cores), reached "
        "over a docker bridge: the controller and every device share the CPUs.",
    ]


def commit() -> str:
    """The code measured: BENCH_COMMIT (a run from an exported snapshot), else git's HEAD."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", ".", ":!bench", ":!docs"],
                           capture_output=True, text=True).stdout.strip()
    return f"{head or 'unknown'}{' with uncommitted changes' if dirty else ''}"


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.1 else f"{x:.4f}"


def _stamp(r: dict[str, Any]) -> str:
    return (f"_{r['date']}, {r['seconds']:.0f} s, code at commit {r.get('commit') or 'unknown'}, "
            f"command: `{r.get('command') or 'python3 -m bench'}`._")


def render(res: dict[str, dict[str, Any]]) -> str:
    """The whole doc from the results by name ('_run': the latest full run)."""
    run = res.get("_run", {})
    lines = [
        "# Benchmarks",
        "",
        "Written by `python3 -m bench` (one benchmark: `python3 -m bench push`, `download`, "
        "`upstream`, `resume`, `hash`, `noop`, `fleet`, `serve`, `vulkan`, `ondemand`, "
        "`gateway`, `relay`, `relay-image`, `split`) from the latest result of "
        "each, kept in docs/benchmarks.json: a run of some benchmarks replaces those and "
        "keeps the others, each section says when and on which commit it was measured. "
        "Every figure is a ratio of "
        "two things measured side by side in the same run, interleaved over several rounds "
        "(median): this machine is small and shared, so absolute numbers swing from one "
        "minute to the next, ratios much less.",
        "",
        f"Latest full run: {run.get('date', 'never')}, "
        f"{run.get('seconds', 0) / 60:.1f} min in all, code at commit "
        f"{run.get('commit') or 'unknown'}, command: "
        "`python3 -m bench` from the repository root (as root, dockerd running).",
        "",
        "## Machine",
        "",
        *run.get("machine", ["- unknown (no full run recorded)"]),
        "",
        "## Latest figures",
        "",
        "| benchmark | ours | reference | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    for name in ORDER:
        for r in res.get(name, {}).get("rows", []):
            met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
            lines.append(f"| {r['benchmark']} | {r['ours']} | {r['reference']} | "
                         f"{_fmt(r['ratio'])} | {r['goal']} | {met} |")
    missed = [(name, r) for name in ORDER for r in res.get(name, {}).get("rows", [])
              if r["met"] is False]
    lines += ["", "## Missed goals", ""]
    lines += [f"- {r['benchmark']}: {_fmt(r['ratio'])} against {r['goal']} (evidence under "
              f"\"{TITLES[name]}\")" for name, r in missed] or ["None."]
    for name in ORDER:
        if name not in res:
            continue
        r = res[name]
        lines += ["", f"## {TITLES[name]}", "", _stamp(r)]
        if r.get("machine") and r["machine"] != run.get("machine"):
            lines += ["", "Measured on a machine other than (or changed since) the full run's:",
                      "", *r["machine"]]
        lines += ["", r["details"].strip()]
    return "\n".join(lines) + "\n"


def write(total: float, full: bool, measured: dict[str, str | list[str]]) -> None:
    """Record a full run (its time, commit, command, machine) if this was one; render the doc.

    `measured` holds this run's commit, command and machine, as stamped on its results.
    """
    if full:
        results.record({"name": "_run", "date": _now(), "seconds": total, **measured})
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render(results.load()))


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")
