"""Pruning the device's model store."""

from __future__ import annotations

from llama_docker.device.store import after_switch, to_prune

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


def test_after_switch_counts_the_model_this_run_brings() -> None:
    files, links = after_switch([B, C], {"current.gguf": B, "previous.gguf": C},
                                {"current.gguf": A})
    assert files == [A, B, C]
    assert links == {"current.gguf": A, "previous.gguf": B}
    # so a prune in the same run leaves exactly `keep`, and the next run has nothing to do
    assert to_prune(files, set(links.values()), keep=2) == [C]
    files, links = after_switch([A, B], links, {"current.gguf": A})
    assert to_prune(files, set(links.values()), keep=2) == []


def test_after_switch_to_the_served_model_changes_nothing() -> None:
    links = {"current.gguf": A, "previous.gguf": B}
    assert after_switch([A, B], links, {"current.gguf": A}) == ([A, B], links)


def test_after_switch_projector_links_move_with_their_own_previous() -> None:
    _, links = after_switch([], {"current.gguf": A, "current-mmproj.gguf": B},
                            {"current.gguf": C, "current-mmproj.gguf": D})
    assert links == {"current.gguf": C, "previous.gguf": A,
                     "current-mmproj.gguf": D, "previous-mmproj.gguf": B}
