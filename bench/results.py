"""The latest result of every benchmark, kept in the repository (docs/benchmarks.json).

Committed, not in the lab's state folder, so that a partial run on any checkout (a fresh
clone too) replaces only what it measured and keeps every other figure with its own date,
commit and command. No lab import here: the unit tests read this without starting anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FILE = REPO / "docs" / "benchmarks.json"


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every benchmark's latest result by name ('_run' is the latest full run)."""
    path = path or FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise SystemExit(f"bench: {path} is not valid JSON ({exc}); fix or restore it "
                         "from git") from exc
    if not isinstance(data, dict):
        raise SystemExit(f"bench: {path} must hold a JSON object of results by name")
    return data


def record(result: dict[str, Any], path: Path | None = None) -> None:
    """Replace one benchmark's result, keeping every other one as it is."""
    path = path or FILE
    data = load(path)
    data[result["name"]] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
