"""Pruning the device's model store."""

from __future__ import annotations

from llama_docker.store import to_prune

A, B, C, D = (c * 64 + ".gguf" for c in "abcd")


def test_linked_files_are_never_pruned() -> None:
    assert to_prune([A, B, C, D], linked={C, D}, keep=2) == [A, B]


def test_keep_counts_newest_beyond_links() -> None:
    assert to_prune([A, B, C, D], linked={D}, keep=3) == [C]


def test_links_and_strays_are_not_touched() -> None:
    names = ["current.gguf", A, A + ".part", "notes.txt", B]
    assert to_prune(names, linked={A}, keep=1) == [B]


def test_more_links_than_keep_keeps_all_links() -> None:
    assert to_prune([A, B, C], linked={A, B, C}, keep=1) == []
