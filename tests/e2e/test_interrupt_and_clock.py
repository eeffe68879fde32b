"""A deploy interrupted mid-push (Ctrl-C, SIGTERM, SIGKILL), a device whose clock is years
behind, and one whose apt is busy when the deploy starts (a device's first minutes). The push
tests share one device, in file order; the clock and apt tests share another, in that
order."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    PYINFRA,
    REPO,
    deploy,
    fresh_device,
    inventory,
    make_model,
    wait_healthy,
    write_knobs,
)
from tests.lab import lab
from tests.lab.sh import docker
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-ic-push"
CLOCK_HOST = "e2e-ic-clock"
STORE = "/var/lib/llama-docker/models"
RATE_MBIT = 80  # 10 MB/s: a ~140 MB model takes ~14 s, so the cut falls mid-file
BEHIND_DAYS = 2383
HOLD_S = 25  # how long the busy apt holds each of its locks
# What apt-daily and unattended-upgrades do on a device's first boot, with real apt: the lists
# lock held through an update, then dpkg's lock through an install. Each stamps its times.
BUSY_APT = (
    "date +%s > /tmp/lists-from; "
    f"apt-get -qq -o APT::Update::Pre-Invoke::='sleep {HOLD_S}' update; "
    "date +%s > /tmp/lists-to; "
    "DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o DPkg::Pre-Invoke::="
    f"'date +%s > /tmp/dpkg-from; sleep {HOLD_S}' install --reinstall less >/dev/null; "
    "date +%s > /tmp/dpkg-to")


device = fresh_device(HOST, index=55)
clock_device = fresh_device(CLOCK_HOST, index=56)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device]).parent


def big_model(folder: Path, seed: int) -> dict:
    path = folder / f"tiny-big-{seed}.gguf"
    sha = write_tiny_gguf(path, seed=seed, n_embd=1024, n_ff=4096, n_head=16)
    return {"name": f"tiny-big-{seed}", "path": str(path), "sha256": sha}


def part_size(dev: lab.Device, sha: str) -> int:
    out = dev.exec("sh", "-c", f"wc -c 2>/dev/null < {STORE}/{sha}.gguf.part || echo 0")
    return int(out.strip() or 0)


def ssh_pushes(port: int) -> list[int]:
    """Pids of OpenSSH clients on this machine talking to the device's published port."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ssh" and b"-p" in argv \
                and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


def lock_holders(dev: lab.Device, sha: str) -> str:
    """What is left of the model's device-side lock: the lock file, and whether a process
    still holds it (flock -n fails only while one does)."""
    lock = f"{STORE}/.{sha}.lock"
    return dev.exec("sh", "-c", f"ls -d {lock} 2>/dev/null; [ -f {lock} ] && "
                    f"! flock -n {lock} true && echo held; true").strip()


def start_push(dev: lab.Device, inv: Path, model: dict, log: Path) -> subprocess.Popen:
    """A deploy of `model` on a slowed link, returned once the device's .part grows."""
    write_knobs(inv, model=model)
    dev.limit_rate(RATE_MBIT)
    with open(log, "w") as out:
        proc = subprocess.Popen([*PYINFRA, "-y", str(inv / "inventory.py"), "deploy.py"],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 900  # the first run installs docker and builds the image
    while part_size(dev, model["sha256"]) < 4 << 20:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the push never started:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def wait_exit(proc: subprocess.Popen, seconds: float, log: Path) -> int:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise AssertionError(f"pyinfra still ran {seconds}s after the signal:\n"
                             f"{log.read_text()[-3000:]}") from None


def stopped_growing(dev: lab.Device, sha: str) -> tuple[int, int]:
    """The .part's size read 3 s apart, once the bytes already on their way have landed:
    the device may still write what sshd had received (up to its 2 MiB window) when the
    sender died. Bounded: (a, b) with a != b after 30 s means it never stopped."""
    first = part_size(dev, sha)
    deadline = time.monotonic() + 30
    while True:
        time.sleep(3)
        second = part_size(dev, sha)
        if second == first or time.monotonic() > deadline:
            return first, second
        first = second


def interrupt_push(dev: lab.Device, inv: Path, model: dict, log: Path, sig: signal.Signals
                   ) -> tuple[list[int], int, int, int]:
    """Start a push on a slowed link, send pyinfra `sig`, and return the ssh pushes still
    running 5 s later (killed before returning), the .part's size 3 s apart and pyinfra's
    exit code. The link stays slow until the checks: an orphaned push must not finish in
    time to hide."""
    try:
        proc = start_push(dev, inv, model, log)
        assert ssh_pushes(dev.ssh_port), "the push does not go through OpenSSH"
        os.kill(proc.pid, sig)  # pyinfra alone, as `kill`; a terminal's Ctrl-C hits the group
        if sig == signal.SIGKILL:
            code = proc.wait(timeout=10)
        else:
            code = wait_exit(proc, 10, log)
        deadline = time.monotonic() + 5
        while ssh_pushes(dev.ssh_port) and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = ssh_pushes(dev.ssh_port)
        first, second = stopped_growing(dev, model["sha256"])
    finally:
        dev.limit_rate(None)
    for pid in orphans:  # do not leave them running after a failed assertion
        os.kill(pid, signal.SIGKILL)
    return orphans, first, second, code


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupt_stops_the_push_and_the_next_run_resumes(
        device: lab.Device, inv: Path, sig: signal.Signals) -> None:
    """Fault: Ctrl-C (SIGINT) or SIGTERM to pyinfra mid-push | Seen: pyinfra exits within
    seconds, its ssh child with it; the next run says `resumed from byte N` | Left: the
    `.part` as far as it got, no lock held; the next run completes it, verified"""
    model = big_model(inv, seed=60 + sig)
    log = inv / f"interrupted-{sig.name}.log"
    orphans, first, second, code = interrupt_push(device, inv, model, log, sig)
    if sig == signal.SIGINT:  # a script running the deploy sees it did not finish
        assert code == 130 and re.search(rf"{HOST}\s+INTERRUPTED\s+interrupted: the push",
                                         log.read_text()), log.read_text()[-3000:]
    else:
        assert code == -signal.SIGTERM
    assert orphans == []
    assert 0 < first == second < Path(model["path"]).stat().st_size
    assert lock_holders(device, model["sha256"]) == ""

    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    m = re.search(rf"sent (\d+) bytes of {model['name']}.gguf via ssh, resumed from byte (\d+)",
                  run.output)
    assert m, run.output[-3000:]
    assert int(m[2]) == second and int(m[1]) == Path(model["path"]).stat().st_size - second
    assert device.exec("readlink", f"{STORE}/current.gguf").strip() == f"{model['sha256']}.gguf"
    wait_healthy(device.http_port, seconds=60)


def test_sigkill_of_pyinfra_takes_its_ssh_push_with_it(device: lab.Device, inv: Path) -> None:
    """Fault: pyinfra SIGKILLed mid-push (no chance to clean up) | Seen: its ssh child dies
    with it within seconds; the next run resumes | Left: the `.part` as far as it got,
    no writer and no lock holder on the device"""
    model = big_model(inv, seed=69)
    orphans, first, second, _ = interrupt_push(device, inv, model, inv / "killed.log",
                                               signal.SIGKILL)
    assert orphans == []
    assert 0 < first == second < Path(model["path"]).stat().st_size
    assert "held" not in lock_holders(device, model["sha256"])
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    assert f"resumed from byte {second}" in run.output, run.output[-3000:]


def test_clock_years_behind_is_refused_before_anything_changes(
        clock_device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fault: the device clock is years behind (a Pi without RTC before NTP) | Seen: `the
    device clock is N days behind this controller (...): enable NTP (timedatectl set-ntp
    true) or set the date` | Left: nothing installed, nothing changed"""
    dev = clock_device
    # The device and this machine share one kernel clock, which must not change: the device
    # *reports* a clock years behind through `date`, the command the deploy reads it with.
    dev.write("/usr/local/bin/date",
              f"#!/bin/sh\nexec /usr/bin/date -d @$(( $(/usr/bin/date +%s) - "
              f"{BEHIND_DAYS} * 86400 )) \"$@\"\n".encode())
    dev.exec("chmod", "755", "/usr/local/bin/date")
    folder = inventory(tmp_path_factory.mktemp("clock"), [dev]).parent
    write_knobs(folder, model=make_model(folder, "tiny-clock", seed=70))
    started = time.monotonic()
    run = deploy(folder / "inventory.py", timeout=300)
    took = time.monotonic() - started
    assert run.code != 0
    today = time.strftime("%Y-%m-%d", time.gmtime())
    then = time.strftime("%Y-%m-%d", time.gmtime(time.time() - BEHIND_DAYS * 86400))
    line = (f"the device clock is {BEHIND_DAYS} days behind this controller ({then} vs "
            f"{today}): enable NTP (timedatectl set-ntp true) or set the date")
    assert line in run.output, run.output[-3000:]
    assert "Traceback" not in run.output
    assert dev.exec("sh", "-c", "command -v docker || echo none").strip() == "none"
    assert dev.exec("ls", "-A", "/var/lib").split().count("llama-docker") == 0
    assert took < 120, f"a refused run took {took:.0f}s"


def test_busy_apt_at_first_boot_is_waited_for(
        clock_device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fault: another apt holds apt's locks as the deploy starts (a fresh device's daily
    upgrades) | Seen: the deploy waits for each lock (up to 5 minutes) and converges | Left:
    the other apt's work done, docker installed, the server answering"""
    dev = clock_device
    dev.exec("rm", "-f", "/usr/local/bin/date")  # the clock test's wrapper: a true clock now
    folder = inventory(tmp_path_factory.mktemp("apt"), [dev]).parent
    write_knobs(folder, model=make_model(folder, "tiny-apt", seed=71))
    docker("exec", "-d", dev.container, "sh", "-c", BUSY_APT)
    started = int(time.time())
    run = deploy(folder / "inventory.py")
    assert run.code == 0, run.output[-3000:]
    stamps = {n: int(dev.exec("cat", f"/tmp/{n}")) for n in
              ("lists-from", "lists-to", "dpkg-from", "dpkg-to")}
    # The lists lock was still held well after the deploy's preflight, which takes seconds.
    assert stamps["lists-from"] <= started + 1 and stamps["lists-to"] >= started + HOLD_S - 2
    assert stamps["dpkg-to"] >= stamps["dpkg-from"] + HOLD_S, stamps
    assert "docker.io" in dev.exec("dpkg-query", "-W", "-f", "${Package}", "docker.io")
    wait_healthy(dev.http_port)
