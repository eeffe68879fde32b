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
