"""The project's data folders (files/, group_data/), wherever the code runs from.

A wheel carries them inside the package (pyproject maps them there); a checkout, installed
editable or not, keeps them at the top level beside this package. One copy either way.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # llama_docker/


def folder(name: str) -> Path:
    """`files` or `group_data`: inside the installed package, else the checkout's own."""
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name
