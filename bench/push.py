"""Push throughput: push() to one lab device against scp of the same file, interleaved.

push() does more than scp: it checks the remote size first (resume) and verifies the sha256
on the device. A fresh push hashes its bytes as they arrive; a resumed one hashes the whole
.part after the last byte. Both are timed against the same push with no hash at all
(transfer only) in the same run, so the table shows what verification costs.
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import llama_docker.device.store as store_mod
import llama_docker.transfer.push as push_mod
from llama_docker.device.store import Store
from llama_docker.transfer.push import SshTarget, push

from .common import (
    MIB,
    QUICK,
    WORK,
    Lab,
    Result,
    Row,
    idle_cpu_seconds,
    interleave,
    lab,
    mbs,
    med,
    ratio_rounds,
    rounds,
    run,
    ssh_argv,
    timed,
)

ROOT = "/var/tmp/bench-push"  # on the device's disk (its overlay root), not a tmpfs
LINK_MBIT = 500  # the shaped link of the second half (tc tbf into the device)


def random_file(name: str, size: int) -> tuple[Path, str]:
    """Incompressible bytes (a model is), kept between runs; returns path and sha256."""
    path = WORK / name
    sha_file = path.with_name(path.name + ".sha256")
    if path.exists() and path.stat().st_size == size and sha_file.exists():
        return path, sha_file.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // (16 * MIB)):
            block = os.urandom(16 * MIB)
            h.update(block)
            f.write(block)
    sha_file.write_text(h.hexdigest())
    return path, h.hexdigest()


def device_has_aes(dev: lab.Device) -> bool:
    """The same test as the deploy's CpuHasAes fact."""
    return dev.exec("sh", "-c", "grep -qiwE 'aes|aes-gcm' /proc/cpuinfo && echo yes || echo no"
                    ).strip() == "yes"


def target_for(dev: lab.Device) -> SshTarget:
    data = dev.host_data()
    return SshTarget(hostname="127.0.0.1", port=dev.ssh_port, user=dev.user,
                     key=data["ssh_key"], known_hosts=data["ssh_known_hosts_file"])


MODES = ("arrival", "after", "none")  # hashed as it arrives, after the last byte, not at all


@contextmanager
def hashing(mode: str, seconds: list[float]) -> Iterator[None]:
    """push() as it is ("arrival": a fresh push is hashed on its way), as a resumed push
    verifies ("after": appended, then the whole .part hashed, its time added to `seconds`),
    or with no verification ("none": the transfer alone)."""
    verify = push_mod.verify_and_store

    def after(*args: object) -> None:
        t = time.perf_counter()
        verify(*args)  # type: ignore[arg-type]
        seconds.append(time.perf_counter() - t)

    if mode == "arrival":
        yield
        return
    # the device command's choice (device/store.py): append, then hash after the last byte
    with mock.patch.object(store_mod, "hashed_on_arrival", lambda offset: False), \
            mock.patch.object(push_mod, "verify_and_store",
                              after if mode == "after" else lambda *args: None):
        yield


class CpuMeter:
    """CPU seconds spent while a variant ran: by the device's container (its cgroup, read on
    this machine), by this process and its children (ssh, paramiko's thread), and left idle
    on the whole machine (other work on it shares the cores)."""

    def __init__(self, dev: lab.Device) -> None:
        cid = run(["docker", "inspect", "-f", "{{.Id}}", dev.container]).strip()
        self.cgroup = next((p for p in (
            Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage"),  # cgroup v1
            Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"))  # v2
            if p.exists()), None)
        self.seen: dict[str, list[tuple[float, float, float]]] = {}

    def _device(self) -> float:
        if self.cgroup is None:
            return float("nan")
        text = self.cgroup.read_text()
        if self.cgroup.name == "cpu.stat":
            return int(text.split("usage_usec")[1].split()[0]) / 1e6
        return int(text) / 1e9

    @staticmethod
    def _here() -> float:
        return sum(getattr(resource.getrusage(who), f) for who in
                   (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    def wrap(self, name: str, variant: Callable[[], float]) -> Callable[[], float]:
        def measured() -> float:
            before = (self._device(), self._here(), idle_cpu_seconds())
            t = variant()
            after = (self._device(), self._here(), idle_cpu_seconds())
            self.seen.setdefault(name, []).append(
                tuple(b - a for a, b in zip(before, after, strict=True)))  # type: ignore[arg-type]
            return t
        return measured

    def table(self, wall: dict[str, list[float]]) -> str:
        rows = []
        for name, xs in self.seen.items():
            dev, here, idle = (med([x[i] for x in xs]) for i in range(3))
            rows.append(f"| {name} | {med(wall[name]):.2f} | {dev:.2f} | {here:.2f} | "
                        f"{idle:.2f} |")
        return ("| variant | wall s | device CPU s | controller CPU s (ssh, paramiko) | "
                "machine idle CPU s |\n|---|---|---|---|---|\n" + "\n".join(rows))


def bench(L: Lab) -> Result:
    (dev,) = L.devices(1)
    size = (256 if QUICK else 1024) * MIB
    local, sha = random_file(f"push-{size // MIB}m.bin", size)
    aes = device_has_aes(dev)
    target = target_for(dev)
    store = Store(ROOT)
    dest = f"{dev.user}@127.0.0.1:{ROOT}/scp.bin"
    scp = ["scp", "-q", "-P", str(dev.ssh_port), *ssh_argv(dev)]
    dev.exec("sh", "-c", f"mkdir -p {ROOT} && chown {dev.user} {ROOT}")
    after_s: list[float] = []  # the whole-file hash of "after" pushes
    after_link: list[float] = []  # the same, on the shaped link
    ciphers: set[str] = set()

    def our_push(via: SshTarget | None, mode: str, hash_s: list[float] = after_s) -> float:
        client = dev.paramiko()  # a fresh connection, as pyinfra's is: paramiko's defaults
        try:
            with hashing(mode, hash_s):
                t = timed(lambda: push(client, local, sha, store, "bench", via, aes))
            if via is None:
                ciphers.add(client.get_transport().local_cipher)  # type: ignore[union-attr]
        finally:
            client.close()
        return t

    def clean() -> None:
        dev.exec("sh", "-c", f"rm -f {ROOT}/* && sync")

    variants = {
        "push-ssh": lambda: our_push(target, "arrival"),
        "push-ssh-transfer": lambda: our_push(target, "none"),
        "push-ssh-after": lambda: our_push(target, "after"),
        "push-paramiko": lambda: our_push(None, "arrival"),
        "push-paramiko-transfer": lambda: our_push(None, "none"),
        "scp": lambda: timed(lambda: run([*scp, str(local), dest])),
        "scp-aes": lambda: timed(lambda: run([*scp, "-c", "aes128-gcm@openssh.com", str(local),
                                              dest])),
    }
    meter = CpuMeter(dev)
    variants = {k: meter.wrap(k, v) for k, v in variants.items()}
    # The same three pushes where the link, not the CPU, is the limit (as to a device on
    # Ethernet or Wi-Fi): there the hash of a fresh push has spare cycles to run beside it.
    def linked(mode: str) -> Callable[[], float]:
        return lambda: our_push(target, mode, after_link)

    on_link = {f"{name}@link": meter.wrap(f"{name}@link", linked(mode))
               for name, mode in (("push-ssh", "arrival"), ("push-ssh-transfer", "none"),
                                  ("push-ssh-after", "after"))}
    clean()
    try:
        t = interleave(variants, rounds(4), between=clean)
        dev.limit_rate(LINK_MBIT)
        t.update(interleave(on_link, rounds(3), between=clean))
    finally:
        dev.limit_rate(None)
        clean()
        dev.exec("rm", "-rf", ROOT)
    cipher = "AES-GCM first" if aes else "ChaCha20 first"
    scp_rate = f"scp {mbs(size, med(t['scp']))}"
    xfer_ssh = f"transfer only {mbs(size, med(t['push-ssh-transfer']))}"
    xfer_pm = f"transfer only {mbs(size, med(t['push-paramiko-transfer']))}"
    rows = [
        Row("push via OpenSSH, verified as it arrives", mbs(size, med(t["push-ssh"])),
            xfer_ssh, ratio_rounds(t["push-ssh-transfer"], t["push-ssh"]), ">= 0.95", None),
        Row("push via OpenSSH, verified as it arrives", mbs(size, med(t["push-ssh"])),
            scp_rate, ratio_rounds(t["scp"], t["push-ssh"]), ">= 0.95", None),
        Row("push via OpenSSH, hashed after the last byte (as a resumed push)",
            mbs(size, med(t["push-ssh-after"])), xfer_ssh,
            ratio_rounds(t["push-ssh-transfer"], t["push-ssh-after"]), "report", None),
        Row("push via OpenSSH, transfer only", mbs(size, med(t["push-ssh-transfer"])),
            scp_rate, ratio_rounds(t["scp"], t["push-ssh-transfer"]), ">= 0.95", None),
        Row("push via OpenSSH, transfer only", mbs(size, med(t["push-ssh-transfer"])),
            f"scp -c aes128-gcm {mbs(size, med(t['scp-aes']))}",
            ratio_rounds(t["scp-aes"], t["push-ssh-transfer"]), "report (same cipher as ours)",
            None),
        Row(f"push via OpenSSH on a {LINK_MBIT} Mbit/s link, verified as it arrives",
            mbs(size, med(t["push-ssh@link"])),
            f"transfer only {mbs(size, med(t['push-ssh-transfer@link']))}",
            ratio_rounds(t["push-ssh-transfer@link"], t["push-ssh@link"]), "report", None),
        Row(f"push via OpenSSH on a {LINK_MBIT} Mbit/s link, hashed after the last byte",
            mbs(size, med(t["push-ssh-after@link"])),
            f"transfer only {mbs(size, med(t['push-ssh-transfer@link']))}",
            ratio_rounds(t["push-ssh-transfer@link"], t["push-ssh-after@link"]), "report",
            None),
        Row("fallback push via paramiko, verified as it arrives",
            mbs(size, med(t["push-paramiko"])), xfer_pm,
            ratio_rounds(t["push-paramiko-transfer"], t["push-paramiko"]),
            "evidence (no ssh client)", None),
        Row("fallback push via paramiko, verified as it arrives",
            mbs(size, med(t["push-paramiko"])), scp_rate,
            ratio_rounds(t["scp"], t["push-paramiko"]), "evidence (no ssh client)", None),
    ]
    for r in rows:
        if r.goal == ">= 0.95":
            r.met = r.ratio is not None and r.ratio >= 0.95
    n = len(t["scp"])
    table = "\n".join(f"| {k} | " + " | ".join([*(f"{x:.2f}" for x in v), *["-"] * (n - len(v))])
                      + f" | {med(v):.2f} |"
                      for k, v in [*t.items(), ("sha256 in push-ssh-after", after_s),
                                 ("sha256 in push-ssh-after@link", after_link)])
    details = (
        f"{size // MIB} MiB of random bytes to `{ROOT}` on one lab device (its disk), "
        f"{len(t['scp'])} interleaved rounds, each push on a fresh connection. push-ssh is "
        "push() as a deploy runs it on a fresh push: the device writes the bytes to the .part "
        "with `tee` and hands the same bytes to `openssl dgst -sha256` (sha256sum where openssl "
        "is absent), then stores the file in the same locked command. push-ssh-after appends "
        "with `cat` and hashes the whole .part after the last byte, as a resumed push does. "
        "push-ssh-transfer is the same push with no hash at all. The `@link` rows repeat "
        f"these three with the device's link shaped to {LINK_MBIT} Mbit/s (tc tbf). push() via "
        f"OpenSSH uses the deploy's cipher choice for this CPU ({cipher}; the device has AES: "
        f"{aes}). The fallback via paramiko (used when the controller has no `ssh` or the "
        "inventory uses a password) sends through the same device command on pyinfra's "
        f"paramiko connection as it is (cipher seen after the push: {', '.join(sorted(ciphers))}"
        "; re-keying it to AES-GCM measured 0.87 of scp, transfer only, but deadlocked "
        "paramiko now and then, so it is not done). scp uses OpenSSH's default "
        "(chacha20-poly1305). Seconds per round:\n\n"
        "| variant | " + " | ".join(f"round {i + 1}" for i in range(len(t["scp"])))
        + " | median |\n|---|" + "---|" * (len(t["scp"]) + 1) + "\n" + table + "\n\n"
        "Where the time goes: hashed after the last byte, a push costs transfer + hash, one "
        f"after the other: the device's hash of {size // MIB} MiB took "
        f"{med(after_s):.2f} s (median, {mbs(size, med(after_s))}). Hashed as it arrives, "
        "the hash runs beside the transfer and its cost is the CPU it takes from it: "
        "controller and device share these 2 cores, with whatever else runs on the machine. "
        "CPU seconds per variant (medians; device: its container's cgroup, so sshd, tee, "
        "openssl, cat; machine idle: what no process used while it ran, out of 2 cores x "
        "wall time):\n\n" + meter.table(t) + "\n\n"
        "coreutils' sha256sum uses no SHA "
        "instructions; OpenSSL uses them where the CPU has them (x86 SHA-NI, ARMv8 crypto "
        "extensions; a Raspberry Pi 4 has neither, a Pi 5 has the ARM ones). Against scp's "
        "default, push() gains by its cipher choice (compare the row against "
        "`scp -c aes128-gcm`). paramiko moves bytes in Python (its packetizer, one thread): "
        "the fallback works, slower.")
    rate = size / med(t["push-ssh"])
    return Result("push", rows, details, extra={"rate": rate})
