"""Which docker package a Debian host uses: the engine the user installed, else docker.io."""

from __future__ import annotations

import pytest

from tasks.runtime.debian import engine


@pytest.mark.parametrize(("installed", "expected"), [
    ({}, "docker.io"),
    ({"docker.io": {"20.10.24"}}, "docker.io"),
    ({"docker-ce": {"5:27.3.1-1~debian.12~bookworm"}, "containerd.io": {"1.7.22-1"}},
     "docker-ce"),
    ({"moby-engine": {"27.3.1"}}, "moby-engine"),
    ({"docker-ce-cli": {"5:27.3.1"}}, "docker.io"),  # a client alone is no engine
])
def test_engine(installed: dict[str, set[str]], expected: str) -> None:
    assert engine(installed) == expected
