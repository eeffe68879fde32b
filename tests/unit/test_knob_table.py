"""The README's knob table and the knob file say the same: every knob has a row, every row a
knob (pyinfra's own connection settings in the knob file are not knobs)."""

from __future__ import annotations

import re
from pathlib import Path

from llama_docker.knobs.config import PYINFRA_PREFIXES
from llama_docker.knobs.defaults import DEFAULTS

README = Path(__file__).resolve().parents[2] / "README.md"


def table_knobs() -> set[str]:
    text = README.read_text()
    section = text[text.index("\n## Knobs\n"):]
    section = section[:section.index("\n## ", 1)]
    first_cells = re.findall(r"^\| (`[^|]+) \|", section, flags=re.M)
    return {name for cell in first_cells for name in re.findall(r"`([a-z0-9_]+)`", cell)}


def test_every_knob_has_a_row_and_every_row_a_knob() -> None:
    knobs = {k for k in DEFAULTS if not k.startswith(PYINFRA_PREFIXES)}
    rows = table_knobs()
    assert knobs - rows == set(), "knobs missing from the README's table"
    assert rows - knobs == set(), "rows of the README's table that are no knob"
