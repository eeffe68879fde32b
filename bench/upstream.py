"""Upstream bytes: how much of the model crosses the internet link for N devices.

A real deploy to N lab devices with the model given as a URL (and its sha256) on the lab's
fault server, which counts every body byte it sends. Ours downloads once into the controller
cache and fans out over SSH. The two references are not run, they are computed (N x size):
"direct" (each device downloads the file itself) and the original llama-docker (each device
builds an image whose build downloads the model) both fetch the whole file once per device.
"""

from __future__ import annotations

import shutil

from tests.lab.fault_server import FaultServer

from .common import MIB, WORK, Lab, Result, Row, deploy, inventory, log, model, write_knobs

SHAPE = {"n_embd": 512, "n_ff": 2048, "n_layer": 2, "n_head": 8}  # about 32 MiB


def bench(L: Lab) -> Result:
    devs = L.devices(4)
    got: dict[int, tuple[int, int, float]] = {}
    with FaultServer() as srv:
        # N=4 first: on fresh devices it is also the first deploy (docker, image) of each.
        for n in (4, 1, 2):
            path, sha = model(f"upstream-{n}", seed=100 + n, **SHAPE)
            url_path = f"/models/upstream-{n}.gguf"
            srv.put(url_path, path.read_bytes())
            srv.reset_counters()
            folder = WORK / f"upstream-{n}"
            shutil.rmtree(folder / "cache", ignore_errors=True)  # an empty controller cache
            inv = inventory(folder, devs[:n])
            write_knobs(folder, model={"name": f"upstream-{n}", "url": srv.url(url_path),
                                       "sha256": sha})
            log(f"deploy to {n} device(s), model from {srv.url(url_path)}")
            d = deploy(inv).ok()
            L.converged |= {x.name for x in devs[:n]}
            got[n] = (srv.stats(url_path).bytes, path.stat().st_size, d.seconds)
    rows = []
    for n in (1, 2, 4):
        sent, size, _ = got[n]
        rows.append(Row(f"upstream bytes, N={n}", f"{sent / size:.2f} model ({sent / MIB:.1f} MiB)",
                        f"direct and original: {n} model{'s' if n > 1 else ''} "
                        f"({n * size / MIB:.1f} MiB, computed)",
                        sent / (n * size), "exactly 1 model", sent == size))
    details = (
        f"A {got[1][1] / MIB:.1f} MiB generated model, served by the fault server with its "
        "sha256 in the model knob; a real `pyinfra -y INV deploy.py` to N lab devices with an "
        "empty controller cache each time (N=4 ran first, as the first deploy of fresh "
        "devices; N=1 and N=2 then switched devices to new models). Bytes are counted by the "
        "server. Ratio = upstream bytes / (N x size). The references are computed, not "
        "measured: direct mode and the original llama-docker (the model downloaded inside "
        "each device's image build) move the whole file once per device. Deploy wall times: "
        + ", ".join(f"N={n} {got[n][2]:.0f} s" for n in (4, 1, 2)) + ".")
    return Result("upstream", rows, details)
