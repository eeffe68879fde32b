"""A model split over two devices with llama.cpp's RPC: the head serves, the worker holds
layers, reached only through the head's restricted SSH forward; a third device on the same
network finds no RPC port and the head's key opens nothing but the one forward. That third
device then runs the fleet's gateway, which routes the split model to its head; last, the
worker is dropped from split_over and the next run undoes the split."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO, deploy, http_json, wait_healthy, write_knobs
from tests.lab import lab
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HEAD, WORKER, OUTSIDER = "e2e-split-head", "e2e-split-w1", "e2e-split-x"
INDEX = {HEAD: 120, WORKER: 121, OUTSIDER: 122}
RPC_PORT = 50052
KEY = "/home/pi/.local/share/llama-docker/link/rpc/id_ed25519"
GATEWAY = {"gateway": "only", "gateway_port": 8080}  # on OUTSIDER, at its published port
LINK_UNIT = f"llama-docker-link-{WORKER}.service"
RPC_UNIT = "llama-docker-rpc.service"


@pytest.fixture(scope="module")
def devices(device_image: str) -> Iterator[dict[str, lab.Device]]:
    devs = {n: lab.start_device(n, device_image, index=i, fresh=True, own_keys=True)
            for n, i in INDEX.items()}
    yield devs
    for d in devs.values():
        lab.remove_device(d)


def _inventory(folder: Path, devs: list[lab.Device], knobs: dict[str, dict],
               name: str = "inventory") -> Path:
    """Each device reached by the others at its lab address, port 22; a known_hosts of the
    module's own (other lab tests rewrite the shared one). `name`: another inventory in the
    same folder (the same group data, the same cache)."""
    known = folder / ("known_hosts" if name == "inventory" else f"{name}.known_hosts")
    lines = []
    for d in devs:
        pub = (lab.STATE / d.name / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"[127.0.0.1]:{d.ssh_port} {pub[0]} {pub[1]}\n")
    known.write_text("".join(lines))
    hosts = [(d.name, {**d.host_data(), "ssh_known_hosts_file": str(known),
                       "lan_address": d.ip, "lan_ssh_port": 22, **knobs.get(d.name, {})})
             for d in devs]
    path = folder / f"{name}.py"
    path.write_text(f"lab = {hosts!r}\n")
    return path


def _model(folder: Path) -> dict:
    path = folder / "split.gguf"
    sha = write_tiny_gguf(path, seed=29, n_embd=512, n_ff=1024, n_head=8, n_layer=4)
    return {"name": "tiny-split", "path": str(path), "sha256": sha}


def _loopback_bytes(dev: lab.Device) -> int:
    """Bytes over the device's loopback: on a worker, what its sshd hands the RPC server
    from the head's forward (the tensors) and the answers."""
    out = dev.exec("sh", "-c", "awk -F'[: ]+' '$2 == \"lo\" {print $3}' /proc/net/dev")
    return int(out.split()[0])


@pytest.fixture(scope="module")
def split(devices: dict[str, lab.Device], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("split")
    model = _model(folder)
    write_knobs(folder, model=model, ctx_size=256)
    inv = _inventory(folder, [devices[HEAD], devices[WORKER]],
                     {HEAD: {"split_over": [WORKER]}})
    run = deploy(inv, timeout=1800)
    assert run.code == 0, run.output[-6000:]
    return {"folder": folder, "inv": inv, "model": model, "run": run}


def test_head_and_worker_converge_and_the_head_serves_through_the_worker(
        devices: dict[str, lab.Device], split: dict[str, object]) -> None:
    """Seen: the run prints the split; the head answers /completion; the worker's RPC server
    received the tensors (bytes read); the head's server names the worker's link in --rpc;
    the model is stored on the head only | Left: a second run changes nothing"""
    head, worker = devices[HEAD], devices[WORKER]
    run = split["run"]
    assert re.search(rf"\[{HEAD}\]\s+split: \d+ layers here .*, \d+ layers on {WORKER} ",
                     run.output), run.output[-4000:]
    wait_healthy(head.http_port, 180)
    status, body = http_json(f"http://127.0.0.1:{head.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 8}, timeout=120)
    assert status == 200 and body.get("tokens_predicted", 0) > 0, body
    unit = head.exec("cat", "/etc/systemd/system/llama-docker.service")
    assert f"--rpc 127.0.0.1:{RPC_PORT + 1}" in unit and "--network host" in unit, unit
    assert _loopback_bytes(worker) > 5_000_000  # the worker's layers came over the link
    sha = split["model"]["sha256"]  # type: ignore[index]
    assert head.exec("ls", "/var/lib/llama-docker/models").count(sha) >= 1
    assert sha not in worker.exec("sh", "-c", "ls /var/lib/llama-docker/models 2>&1; true")

    again = deploy(split["inv"], timeout=1200)  # type: ignore[arg-type]
    assert again.code == 0, again.output[-4000:]
    for name in (HEAD, WORKER):
        assert again.changed(name) == 0, again.output[-4000:]


def test_the_rpc_port_is_closed_to_the_lan(devices: dict[str, lab.Device],
                                           split: dict[str, object]) -> None:
    """Seen: the worker's RPC server listens on its loopback only; from another lab device
    its port is refused"""
    worker, outsider = devices[WORKER], devices[OUTSIDER]
    listening = worker.exec("sh", "-c", "cat /proc/net/tcp | awk '$4 == \"0A\"' ; true")
    port_hex = f"{RPC_PORT:04X}"
    ours = [line.split()[1] for line in listening.splitlines() if line.split()[1].endswith(
        ":" + port_hex)]
    assert ours == ["0100007F:" + port_hex], listening  # 127.0.0.1 only
    probe = outsider.exec("bash", "-c", f"timeout 5 bash -c '</dev/tcp/{worker.ip}/{RPC_PORT}' "
                                        "&& echo open || echo closed", check=False)
    assert probe.strip().endswith("closed"), probe


def _as_head_user(head: lab.Device, ssh_args: str, command: str = "") -> tuple[int, str]:
    worker_ip = f"198.18.0.{10 + INDEX[WORKER]}"
    known = f"/home/pi/.local/share/llama-docker/link/rpc/hosts/{worker_ip}_22"
    cmd = (f"ssh -i {KEY} -o IdentitiesOnly=yes -o BatchMode=yes "
           f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o ConnectTimeout=10 "
           f"{ssh_args} -l pi {worker_ip} {command}")
    proc = lab.docker("exec", "-u", "pi", head.container, "sh", "-c",
                      f"timeout 20 {cmd} </dev/null 2>&1; echo \"exit=$?\"", check=False,
                      capture=True, timeout=60)
    out = proc.stdout + proc.stderr
    code = int(re.search(r"exit=(\d+)", out).group(1))  # type: ignore[union-attr]
    return code, out


def test_the_heads_key_opens_only_its_one_forward(devices: dict[str, lab.Device],
                                                  split: dict[str, object]) -> None:
    """Seen: the head's link key runs no command and no shell on the worker, opens no forward
    to another port and no listening port there; the authorized line is the restricted one,
    from the head's address only"""
    head, worker = devices[HEAD], devices[WORKER]
    line = next(k for k in worker.exec("cat", "/home/pi/.ssh/authorized_keys").splitlines()
                if k.endswith(f"llama-docker-link:{HEAD}:rpc"))
    assert line.startswith(f'restrict,port-forwarding,permitopen="127.0.0.1:{RPC_PORT}"'), line
    assert f'from="{head.ip}"' in line, line
    code, out = _as_head_user(head, "", "id")
    assert code == 1 and "uid=" not in out, out  # the forced command refuses it at once
    code, out = _as_head_user(head, "-tt")  # no terminal: the client gives up
    assert code != 0 and "pi@" not in out, out
    code, out = _as_head_user(head, "-T")  # a shell: the forced command refuses it at once
    assert code == 1 and "pi@" not in out, out
    code, out = _as_head_user(head, "-W 127.0.0.1:22")
    assert code != 0 and "SSH-2.0" not in out, out
    code, out = _as_head_user(
        head, "-N -o ExitOnForwardFailure=yes -R 127.0.0.1:40001:127.0.0.1:22")
    assert code != 0 and code != 124, out  # refused at once, not left listening


def _holds(worker: lab.Device) -> int:
    """The link sessions' commands running on the worker."""
    out = worker.exec("sh", "-c", "pgrep -u pi -f 'SSH_ORIGINAL_COMMAND in hold' || true")
    return len(out.split())


def test_the_links_session_lasts_as_long_as_the_link(devices: dict[str, lab.Device],
                                                     split: dict[str, object]) -> None:
    """Seen: the link runs one session on the worker (its command only holds it, so sshd
    sends without Nagle's delay); the head's link unit stopped, that command is gone from
    the worker within 20 s (nothing left behind); started again, the head serves"""
    head, worker = devices[HEAD], devices[WORKER]
    assert _holds(worker) == 1
    unit = f"llama-docker-link-{WORKER}.service"
    head.exec("systemctl", "stop", unit)
    try:
        deadline = time.monotonic() + 20
        while _holds(worker) and time.monotonic() < deadline:
            time.sleep(1)
        assert _holds(worker) == 0
    finally:
        head.exec("systemctl", "start", unit)
    _wait_serving(head, 180)
    assert _holds(worker) == 1


def _status(inv: Path) -> tuple[int, dict[str, dict], str]:
    proc = subprocess.run([sys.executable, "status.py", str(inv), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    rows = {r["host"]: r for r in json.loads(proc.stdout or "[]")}
    table = subprocess.run([sys.executable, "status.py", str(inv)], cwd=REPO,
                           capture_output=True, text=True, timeout=300).stdout
    return proc.returncode, rows, table


def _serves(port: int) -> bool:
    try:
        status, body = http_json(f"http://127.0.0.1:{port}/completion",
                                 {"prompt": "Hello", "n_predict": 4}, timeout=20)
    except OSError:
        return False
    return status == 200 and body.get("tokens_predicted", 0) > 0


def _wait_serving(head: lab.Device, seconds: float) -> float:
    """Seconds until the head answers a completion again (bounded)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if _serves(head.http_port):
            return time.monotonic() - start
        time.sleep(2)
    raise AssertionError(f"{HEAD} does not serve {seconds:.0f}s after its worker came back:\n"
                         + lab.logs(head)[-3000:])


def test_a_worker_down_is_named_and_the_head_serves_again_without_a_run(
        devices: dict[str, lab.Device], split: dict[str, object]) -> None:
    """Seen: status says all healthy with the split's line; the worker's RPC unit stopped:
    the head is unhealthy, its row names the worker (no RPC server answers through the
    link), the worker's row says rpc down; started again: the head serves within a bounded
    time with no run; the worker's container killed: its unit brings it back and the head
    serves again, with no run"""
    head, worker = devices[HEAD], devices[WORKER]
    inv = split["inv"]
    assert isinstance(inv, Path)
    wait_healthy(head.http_port, 180)
    code, rows, table = _status(inv)
    assert code == 0 and rows[HEAD]["healthy"] and rows[WORKER]["healthy"], table
    assert rows[WORKER]["worker_of"] == HEAD and rows[WORKER]["rpc"] == "up", rows[WORKER]
    assert re.search(rf"split on {HEAD}: \d+ layers on {WORKER} \(up\)", table), table

    worker.exec("systemctl", "stop", "llama-docker-rpc.service")
    try:
        code, rows, table = _status(inv)
        assert code == 1 and not rows[HEAD]["healthy"], table
        link = rows[HEAD]["links"][0]
        assert link["worker"] == WORKER and link["rpc"] == "down", rows[HEAD]
        assert f"{WORKER} (down: no RPC server answers through the link)" in table, table
        assert rows[WORKER]["rpc"] == "down" and not rows[WORKER]["healthy"], rows[WORKER]
        assert not _serves(head.http_port)
    finally:
        worker.exec("systemctl", "start", "llama-docker-rpc.service")
    took = _wait_serving(head, 180)
    print(f"the head served again {took:.0f}s after its worker's unit started")
    code, rows, table = _status(inv)
    assert code == 0 and rows[HEAD]["healthy"], table

    worker.exec("docker", "kill", "llama-rpc")  # the process gone; its unit restarts it
    took = _wait_serving(head, 180)
    print(f"the head served again {took:.0f}s after its worker's container was killed")


def _gateway_models(box: lab.Device) -> dict:
    """The gateway's view of each model's devices (1 up, 0 down), asked on its own box."""
    text = box.exec("curl", "-s", "--max-time", "5", "http://127.0.0.1:8080/gateway/health")
    return json.loads(text)["models"]


def _wait_gateway_up(box: lab.Device, model: str, hosts: set[str], seconds: float) -> None:
    """Bounded wait until the gateway routes `model` to exactly `hosts`, each of them up."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = _gateway_models(box)
            if last.get(model) == dict.fromkeys(hosts, 1):
                return
        except (ValueError, KeyError, RuntimeError, subprocess.SubprocessError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"gateway never routed {model} to {sorted(hosts)}, all up: {last}")


def test_a_gateway_routes_the_split_model_to_its_head(
        devices: dict[str, lab.Device], split: dict[str, object]) -> None:
    """Seen: a gateway-only box beside the split lists the model once in /v1/models, routes a
    chat completion to the head (the worker's RPC server computes its part of the answer),
    which answers with the model's configured name; the worker is no route | Left: the
    gateway's run changes nothing on the head and the worker"""
    head, worker, box = devices[HEAD], devices[WORKER], devices[OUTSIDER]
    name = split["model"]["name"]  # type: ignore[index]
    inv = _inventory(split["folder"], [head, worker, box],  # type: ignore[arg-type]
                     {HEAD: {"split_over": [WORKER]}, OUTSIDER: GATEWAY}, name="gateway")
    run = deploy(inv, timeout=1200)
    assert run.code == 0, run.output[-6000:]
    assert run.changed(HEAD) == 0 and run.changed(WORKER) == 0, run.output[-4000:]
    assert re.search(rf"^\s+{OUTSIDER}\s+ok\s+gateway only on port 8080: {name} \(1\)$",
                     run.output, re.M), run.output[-3000:]
    _wait_gateway_up(box, name, {HEAD}, 60)
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{box.http_port}/v1", api_key="none",
                      timeout=120, max_retries=0)
    assert [m.id for m in c.models.list()] == [name]
    before = _loopback_bytes(worker)
    chat = c.chat.completions.create(model=name, max_tokens=4,
                                     messages=[{"role": "user", "content": "Hi"}],
                                     extra_body={"ignore_eos": True})
    assert chat.model == name, chat
    assert chat.usage is not None and chat.usage.completion_tokens == 4, chat
    assert _loopback_bytes(worker) > before  # each token crossed the link to the worker


def test_a_worker_dropped_from_split_over_is_undone_and_the_head_serves_alone(
        devices: dict[str, lab.Device], split: dict[str, object]) -> None:
    """Last: it ends the split. Seen: split_over dropped (the worker stays in the inventory):
    on the worker no RPC unit, active or enabled, its container gone, no authorized_keys line
    of the head's link key (the controller's own line stays, the file 0600); on the head no
    link unit or forward for the worker, its link key gone, a server without --rpc that
    answers /completion; the gateway routes the model to both devices | Left: a second run
    changes nothing"""
    head, worker, box = devices[HEAD], devices[WORKER], devices[OUTSIDER]
    pub = head.exec("cat", KEY + ".pub").split()[1]
    assert pub in worker.exec("cat", "/home/pi/.ssh/authorized_keys")  # the split is there
    inv = _inventory(split["folder"], [head, worker, box],  # type: ignore[arg-type]
                     {OUTSIDER: GATEWAY}, name="dropped")
    run = deploy(inv, timeout=1800)
    assert run.code == 0, run.output[-6000:]

    for ask in ("is-active", "is-enabled"):
        got = worker.exec("systemctl", ask, RPC_UNIT, check=False).strip()
        assert got not in ("active", "activating", "enabled"), (ask, got)
    assert worker.exec("sh", "-c", f"ls /etc/systemd/system/{RPC_UNIT}; docker ps -aq "
                       "--filter name=^llama-rpc$", check=False).strip() == ""
    authorized = worker.exec("cat", "/home/pi/.ssh/authorized_keys")
    assert pub not in authorized and ":rpc" not in authorized, authorized
    controller = (lab.STATE / "id_ed25519.pub").read_text().split()[1]
    assert controller in authorized, authorized
    assert worker.exec("stat", "-c", "%a", "/home/pi/.ssh/authorized_keys").strip() == "600"

    for ask in ("is-active", "is-enabled"):
        got = head.exec("systemctl", ask, LINK_UNIT, check=False).strip()
        assert got not in ("active", "activating", "enabled"), (ask, got)
    assert head.exec("sh", "-c", "ls /etc/systemd/system/llama-docker-link-*.service "
                     f"{KEY} {KEY}.pub", check=False).strip() == ""
    forward = f"0100007F:{RPC_PORT + 1:04X}"  # the link's port on the head's loopback
    listening = [line.split() for line in head.exec("cat", "/proc/net/tcp").splitlines()[1:]]
    assert [f for f in listening if f[1] == forward and f[3] == "0A"] == [], listening
    unit = head.exec("cat", "/etc/systemd/system/llama-docker.service")
    assert "--rpc" not in unit and "--network host" not in unit, unit
    wait_healthy(head.http_port, 180)
    status, body = http_json(f"http://127.0.0.1:{head.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 8}, timeout=120)
    assert status == 200 and body.get("tokens_predicted", 0) > 0, body
    name = split["model"]["name"]  # type: ignore[index]
    assert set(_gateway_models(box)[name]) == {HEAD, WORKER}  # the worker now serves it too

    again = deploy(inv, timeout=1200)
    assert again.code == 0, again.output[-4000:]
    for host in (HEAD, WORKER, OUTSIDER):
        assert again.changed(host) == 0, again.output[-4000:]
