"""Hash cost: bytes read for hashing per byte delivered, controller and devices, run and re-run.

Counted, not inferred: the deploy runs under `python -m bench.counted` (wraps the sha256 of
llama_docker's fetch and hashing modules), and each device gets counting `openssl` and
`sha256sum` first on PATH (the push verifies with `openssl dgst -sha256`, else `sha256sum`).
The goal: each side hashes a model once on the
first run, and a re-run hashes nothing (markers remember what was verified).
"""

from __future__ import annotations

import shutil

from tests.lab.fault_server import FaultServer

from .common import (
    HASH_TOOLS,
    WORK,
    Lab,
    Result,
    Row,
    count_device_hashing,
    deploy,
    device_hashed,
    inventory,
    log,
    model,
    reset_device_hashing,
    write_knobs,
)
from .upstream import SHAPE

N = 2  # enough to show the controller hashes once for several devices


def bench(L: Lab) -> Result:
    devs = L.converge(N)
    for d in devs:
        count_device_hashing(d)
    out: dict[str, list[tuple[float, float]]] = {}
    with FaultServer() as srv:
        for kind, seed in (("url", 201), ("path", 202)):
            path, sha = model(f"hash-{kind}", seed=seed, **SHAPE)
            size = path.stat().st_size
            spec: dict[str, object] = {"name": f"hash-{kind}", "sha256": sha}
            if kind == "url":
                srv.put("/hash.gguf", path.read_bytes())
                spec["url"] = srv.url("/hash.gguf")
            else:
                spec["path"] = str(path)
            folder = WORK / f"hash-{kind}"
            shutil.rmtree(folder / "cache", ignore_errors=True)
            inv = inventory(folder, devs)
            write_knobs(folder, model=spec)
            out[kind] = []
            for attempt in ("first run", "re-run"):
                for d in devs:
                    reset_device_hashing(d)
                counter = folder / "hashed"
                log(f"{kind} model, {attempt} on {N} devices")
                deploy(inv, counted=counter).ok()
                ctl = int(counter.read_text().split()[0])
                dev = max(device_hashed(d) for d in devs)
                out[kind].append((ctl / size, dev / size))
    for d in devs:
        d.exec("rm", "-f", *(f"/usr/local/bin/{t}" for t in HASH_TOOLS))
    rows = []
    for kind, label in (("url", "model from a URL"), ("path", "model from a local path")):
        (c1, d1), (c2, d2) = out[kind]
        rows.append(Row(f"hash cost, {label}, first run", f"controller {c1:.2f}, device {d1:.2f}",
                        "1 and 1 (once per side)", max(c1, d1), "1.00",
                        round(c1, 3) == 1 and round(d1, 3) == 1))
        rows.append(Row(f"hash cost, {label}, re-run", f"controller {c2:.2f}, device {d2:.2f}",
                        "0 and 0", max(c2, d2), "0", c2 == 0 and d2 == 0))
    details = (
        f"Bytes hashed / model size, on the controller and on the busiest of {N} lab devices, "
        "for a first deploy of a new model and an immediate re-run (`pyinfra -y`). "
        "For a URL the controller hashes while downloading (no second read); for a path it "
        "reads the file once and writes a marker keyed by path, size and mtime. Each device "
        "hashes what it received once, then writes `<sha256>.ok`; a re-run checks markers "
        "only. The ratio column is the larger of the two sides.")
    return Result("hash", rows, details)
