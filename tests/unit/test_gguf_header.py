"""A model's shape from its header's first bytes (what a device sends), against the whole
file's read (transfer/gguf_shape.py): the same, or None when the bytes cannot tell."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import gguf
import numpy as np

from llama_docker.device.gguf_header import (
    HEADER_BYTES,
    header_command,
    parse_output,
    shape_from_header,
)
from llama_docker.transfer.gguf_shape import read_shape
from tests.lab.tiny_model import write_tiny_gguf


def _gguf(path: Path, kv_last: bool, padding: int = 0) -> None:
    """A llama GGUF whose head_count_kv comes first or after `padding` bytes of other keys."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_embedding_length(512)
    w.add_head_count(8)
    if not kv_last:
        w.add_head_count_kv(2)
    w.add_string("general.description", "x" * padding)
    if kv_last:
        w.add_head_count_kv(2)
    w.add_tensor("weight", np.zeros(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_the_first_bytes_say_what_the_whole_file_says(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, seed=5, n_embd=256, n_ff=512, n_head=4)
    data = path.read_bytes()
    assert shape_from_header(data[:HEADER_BYTES]) == read_shape(path) is not None


def test_a_key_past_the_bytes_read_is_not_taken_for_absent(tmp_path: Path) -> None:
    late = tmp_path / "late.gguf"
    _gguf(late, kv_last=True, padding=HEADER_BYTES)
    assert read_shape(late).n_head_kv == 2  # type: ignore[union-attr]
    assert shape_from_header(late.read_bytes()[:HEADER_BYTES]) is None  # not 8 (n_head)
    assert shape_from_header(late.read_bytes()) == read_shape(late)  # all of it: known
    early = tmp_path / "early.gguf"
    _gguf(early, kv_last=False, padding=HEADER_BYTES)
    assert shape_from_header(early.read_bytes()[:HEADER_BYTES]) == read_shape(early)


def test_bytes_that_are_not_a_gguf_header_say_nothing() -> None:
    assert shape_from_header(b"") is None
    assert shape_from_header(b"not a model at all" * 100) is None
    assert shape_from_header(b"GGUF\x00\x00\x00\x03" + b"\xff" * 40) is None


def test_the_device_command_sends_size_and_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(range(256)) * 1024)  # 256 KiB: more than is sent
    out = subprocess.run(["sh", "-c", header_command(str(path))], capture_output=True,
                         text=True, check=True, timeout=30).stdout.splitlines()
    size, data = parse_output(out)
    assert size == 256 * 1024 and data == path.read_bytes()[:HEADER_BYTES]
    none = subprocess.run(["sh", "-c", header_command(str(tmp_path / "absent.gguf"))],
                          capture_output=True, text=True, check=True, timeout=30)
    assert none.stdout == "" and parse_output([]) == (None, b"")
    assert parse_output(["size 3", base64.b64encode(b"abc").decode()]) == (3, b"abc")
