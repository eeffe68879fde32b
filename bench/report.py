"""docs/BENCHMARKS.md from the latest result of every benchmark (kept in the lab folder)."""

from __future__ import annotations

import os
import platform
import subprocess

from .common import REPO, Result, load_results, save_result

DOC = REPO / "docs" / "BENCHMARKS.md"
ORDER = ["push", "download", "upstream", "resume", "hash", "noop", "fleet", "serve"]
TITLES = {
    "push": "1. Push throughput (controller to one device)",
    "download": "2. Controller download",
    "upstream": "3. Upstream bytes for N devices",
    "resume": "4. Resume waste",
    "hash": "5. Hash cost",
    "noop": "6. No-op re-run",
    "fleet": "7. Fleet scaling (first deploy)",
    "serve": "8. Serving overhead",
}


def _machine() -> list[str]:
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


def _commit() -> str:
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


def write(total: float, full: bool) -> None:
    if full:
        save_result(Result("_run", [], seconds=total, extra={"commit": _commit()}))
    res = load_results()
    run = res.get("_run", {})
    lines = [
        "# Benchmarks",
        "",
        "Written by `python3 -m bench` (one benchmark: `python3 -m bench push`, `download`, "
        "`upstream`, `resume`, `hash`, `noop`, `fleet`, `serve`). Every figure is a ratio of "
        "two things measured side by side in the same run, interleaved over several rounds "
        "(median): this machine is small and shared, so absolute numbers swing from one "
        "minute to the next, ratios much less.",
        "",
        f"Latest full run: {run.get('date', 'never')}, "
        f"{run.get('seconds', 0) / 60:.1f} min in all, code at commit "
        f"{run.get('extra', {}).get('commit') or _commit()}, command: "
        "`python3 -m bench` from the repository root (as root, dockerd running).",
        "",
        "## Machine",
        "",
        *_machine(),
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
        lines += ["", f"## {TITLES[name]}", "",
                  f"_{r['date']}, {r['seconds']:.0f} s._", "", r["details"].strip()]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
