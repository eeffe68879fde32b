"""The relay: four fresh devices, the controller sends the model once and the devices pass
it on over their restricted links; a walled-off device falls back to the controller; a
source whose stored file is damaged is refused by the receivers."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PYINFRA, deploy, wait_healthy, write_knobs
from tests.lab import lab
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
NAMES = tuple(f"e2e-relay-{i}" for i in range(1, 5))
STORE = "/var/lib/llama-docker/models"
PUSHED = re.compile(r"\[(?P<host>e2e-relay-\d)\]\s+sent (?P<n>\d+) bytes of (?P<f>\S+) via")
RELAYED = re.compile(r"\[(?P<host>e2e-relay-\d)\]\s+received (?P<n>\d+) bytes of (?P<f>\S+) "
                     r"from (?P<src>e2e-relay-\d) over the device link")


@pytest.fixture(scope="module")
def devices(device_image: str) -> list[lab.Device]:
    devs = [lab.start_device(n, device_image, index=100 + i, fresh=True, own_keys=True)
            for i, n in enumerate(NAMES)]
    yield devs
    for d in devs:
        lab.remove_device(d)


def _inventory(folder: Path, devices: list[lab.Device]) -> Path:
    """Each device reached by its peers at its lab address, port 22 (the controller uses the
    published port on 127.0.0.1), with a known_hosts file of the module's own."""
    known = folder / "known_hosts"
    lines = []
    for d in devices:
        pub = (lab.STATE / d.name / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"[127.0.0.1]:{d.ssh_port} {pub[0]} {pub[1]}\n")
    known.write_text("".join(lines))
    hosts = [(d.name, {**d.host_data(), "ssh_known_hosts_file": str(known),
                       "lan_address": d.ip, "lan_ssh_port": 22}) for d in devices]
    path = folder / "inventory.py"
    path.write_text(f"lab = {hosts!r}\n")
    return path


def _model(folder: Path, name: str, seed: int) -> dict:
    path = folder / f"{name}.gguf"
    sha = write_tiny_gguf(path, seed=seed, n_embd=512, n_ff=1024, n_head=8)
    return {"name": name, "path": str(path), "sha256": sha}


def _served(dev: lab.Device) -> str:
    return dev.exec("sha256sum", f"{STORE}/current.gguf").split()[0]


def test_four_devices_the_controller_sends_the_model_once(
        devices: list[lab.Device], tmp_path: Path) -> None:
    """Seen: the dry run's plan names who sends to whom; the deploy pushes the model from
    the controller to one device and the three others receive it from peers; each serves
    the right sha | Left: a second run changes nothing and moves nothing"""
    inv = _inventory(tmp_path, devices)
    model = _model(tmp_path, "tiny-relay", seed=31)
    write_knobs(tmp_path, model=model)
    dry = deploy(inv, "--dry", timeout=600)
    assert dry.code == 0, dry.output[-4000:]
    assert "would relay tiny-relay.gguf: round 1: this controller -> " in dry.output, \
        dry.output[-3000:]
    size = Path(model["path"]).stat().st_size
    run = deploy(inv, timeout=2400)
    assert run.code == 0, run.output[-6000:]
    pushed = [m for m in PUSHED.finditer(run.output) if m["f"] != "its"]
    relayed = [m for m in RELAYED.finditer(run.output) if m["f"].endswith(".gguf")]
    assert len(pushed) == 1 and int(pushed[0]["n"]) == size, run.output[-6000:]
    # The server image's archive rides the same relay: the devices that load it (all but
    # one that built it or held it) get it once from the controller, the rest from peers.
    loaded = re.findall(r"\[e2e-relay-\d\]\s+loaded llama-docker/server.*", run.output)
    archive_pushed = [x for x in loaded if "bytes of its archive via ssh" in x]
    archive_relayed = [x for x in loaded
                       if re.search(r"received \d+ bytes of server-\w+-amd64\.tar from "
                                    r"e2e-relay-\d over the device link", x)]
    assert len(loaded) >= 3 and len(archive_pushed) == 1, run.output[-6000:]
    assert len(archive_relayed) == len(loaded) - 1, run.output[-6000:]
    for dev in devices:  # kept only while the run needed it as a source
        left = dev.exec("sh", "-c", "ls -a /var/lib/llama-docker/images 2>&1 || true")
        assert ".tar" not in left, (dev.name, left)
    assert sorted(m["host"] for m in relayed) == sorted(
        set(NAMES) - {pushed[0]["host"]}), run.output[-6000:]
    assert all(int(m["n"]) == size for m in relayed)
    for dev in devices:
        assert _served(dev) == model["sha256"]
        wait_healthy(dev.http_port, 180)
        keys = dev.exec("cat", f"/home/{dev.user}/.ssh/authorized_keys")
        for line in keys.splitlines()[1:]:  # the lab's own key, then the links' only
            assert line.startswith('restrict,command="'), line
            assert 'from="198.18.0.1' in line, line
    # the link key never left its device: the private half is on the senders only
    for m in relayed:
        src = next(d for d in devices if d.name == m["src"])
        assert "PRIVATE KEY" in src.exec(
            "cat", f"/home/{src.user}/.local/share/llama-docker/link/id_ed25519")

    again = deploy(inv, timeout=1200)
    assert again.code == 0, again.output[-3000:]
    assert not PUSHED.search(again.output) and not RELAYED.search(again.output)
    for dev in devices:
        assert again.changed(dev.name) == 0, again.output[-3000:]


def _netns(dev: lab.Device, *args: str) -> None:
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", dev.container],
                         capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["nsenter", "-t", pid, "-n", "iptables", *args], check=True,
                   capture_output=True, timeout=30)


def _wall(dev: lab.Device, others: list[lab.Device], on: bool) -> None:
    """Drop everything between `dev` and the other devices (both ways)."""
    for o in others:
        for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
            _netns(dev, "-I" if on else "-D", chain, side, o.ip, "-j", "DROP")


def test_a_device_that_reaches_no_peer_gets_the_push(
        devices: list[lab.Device], tmp_path: Path) -> None:
    """Fault: one device's traffic to and from the other devices is dropped | Seen: it gets
    the model from the controller and the run says why; the others from peers | Left:
    every device serves the new model; the controller sent two copies, not four"""
    inv = _inventory(tmp_path, devices)
    walled, others = devices[3], devices[:3]
    model = _model(tmp_path, "tiny-relay-b", seed=32)
    write_knobs(tmp_path, model=model)
    _wall(walled, others, True)
    try:
        run = deploy(inv, entry="model.py", timeout=2400)
    finally:
        _wall(walled, others, False)
    assert run.code == 0, run.output[-6000:]
    pushed = [m["host"] for m in PUSHED.finditer(run.output) if m["f"] != "its"]
    relayed = {m["host"]: m["src"] for m in RELAYED.finditer(run.output)}
    assert walled.name in pushed and len(pushed) == 2, run.output[-6000:]
    assert walled.name not in relayed and walled.name not in relayed.values()
    assert len(relayed) == 2
    # The second push says why. Either the walled device waited for a peer and got it (the
    # line is its own), or it was the first seed: then the device it could not reach is the
    # one pushed again, and the line names the walled device as the source that failed.
    why = re.search(r"\[(?P<host>[\w-]+)\]\s+sent \d+ bytes of \S+ via ssh.*\(from this "
                    r"controller: no peer could be reached: (?P<what>.*)\)$", run.output, re.M)
    assert why, run.output[-6000:]
    assert why["host"] == walled.name or why["what"].startswith(f"{walled.name} cannot reach")
    for dev in devices:
        assert _served(dev) == model["sha256"]


def test_a_damaged_source_is_refused_by_its_receivers(
        devices: list[lab.Device], tmp_path: Path) -> None:
    """Fault: a byte of a device's verified model flipped after it was marked | Seen: every
    receiver refuses the copy from it (sha256 mismatch) and gets the model from another
    source | Left: nothing unverified stored or linked on the receivers"""
    first, rest = devices[0], devices[1:]
    model = _model(tmp_path, "tiny-relay-c", seed=33)
    write_knobs(tmp_path, model=model)
    one = tmp_path / "one"
    one.mkdir()
    write_knobs(one, model=model)
    run = deploy(_inventory(one, [first]), entry="model.py", timeout=1200)
    assert run.code == 0, run.output[-4000:]
    stored = f"{STORE}/{model['sha256']}.gguf"
    size = Path(model["path"]).stat().st_size
    first.exec("sh", "-c", f"chmod u+w {stored} && printf '\\377' | dd of={stored} bs=1 "
                           f"seek={size - 1} conv=notrunc status=none && chmod 0444 {stored}")

    run = deploy(_inventory(tmp_path, devices), entry="model.py", timeout=2400)
    assert run.code == 0, run.output[-6000:]
    refused = re.findall(rf"\[(e2e-relay-\d)\]\s+.*refused the copy from {first.name}: ",
                         run.output)
    assert refused, run.output[-6000:]
    assert {m["src"] for m in RELAYED.finditer(run.output)} <= {d.name for d in rest}
    pushed = [m["host"] for m in PUSHED.finditer(run.output) if m["f"] != "its"]
    assert len(pushed) == 1, run.output[-6000:]
    for dev in rest:
        assert _served(dev) == model["sha256"]
        assert dev.exec("sh", "-c", f"ls {STORE} | grep -c part || true").strip() == "0"



def test_a_sender_killed_mid_copy_is_replaced_and_the_copy_resumes(
        devices: list[lab.Device], tmp_path: Path) -> None:
    """Fault: the sending device's ssh is killed half-way through a relayed copy (the
    receiver's link shaped to 8 Mbit/s so the copy takes a while) | Seen: the receiver's
    .part is kept and the controller resumes it from that byte | Left: the receiver serves
    the right sha, no .part, nothing unverified linked"""
    first, second = devices[0], devices[1]
    model = _model(tmp_path, "tiny-relay-d", seed=34)
    sha, size = model["sha256"], Path(model["path"]).stat().st_size
    one = tmp_path / "one"
    one.mkdir()
    write_knobs(one, model=model)
    run = deploy(_inventory(one, [first]), entry="model.py", timeout=1200)
    assert run.code == 0, run.output[-4000:]

    write_knobs(tmp_path, model=model)
    inv = _inventory(tmp_path, [first, second])
    part = f"{STORE}/{sha}.gguf.part"
    second.limit_rate(8)
    try:
        proc = subprocess.Popen([*PYINFRA, "-y", str(inv), "model.py"], cwd=lab.REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            got = second.exec("sh", "-c", f"wc -c < {part} 2>/dev/null || echo 0").strip()
            if int(got or 0) > 1 << 20:
                break
            time.sleep(0.5)
        else:
            proc.kill()
            raise AssertionError("the relayed copy never started")
        first.exec("sh", "-c", f"kill -9 $(pgrep -f '^ssh -i .*receive {sha}')")
        output, _ = proc.communicate(timeout=1200)
    finally:
        second.limit_rate(None)
    assert proc.returncode == 0, output[-6000:]
    assert re.search(rf"\[{second.name}\]\s+the copy from {first.name} failed", output), \
        output[-6000:]
    resumed = re.search(rf"\[{second.name}\]\s+sent (\d+) bytes of \S+ via ssh, resumed from "
                        r"byte (\d+); sha256 verified", output)
    assert resumed and int(resumed[1]) + int(resumed[2]) == size, output[-6000:]
    assert _served(second) == sha
    assert second.exec("sh", "-c", f"ls {STORE} | grep -c part || true").strip() == "0"
