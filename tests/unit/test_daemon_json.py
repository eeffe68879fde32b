"""docker's daemon.json is the user's: the mirror is merged in, theirs kept, a broken file
refused untouched."""

from __future__ import annotations

import json

import pytest

from llama_docker.device.daemon_json import PATH, parse, with_mirror
from llama_docker.knobs.errors import RefusedError

MIRROR = "mirror.lan:5000"
OURS = {"registry-mirrors": ["http://mirror.lan:5000"], "insecure-registries": [MIRROR]}


def test_no_file_gets_only_the_mirror() -> None:
    assert json.loads(with_mirror(None, MIRROR) or "") == OURS


def test_their_keys_are_kept_and_ours_added() -> None:
    theirs = {"log-driver": "local", "log-opts": {"max-size": "10m"}, "debug": True}
    merged = json.loads(with_mirror(json.dumps(theirs), MIRROR) or "")
    assert merged == {**theirs, **OURS}
    assert list(merged)[:3] == list(theirs)  # their order, ours after


def test_their_list_entries_are_kept_beside_ours() -> None:
    theirs = {"registry-mirrors": ["https://mirror.example"],
              "insecure-registries": ["10.0.0.0/8"]}
    merged = json.loads(with_mirror(json.dumps(theirs), MIRROR) or "")
    assert merged == {"registry-mirrors": ["https://mirror.example", "http://mirror.lan:5000"],
                      "insecure-registries": ["10.0.0.0/8", MIRROR]}


@pytest.mark.parametrize(("mirrors", "insecure"), [
    (["http://mirror.lan:5000"], [MIRROR]),
    (["http://mirror.lan:5000/"], ["http://mirror.lan:5000"]),  # as docker compares them
])
def test_an_entry_already_there_is_not_added_again(mirrors: list, insecure: list) -> None:
    text = json.dumps({"registry-mirrors": mirrors, "insecure-registries": insecure})
    assert with_mirror(text, MIRROR) is None


def test_merge_is_idempotent_and_a_merged_file_is_not_rewritten() -> None:
    once = with_mirror('{"log-driver": "local"}', MIRROR)
    assert once is not None
    assert with_mirror(once, MIRROR) is None
    # however it is formatted: the content counts, not the bytes
    assert with_mirror(json.dumps(json.loads(once)), MIRROR) is None


def test_empty_file_is_an_empty_config_and_gets_the_mirror() -> None:
    assert json.loads(with_mirror("\n", MIRROR) or "") == OURS


@pytest.mark.parametrize(("text", "said"), [
    ('{"log-driver": "local",', "is not valid JSON (line 1 column 24"),
    ("log-driver: local", "is not valid JSON"),
    ('["a"]', "holds a JSON list, not an object"),
    ('{"registry-mirrors": "http://m"}', "'registry-mirrors' is not a list of strings"),
    ('{"insecure-registries": [5000]}', "'insecure-registries' is not a list of strings"),
])
def test_a_file_docker_could_not_read_is_refused_in_one_line(text: str, said: str) -> None:
    with pytest.raises(RefusedError) as err:
        with_mirror(text, MIRROR)
    msg = str(err.value)
    assert msg.startswith(PATH) and said in msg and "\n" not in msg
    assert "left as it is" in msg


def test_invalid_file_is_refused_even_without_a_mirror() -> None:
    with pytest.raises(RefusedError, match="not valid JSON"):
        parse("{", PATH)
    assert parse(None) == {} and parse('{"a": 1}') == {"a": 1}
