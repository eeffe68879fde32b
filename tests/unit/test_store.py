"""The device's model store: pruning, and the one atomic link builder (run by this
machine's own sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from llama_docker.device.store import after_switch, link_commands, to_prune

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


def test_a_file_link_is_renamed_over_with_plain_mv(tmp_path: Path) -> None:
    (tmp_path / A).write_text("a")
    (tmp_path / B).write_text("b")
    for target in (A, B):
        cmd = link_commands(str(tmp_path), "current.gguf", target)
        assert " mv -f " in cmd  # no -T: BSD mv (macOS) has none
        subprocess.run(cmd, shell=True, check=True)
    assert os.readlink(tmp_path / "current.gguf") == B
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([A, B, "current.gguf"])


def test_a_folder_link_is_replaced_not_moved_into_the_folder(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    for target in ("one", "two"):
        subprocess.run(link_commands(str(tmp_path), "current", target, folder=True),
                       shell=True, check=True)
    assert os.readlink(tmp_path / "current") == "two"
    assert list((tmp_path / "one").iterdir()) == []  # plain mv would have put the link here
