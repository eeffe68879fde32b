"""Batch: several facts' commands in one shell command, each output to its own `process`."""

from __future__ import annotations

import subprocess

from pyinfra.api import FactBase

from llama_docker.tasks.batch import Batch, key


class NoNewline(FactBase):
    def command(self, word: str) -> str:
        return f"printf {word}"

    def process(self, output: list[str]) -> str:
        return "|".join(output)


class Lines(FactBase):
    default = list

    def command(self) -> str:
        return "echo one; echo; echo two"

    def process(self, output: list[str]) -> list[str]:
        return output


class Fails(FactBase):
    def command(self) -> str:
        return "echo half; exit 3"


class NeedsTool(FactBase):
    default = dict

    def requires_command(self) -> str:
        return "no-such-tool-here"

    def command(self) -> str:
        return "no-such-tool-here --list"


def run(facts: tuple) -> dict:
    batch = Batch()
    out = subprocess.run(["sh", "-c", batch.command(facts=facts)], capture_output=True,
                         text=True, check=True).stdout
    return batch.process(out.splitlines())


def test_each_output_goes_to_its_own_fact() -> None:
    got = run(((NoNewline, {"word": "200"}), (Lines, {}), (NoNewline, {"word": "x"})))
    assert got[key(NoNewline, {"word": "200"})] == "200"  # ran into the marker line
    assert got[key(Lines, {})] == ["one", "", "two"]
    assert got[key(NoNewline, {"word": "x"})] == "x"


def test_failed_fact_is_left_out_to_be_asked_alone() -> None:
    got = run(((Fails, {}), (NoNewline, {"word": "after"})))
    assert key(Fails, {}) not in got
    assert got[key(NoNewline, {"word": "after"})] == "after"


def test_missing_tool_gives_the_fact_default() -> None:
    assert run(((NeedsTool, {}),)) == {key(NeedsTool, {}): {}}


def test_text_file_read_in_a_batch_whatever_its_last_line(tmp_path) -> None:  # noqa: ANN001
    from llama_docker.tasks.facts import TextFile

    (tmp_path / "plain.json").write_text('{\n  "a": 1\n}\n')
    (tmp_path / "bare.json").write_text('{"a": 1}')  # no final newline
    (tmp_path / "empty.json").write_text("")
    paths = {n: str(tmp_path / n) for n in ("plain.json", "bare.json", "empty.json", "none",
                                            "")}
    got = run(tuple((TextFile, {"path": p}) for p in paths.values()))
    fact = {n: got[key(TextFile, {"path": p})] for n, p in paths.items()}
    assert fact["plain.json"] == ("file", '{\n  "a": 1\n}')
    assert fact["bare.json"] == ("file", '{"a": 1}')
    assert fact["empty.json"] == ("file", "")
    assert fact["none"] == ("absent", "")
    assert fact[""] == ("other", "")  # the folder itself: not a file to merge into
