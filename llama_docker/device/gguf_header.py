"""A model's shape from the first bytes of its GGUF file, as read on a device that holds it.

A new controller (another laptop, a cleared cache) need not download a model every device
already holds verified, but the run still needs the numbers that size its context cache
(fit.Shape): they decide the container's memory cap, so a guess would change the unit and
restart a converged server. They sit in the header's first key/values, so the device sends
its file's first HEADER_BYTES and they are read here, with the same rules as
transfer/gguf_shape.py's read of a whole file; anything this cannot tell for sure is None
(the run then downloads, as it always did).
"""

from __future__ import annotations

import base64
import binascii
import shlex
import struct
from collections.abc import Iterable

from llama_docker.device.fit import Shape

HEADER_BYTES = 64 << 10  # the shape keys come early; a tokenizer's arrays come after them
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_INTS = {0, 1, 2, 3, 4, 5, 10, 11}
_STRING, _ARRAY = 8, 9


class _Short(Exception):
    """The bytes end before the value does."""


def header_command(path: str) -> str:
    """Prints `size <bytes>` and the file's first HEADER_BYTES in base64; nothing when the
    file is not there. POSIX tools only (macOS included)."""
    q = shlex.quote(path)
    return (f"[ -f {q} ] || exit 0; echo \"size $(wc -c < {q} | tr -d ' ')\"; "
            f"head -c {HEADER_BYTES} {q} | base64")


def parse_output(lines: Iterable[str]) -> tuple[int | None, bytes]:
    """(file size, first bytes) from header_command's output; (None, b"") for nothing."""
    size, body = None, []
    for line in lines:
        if line.startswith("size "):
            word = line[5:].strip()
            size = int(word) if word.isdigit() else None
        else:
            body.append(line.strip())
    try:
        return size, base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        return size, b""


def shape_from_header(data: bytes) -> Shape | None:
    """The shape the header names, or None unless it can be told for sure from `data`."""
    try:
        values, complete = _key_values(data)
    except (_Short, ValueError, struct.error):
        return None
    arch = values.get("general.architecture")
    if not isinstance(arch, str):
        return None
    names = [f"{arch}.{k}" for k in ("block_count", "embedding_length", "attention.head_count",
                                     "attention.head_count_kv")]
    if not complete and not all(n in values for n in names):
        return None  # the missing key may be past the bytes read: not known to be absent
    raw = [values.get(n) for n in names]
    if any(v is not None and not isinstance(v, int) for v in raw):
        return None  # an array or a float where a count belongs: leave it to the file
    n_layer, n_embd, n_head, n_head_kv = (v if isinstance(v, int) else 0 for v in raw)
    if not (n_layer and n_embd and n_head):
        return None
    return Shape(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv or n_head)


def _key_values(data: bytes) -> tuple[dict[str, object], bool]:
    """Every key/value the bytes hold (arrays as a marker), and whether that is all of them."""
    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    version = struct.unpack_from("<I", data, 4)[0]
    if version not in (2, 3):  # 1 is long gone; a big-endian file reads as a huge number
        raise ValueError(f"GGUF version {version}")
    count = struct.unpack_from("<Q", data, 16)[0]
    pos, values = 24, {}
    for _ in range(count):
        try:
            key, pos = _string(data, pos)
            kind, pos = _u32(data, pos)
            values[key], pos = _value(data, pos, kind)
        except _Short:
            return values, False
    return values, True


def _need(data: bytes, pos: int, n: int) -> None:
    if pos + n > len(data):
        raise _Short


def _u32(data: bytes, pos: int) -> tuple[int, int]:
    _need(data, pos, 4)
    return struct.unpack_from("<I", data, pos)[0], pos + 4


def _string(data: bytes, pos: int) -> tuple[str, int]:
    _need(data, pos, 8)
    n = struct.unpack_from("<Q", data, pos)[0]
    _need(data, pos + 8, n)
    return data[pos + 8:pos + 8 + n].decode("utf-8", errors="replace"), pos + 8 + n


def _value(data: bytes, pos: int, kind: int) -> tuple[object, int]:
    if kind == _STRING:
        return _string(data, pos)
    if kind == _ARRAY:
        inner, pos = _u32(data, pos)
        _need(data, pos, 8)
        n = struct.unpack_from("<Q", data, pos)[0]
        pos += 8
        for _ in range(n):
            _, pos = _value(data, pos, inner)
        return [], pos  # its items are never a shape number
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise ValueError(f"GGUF value type {kind}")
    size = struct.calcsize(fmt)
    _need(data, pos, size)
    value = struct.unpack_from(fmt, data, pos)[0]
    return (int(value) if kind in _INTS else float(value)), pos + size
