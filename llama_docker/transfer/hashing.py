"""sha256 of local files, computed once: a marker remembers what was verified."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tqdm import tqdm

from llama_docker.knobs.errors import VerifyError

CHUNK = 4 << 20


def sha256_file(path: Path, label: str = "") -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, leave=False,
                                     desc=label or f"sha256 {path.name}",
                                     disable=size < (64 << 20) or None) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify_once(path: Path, expected: str, marker_dir: Path) -> None:
    """Raise VerifyError unless `path` hashes to `expected`; hash only when it changed."""
    marker = marker_dir / f"{expected}.verified"
    stamp = _stamp(path)
    try:
        if json.loads(marker.read_text()) == stamp:
            return
    except (OSError, ValueError):
        pass
    got = sha256_file(path)
    if got != expected:
        raise VerifyError(f"{path} hashes {got}, expected {expected} (the sha256 in the "
                          "model knob): fix the knob or replace the file")
    marker_dir.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp))
    tmp.replace(marker)
