"""Push throughput: push() to one lab device against scp of the same file, interleaved.

push() does more than scp: it checks the remote size first (resume) and hashes the file on
the device after receiving it. The hash is timed apart (by wrapping push's remote-command
runner), so the table shows the transfer alone and the transfer with its verification.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import paramiko

import llama_docker.push as push_mod
from llama_docker.push import SshTarget, Store, push

from .common import (
    MIB,
    QUICK,
    WORK,
    Lab,
    Result,
    Row,
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


class HashClock:
    """Wraps push's remote runner to time the on-device hash apart from the transfer."""

    # The runner's name in llama_docker.push (it was renamed once: accept both).
    NAME = "run_remote" if hasattr(push_mod, "run_remote") else "_run"

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig = getattr(push_mod, self.NAME)

    def __enter__(self) -> HashClock:
        def timed_run(client: paramiko.SSHClient, cmd: str, timeout: float = 3600
                      ) -> tuple[int, str, str]:
            t = time.perf_counter()
            res = self._orig(client, cmd, timeout)
            if cmd.startswith(("sha256sum ", "openssl dgst")):
                self.seconds += time.perf_counter() - t
            return res

        setattr(push_mod, self.NAME, timed_run)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(push_mod, self.NAME, self._orig)


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
    hash_s: dict[str, list[float]] = {"push-ssh": [], "push-paramiko": []}
    ciphers: set[str] = set()

    def our_push(name: str, via: SshTarget | None) -> float:
        client = dev.paramiko()  # a fresh connection, as pyinfra's is: paramiko's defaults
        try:
            with HashClock() as clock:
                t = timed(lambda: push(client, local, sha, store, "bench", via, aes))
            if via is None:
                ciphers.add(client.get_transport().local_cipher)  # type: ignore[union-attr]
        finally:
            client.close()
        hash_s[name].append(clock.seconds)
        return t

    def clean() -> None:
        dev.exec("sh", "-c", f"rm -f {ROOT}/* && sync")

    variants = {
        "push-ssh": lambda: our_push("push-ssh", target),
        "push-paramiko": lambda: our_push("push-paramiko", None),
        "scp": lambda: timed(lambda: run([*scp, str(local), dest])),
        "scp-aes": lambda: timed(lambda: run([*scp, "-c", "aes128-gcm@openssh.com", str(local),
                                              dest])),
    }
    clean()
    try:
        t = interleave(variants, rounds(3), between=clean)
    finally:
        clean()
        dev.exec("rm", "-rf", ROOT)
    xfer = {k: [a - b for a, b in zip(t[k], hash_s[k], strict=True)] for k in hash_s}
    cipher = "AES-GCM first" if aes else "ChaCha20 first"
    scp_rate = f"scp {mbs(size, med(t['scp']))}"
    rows = [
        Row("push via OpenSSH, with on-device sha256", mbs(size, med(t["push-ssh"])),
            scp_rate, ratio_rounds(t["scp"], t["push-ssh"]), ">= 0.95", None),
        Row("push via OpenSSH, transfer only", mbs(size, med(xfer["push-ssh"])),
            scp_rate, ratio_rounds(t["scp"], xfer["push-ssh"]), ">= 0.95", None),
        Row("push via OpenSSH, transfer only", mbs(size, med(xfer["push-ssh"])),
            f"scp -c aes128-gcm {mbs(size, med(t['scp-aes']))}",
            ratio_rounds(t["scp-aes"], xfer["push-ssh"]), "report (same cipher as ours)", None),
        Row("fallback push via paramiko, transfer only", mbs(size, med(xfer["push-paramiko"])),
            scp_rate, ratio_rounds(t["scp"], xfer["push-paramiko"]),
            "evidence (no ssh client)", None),
        Row("fallback push via paramiko, with on-device sha256",
            mbs(size, med(t["push-paramiko"])), scp_rate,
            ratio_rounds(t["scp"], t["push-paramiko"]), "evidence (no ssh client)", None),
    ]
    for r in rows:
        if r.goal == ">= 0.95":
            r.met = r.ratio is not None and r.ratio >= 0.95
    table = "\n".join(f"| {k} | " + " | ".join(f"{x:.2f}" for x in v) + f" | {med(v):.2f} |"
                      for k, v in [*t.items(), *(("sha256 in " + k, v) for k, v in
                                                 hash_s.items())])
    details = (
        f"{size // MIB} MiB of random bytes to `{ROOT}` on one lab device (its disk), "
        f"{len(t['scp'])} interleaved rounds, each push on a fresh connection. push() via "
        f"OpenSSH uses the deploy's cipher choice for this CPU ({cipher}; the device has AES: "
        f"{aes}). The fallback via paramiko (used when the controller has no `ssh` or the "
        "inventory uses a password) uses pyinfra's paramiko connection as it is (cipher seen "
        f"after the push: {', '.join(sorted(ciphers))}; re-keying it to AES-GCM measured 0.87 "
        "of scp, transfer only, but deadlocked paramiko now and then, so it is not done). "
        "scp uses OpenSSH's default "
        "(chacha20-poly1305). Both pushes verify with `openssl dgst -sha256` on the device "
        "(sha256sum where openssl is absent). Seconds per round:\n\n"
        "| variant | " + " | ".join(f"round {i + 1}" for i in range(len(t["scp"])))
        + " | median |\n|---|" + "---|" * (len(t["scp"]) + 1) + "\n" + table + "\n\n"
        f"Where the time goes: push() hashes on the device after the last byte, so its time "
        f"is transfer + hash, one after the other. The device's hash of {size // MIB} MiB took "
        f"{med(hash_s['push-ssh']):.2f} s (median, {mbs(size, med(hash_s['push-ssh']))}; "
        "controller and device share these 2 cores). coreutils' sha256sum uses no SHA "
        "instructions; OpenSSL uses them where the CPU has them (x86 SHA-NI, ARMv8 crypto "
        "extensions; a Raspberry Pi 4 has neither, a Pi 5 has the ARM ones). Against scp's "
        "default, push() gains by its cipher choice (compare the row against "
        "`scp -c aes128-gcm`). paramiko moves bytes in Python (its packetizer, one thread): "
        "the fallback works, slower.")
    rate = size / med(t["push-ssh"])
    return Result("push", rows, details, extra={"rate": rate})
