"""Push throughput: push() to one lab device against scp of the same file, interleaved.

push() does more than scp: it checks the remote size first (resume) and hashes the file on
the device after receiving it. The hash is timed apart (by wrapping push's remote-command
runner), so the table shows the transfer alone and the transfer with its verification.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
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
    ssh_client,
    timed,
)

OPENSSL = "openssl dgst -sha256 -r"  # prints "<hex> *<file>": push() reads the first word
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
    """Wraps push's remote runner to time the on-device `sha256sum` apart from the transfer."""

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
    client, gcm = ssh_client(dev), ssh_client(dev, gcm=True)
    store, fast = Store(ROOT), Store(ROOT, hash_cmd=OPENSSL)
    dest = f"{dev.user}@127.0.0.1:{ROOT}/scp.bin"
    scp = ["scp", "-q", "-P", str(dev.ssh_port), *ssh_argv(dev)]
    dev.exec("sh", "-c", f"mkdir -p {ROOT} && chown {dev.user} {ROOT}")
    hash_s: dict[str, list[float]] = {"push-ssh": [], "push-paramiko": [], "paramiko-gcm": [],
                                      "push-openssl": []}

    def our_push(name: str, via: SshTarget | None, c: paramiko.SSHClient = client,
                 st: Store = store) -> float:
        with HashClock() as clock:
            t = timed(lambda: push(c, local, sha, st, "bench", via, aes))
        hash_s[name].append(clock.seconds)
        return t

    def tee_hash() -> float:
        """Hash while receiving: the same ssh command, the device pipes through sha256sum."""
        with open(local, "rb") as f:
            t = time.perf_counter()
            out = subprocess.run([*target.argv(aes), f"tee -a {ROOT}/tee.part | sha256sum"],
                                 stdin=f, capture_output=True, text=True, timeout=600,
                                 check=True).stdout
            t = time.perf_counter() - t
        assert out.split()[0] == sha, out
        return t

    def clean() -> None:
        dev.exec("sh", "-c", f"rm -f {ROOT}/* && sync")

    variants = {
        "push-ssh": lambda: our_push("push-ssh", target),
        "push-openssl": lambda: our_push("push-openssl", target, st=fast),
        "push-paramiko": lambda: our_push("push-paramiko", None),
        "paramiko-gcm": lambda: our_push("paramiko-gcm", None, gcm),
        "scp": lambda: timed(lambda: run([*scp, str(local), dest])),
        "scp-aes": lambda: timed(lambda: run([*scp, "-c", "aes128-gcm@openssh.com", str(local),
                                              dest])),
        "tee-hash": tee_hash,
    }
    clean()
    try:
        t = interleave(variants, rounds(3), between=clean)
    finally:
        clean()
        dev.exec("rm", "-rf", ROOT)
        client.close()
        gcm.close()
    while_vs = ratio_rounds(t["push-ssh"], t["tee-hash"])
    xfer = {k: [a - b for a, b in zip(t[k], hash_s[k], strict=True)] for k in hash_s}
    cipher = "AES-GCM first" if aes else "ChaCha20 first"
    rows = [
        Row("push via OpenSSH, with on-device sha256", mbs(size, med(t["push-ssh"])),
            f"scp {mbs(size, med(t['scp']))}", ratio_rounds(t["scp"], t["push-ssh"]),
            ">= 0.95", None),
        Row("push via OpenSSH, transfer only", mbs(size, med(xfer["push-ssh"])),
            f"scp {mbs(size, med(t['scp']))}", ratio_rounds(t["scp"], xfer["push-ssh"]),
            ">= 0.95", None),
        Row("push via OpenSSH, transfer only", mbs(size, med(xfer["push-ssh"])),
            f"scp -c aes128-gcm {mbs(size, med(t['scp-aes']))}",
            ratio_rounds(t["scp-aes"], xfer["push-ssh"]), ">= 0.95", None),
        Row("push via paramiko, transfer only", mbs(size, med(xfer["push-paramiko"])),
            f"scp {mbs(size, med(t['scp']))}", ratio_rounds(t["scp"], xfer["push-paramiko"]),
            ">= 0.95", None),
        Row("push via paramiko, with on-device sha256", mbs(size, med(t["push-paramiko"])),
            f"scp {mbs(size, med(t['scp']))}", ratio_rounds(t["scp"], t["push-paramiko"]),
            ">= 0.95", None),
        Row("push via paramiko with AES-GCM, transfer only",
            mbs(size, med(xfer["paramiko-gcm"])), f"scp {mbs(size, med(t['scp']))}",
            ratio_rounds(t["scp"], xfer["paramiko-gcm"]), "evidence", None),
        Row("push via OpenSSH, verified with openssl dgst", mbs(size, med(t["push-openssl"])),
            f"scp {mbs(size, med(t['scp']))}", ratio_rounds(t["scp"], t["push-openssl"]),
            "evidence (Store.hash_cmd)", None),
        Row("hash while receiving (tee into sha256sum) vs after it (push)",
            f"{med(t['tee-hash']):.2f} s", f"{med(t['push-ssh']):.2f} s",
            ratio_rounds(t["push-ssh"], t["tee-hash"]), "info (> 1: while is faster)", None),
    ]
    for r in rows:
        if r.goal == ">= 0.95":
            r.met = r.ratio is not None and r.ratio >= 0.95
    table = "\n".join(f"| {k} | " + " | ".join(f"{x:.2f}" for x in v) + f" | {med(v):.2f} |"
                      for k, v in [*t.items(), *(("sha256 in " + k, v) for k, v in
                                                 hash_s.items())])
    details = (
        f"{size // MIB} MiB of random bytes to `{ROOT}` on one lab device (its disk), "
        f"{len(t['scp'])} interleaved rounds; push() via OpenSSH uses the deploy's cipher "
        f"choice for this CPU ({cipher}; the device has AES: {aes}); push() via paramiko uses "
        "paramiko's default cipher (aes128-ctr), as pyinfra's connection does; `paramiko-gcm` is "
        "the same with AES-GCM only (evidence for the fallback path). scp uses "
        "OpenSSH's default (chacha20-poly1305). Seconds per round:\n\n"
        "| variant | " + " | ".join(f"round {i + 1}" for i in range(len(t["scp"])))
        + " | median |\n|---|" + "---|" * (len(t["scp"]) + 1) + "\n" + table + "\n\n"
        "`tee-hash` is one ssh command that writes the file and hashes the stream on the "
        "device at once (`tee -a part | sha256sum`); `push-ssh` receives, then hashes (what "
        "push() does).\n\n"
        f"Where the time goes: push() hashes on the device after the last byte, so its "
        f"time is transfer + hash, one after the other. The device's sha256sum of "
        f"{size // MIB} MiB took {med(hash_s['push-ssh']):.2f} s (median, "
        f"{mbs(size, med(hash_s['push-ssh']))}; controller and device share these 2 cores). "
        f"Hashing while receiving ({med(t['tee-hash']):.2f} s) against after "
        f"({med(t['push-ssh']):.2f} s): {while_vs:.2f}x as fast here ("
        + ("no clear difference: on 2 shared cores the overlap buys little, the hash takes CPU"
           " from ssh and sshd" if 0.95 <= while_vs <= 1.05 else
           "the hash overlaps the transfer instead of following it" if while_vs > 1 else
           "on 2 shared cores the hash takes CPU from ssh and sshd instead of overlapping")
        + "). paramiko "
        "moves bytes in Python (its packetizer, one thread); with AES-GCM instead of its "
        f"default aes128-ctr + HMAC it reached {ratio_rounds(t['scp'], xfer['paramiko-gcm']):.2f}"
        " of scp (transfer only).\n\nThe hash tool: `push-openssl` is push() with "
        f"`Store(hash_cmd='{OPENSSL}')`: its on-device hash took "
        f"{med(hash_s['push-openssl']):.2f} s ({mbs(size, med(hash_s['push-openssl']))}) "
        f"against sha256sum's {med(hash_s['push-ssh']):.2f} s. coreutils 9.1's sha256sum "
        "uses no SHA instructions; OpenSSL uses them where the CPU has them (x86 SHA-NI, "
        "ARMv8 crypto extensions; a Raspberry Pi 4 has neither, a Pi 5 has the ARM ones).")
    rate = size / med(t["push-ssh"])
    return Result("push", rows, details, extra={"rate": rate})
