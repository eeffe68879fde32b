"""One address for the fleet: three lab devices (two serve model A, one serves model B and
runs the gateway) and a fourth that runs only a gateway; requests through the gateways with
the `openai` client, a device stopped and started again, the gateway row of status, and
proof that the gateway's container reaches nothing but the devices."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO, deploy, make_model, write_knobs
from tests.lab import lab
from tests.lab.sh import docker

pytestmark = pytest.mark.lab
A1, A2, B, G = "e2e-gw-1", "e2e-gw-2", "e2e-gw-3", "e2e-gw-4"
INDEX = {A1: 75, A2: 76, B: 77, G: 78}
# The gateway listens on B's 8080, the lab's published port; B's own server moves to 8081.
# G is a box that serves no model: it runs a second gateway (and gets no model knob: the
# default preset's download, which the lab cannot reach, would fail its run).
KNOBS = {A1: {}, A2: {}, B: {"port": 8081, "gateway": True, "gateway_port": 8080},
         G: {"gateway": "only", "gateway_port": 8080}}
BRIDGE = "172.17.0.0/16"  # docker's default bridge inside a device: the gateway's container
REQUEST_TIMEOUT = 30


@pytest.fixture(scope="module")
def devices(device_image: str) -> Iterator[dict[str, lab.Device]]:
    devs = {n: lab.start_device(n, device_image, index=i, fresh=True) for n, i in INDEX.items()}
    yield devs
    with ThreadPoolExecutor(len(devs)) as pool:  # the four at once, then the bookkeeping
        list(pool.map(lambda d: docker("rm", "-f", "-v", d.container, check=False,
                                       capture=True), devs.values()))
    for d in devs.values():
        lab.remove_device(d)


@pytest.fixture(scope="module")
def fleet(devices: dict[str, lab.Device], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("gw")
    models = {"a": make_model(folder, "tiny-a", seed=75), "b": make_model(folder, "tiny-b",
                                                                          seed=77)}
    serves = {A1: models["a"], A2: models["a"], B: models["b"]}
    inv = write_inventory(folder, devices, serves)
    write_knobs(folder, api_key="generate", server_args=["--metrics"])
    run = deploy(inv)
    assert run.code == 0, run.output[-5000:]
    key = (folder / "config" / "llama-docker" / "api-key").read_text().strip()
    return {"folder": folder, "inv": inv, "models": models, "serves": serves, "key": key,
            "first": run}


def write_inventory(folder: Path, devices: dict[str, lab.Device], serves: dict,
                    knobs: dict | None = None) -> Path:
    knobs = {**KNOBS, **(knobs or {})}
    hosts = [(n, {**d.host_data(), **({"model": serves[n]} if n in serves else {}),
                  "lan_address": d.ip, **knobs[n]}) for n, d in devices.items()]
    path = folder / "inventory.py"
    path.write_text(f"lab = {hosts!r}\n")
    return path


def client(devices: dict[str, lab.Device], key: str, via: str = B) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{devices[via].http_port}/v1",
                         api_key=key, timeout=REQUEST_TIMEOUT, max_retries=0)


def complete(c: openai.OpenAI, model: str) -> bool:
    """One completion answered in full: its 2 tokens generated. Not its text: a random tiny
    model's tokens can be pieces of one UTF-8 character, which the server sends as ''."""
    out = c.completions.create(model=model, prompt="Hi", max_tokens=2,
                               extra_body={"ignore_eos": True})
    assert out.usage is not None, out
    return out.usage.completion_tokens == 2


def predicted(dev: lab.Device, port: int, key: str) -> int:
    """Tokens the device's own llama-server generated so far (its /metrics)."""
    text = dev.exec("curl", "-s", "--max-time", "5", "-H", f"Authorization: Bearer {key}",
                    f"http://127.0.0.1:{port}/metrics")
    found = re.search(r"^llamacpp:tokens_predicted_total\s+([0-9.e+]+)", text, re.M)
    return int(float(found[1])) if found else 0


def gateway_health(devices: dict[str, lab.Device], via: str = B) -> dict:
    text = devices[via].exec("curl", "-s", "--max-time", "5",
                             "http://127.0.0.1:8080/gateway/health")
    return json.loads(text)["models"]


def wait_up(devices: dict[str, lab.Device], host: str, model: str, up: int,
            seconds: float = 180, via: str = B) -> None:
    """Bounded wait until the gateway sees `host` as up (1) or down (0) for `model`."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = gateway_health(devices, via)
            if last.get(model, {}).get(host) == up:
                return
        except (ValueError, OSError, RuntimeError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"gateway never saw {host} as {up} for {model}: {last}")


def test_both_models_answer_and_each_is_listed_once(devices: dict[str, lab.Device],
                                                    fleet: dict) -> None:
    c = client(devices, fleet["key"])
    assert sorted(m.id for m in c.models.list()) == ["tiny-a", "tiny-b"]
    assert complete(c, "tiny-a") and complete(c, "tiny-b")
    with pytest.raises(openai.AuthenticationError):
        complete(client(devices, "not-the-key-0123456789"), "tiny-a")


def test_a_one_model_device_answers_with_the_name_asked_for(devices: dict[str, lab.Device],
                                                            fleet: dict) -> None:
    """Through the gateway, each device's answer names the model as configured (llama-server
    gets it as --alias), not the file's path in the container."""
    c = client(devices, fleet["key"])
    for model in ("tiny-a", "tiny-b"):
        chat = c.chat.completions.create(model=model, max_tokens=2,
                                         messages=[{"role": "user", "content": "Hi"}])
        assert chat.model == model, chat
        assert c.completions.create(model=model, prompt="Hi", max_tokens=2).model == model


def test_unknown_model_is_a_4xx_naming_it(devices: dict[str, lab.Device], fleet: dict) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        complete(client(devices, fleet["key"]), "nobody-serves-this")
    assert "nobody-serves-this" in str(err.value)


def test_requests_for_a_are_spread_over_both_a_devices(devices: dict[str, lab.Device],
                                                       fleet: dict) -> None:
    key = fleet["key"]
    before = {h: predicted(devices[h], 8080, key) for h in (A1, A2)}
    c = client(devices, key)
    for _ in range(20):
        complete(c, "tiny-a")
    got = {h: (predicted(devices[h], 8080, key) - before[h]) // 2 for h in (A1, A2)}
    assert sum(got.values()) == 20 and min(got.values()) >= 5, got


def test_a_device_stopped_then_started(devices: dict[str, lab.Device], fleet: dict) -> None:
    """Fault: a device serving model A is switched off | Seen: every request for A still
    answered through the gateway, by the other A device | Left: the device started again
    takes requests again"""
    key, c = fleet["key"], client(devices, fleet["key"])
    docker("kill", devices[A1].container, capture=True, timeout=120)  # power gone at once
    try:
        started = time.monotonic()
        for _ in range(10):
            assert complete(c, "tiny-a")  # not one fails: retries go to the other device
        assert time.monotonic() - started < 10 * REQUEST_TIMEOUT
        wait_up(devices, A1, "tiny-a", 0, seconds=30)
    finally:
        docker("start", devices[A1].container, capture=True, timeout=120)
    wait_up(devices, A1, "tiny-a", 1)
    for _ in range(10):
        assert complete(c, "tiny-a")
    assert predicted(devices[A1], 8080, key) > 0  # a fresh server: counts since its start


def test_second_run_changes_nothing(devices: dict[str, lab.Device], fleet: dict) -> None:
    again = deploy(fleet["inv"])
    assert again.code == 0, again.output[-4000:]
    for name in devices:
        assert again.changed(name) == 0, again.output[-4000:]


def status(inv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "status.py", str(inv), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def test_status_has_a_gateway_row(devices: dict[str, lab.Device], fleet: dict) -> None:
    wait_up(devices, A1, "tiny-a", 1)  # back from the test that stopped it
    with ThreadPoolExecutor(2) as pool:  # the JSON and the table, asked at once
        as_json, as_table = pool.map(lambda a: status(fleet["inv"], *a), (["--json"], []))
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    rows = {r["host"]: r for r in json.loads(as_json.stdout)}
    assert rows[B]["gateway"] == {"port": 8080, "service": "active", "health": 200,
                                  "models": {"tiny-a": {A1: 1, A2: 1}, "tiny-b": {B: 1}}}
    assert rows[A1]["gateway"] is None and rows[A2]["gateway"] is None
    box = rows[G]
    assert box["gateway_only"] and box["healthy"] and box["model"] is None, box
    assert box["gateway"]["models"] == rows[B]["gateway"]["models"]
    table = as_table.stdout.splitlines()
    for name in (B, G):
        assert f"gateway on {name} (*:8080): tiny-a 2 of 2 up, tiny-b 1 of 1 up" in table, table
    assert [line.split()[4:6] for line in table if line.startswith(G)] == [
        ["(gateway", "only)"]], table


def test_a_gateway_only_box_routes_and_serves_nothing(devices: dict[str, lab.Device],
                                                      fleet: dict) -> None:
    """gateway = "only": both models through it; no model, server unit or server image on it;
    the summary says what it is."""
    c = client(devices, fleet["key"], via=G)
    assert sorted(m.id for m in c.models.list()) == ["tiny-a", "tiny-b"]
    assert complete(c, "tiny-a") and complete(c, "tiny-b")
    box = devices[G]
    images = box.exec("docker", "images", "--format", "{{.Repository}}").split()
    assert "llama-docker/gateway" in images and "llama-docker/server" not in images, images
    there = box.exec("sh", "-c", "for p in /etc/systemd/system/llama-docker.service "
                     "/etc/systemd/system/llama-gateway.service /var/lib/llama-docker; do "
                     "[ -e $p ] && echo $p; done; true").split()
    assert there == ["/etc/systemd/system/llama-gateway.service"]
    assert re.search(rf"^\s+{G}\s+ok\s+gateway only on port 8080: tiny-a \(2\), tiny-b \(1\)$",
                     fleet["first"].output, re.M), fleet["first"].output[-3000:]


def test_keys_stay_out_of_argv_env_and_inspect(devices: dict[str, lab.Device],
                                               fleet: dict) -> None:
    dev, key = devices[B], fleet["key"]
    assert key not in dev.exec("ps", "-eo", "args")
    assert key not in dev.exec("docker", "inspect", "llama-gateway")
    mode = dev.exec("stat", "-c", "%a %u", "/etc/llama-docker/gateway.cfg").split()
    assert mode == ["400", "10002"]


# Two chains of the gateway's device for traffic from docker's bridge (the gateway's
# container): what is routed out (FORWARD, via docker's DOCKER-USER) and what goes to the device
# itself (INPUT: the device's own server, reached at its LAN address through docker's proxy).
FIREWALL = {"GW-FWD": "DOCKER-USER", "GW-IN": "INPUT"}


def _firewall(devices: dict[str, lab.Device]) -> None:
    """Rules appended in order, one per device (an address list would insert one rule per
    address at the same position, in reverse, and split the chain)."""
    dev = devices[B]
    # The device's own server container is on that bridge too: its side of the connections
    # docker's proxy makes to it (the gateway reaches it at the device's address) is not the
    # gateway's traffic. Counted, one packet of it to the device itself (not to the server's
    # port, so not the gateway's) was once taken for an outside attempt.
    server = dev.exec("docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}",
                      "llama").strip()
    for chain, parent in FIREWALL.items():
        dev.exec("iptables", "-N", chain)
        local = chain == "GW-IN"
        targets = [(dev.ip, 8081)] if local else [(devices[h].ip, 8080) for h in (A1, A2)]
        rules = [
            ["-s", server, "-j", "RETURN"],
            ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
            ["-p", "udp", "--dport", "53", "-m", "comment", "--comment", "gw-dns", "-j", "DROP"],
            ["-p", "tcp", "--dport", "53", "-m", "comment", "--comment", "gw-dns", "-j", "DROP"],
            *(["-d", ip, "-p", "tcp", "--dport", str(port), "-m", "comment", "--comment",
               "gw-dev", "-j", "RETURN"] for ip, port in targets),
            ["-m", "comment", "--comment", "gw-out", "-j", "DROP"],
        ]
        for rule in rules:
            dev.exec("iptables", "-A", chain, *rule)
        dev.exec("iptables", "-I", parent, "1", "-s", BRIDGE, "-j", chain)


def _firewall_off(dev: lab.Device) -> None:
    for chain, parent in FIREWALL.items():
        dev.exec("iptables", "-D", parent, "-s", BRIDGE, "-j", chain, check=False)
        dev.exec("iptables", "-F", chain, check=False)
        dev.exec("iptables", "-X", chain, check=False)


def _counters(dev: lab.Device) -> dict[str, dict[str, int]]:
    """Packets each commented rule matched, per chain and comment."""
    found: dict[str, dict[str, int]] = {}
    for chain in FIREWALL:
        seen = found.setdefault(chain, {})
        for line in dev.exec("iptables", "-L", chain, "-v", "-x", "-n").splitlines():
            rule = re.search(r"/\* (gw-\w+) \*/", line)
            if rule:
                seen[rule[1]] = seen.get(rule[1], 0) + int(line.split()[0])
    return found


def _in_gateway(dev: lab.Device, *commands: str) -> None:
    """Commands run at once in the gateway's container, each given 2 s (a drop never ends)."""
    both = " & ".join(f"timeout 2 bash -c {shlex.quote(c)}" for c in commands)
    dev.exec("docker", "exec", "llama-gateway", "bash", "-c", f"{both}; wait", check=False)


def test_gateway_reaches_nothing_but_the_devices(devices: dict[str, lab.Device],
                                                 fleet: dict) -> None:
    """Fault: the gateway tries a name lookup or a connection outside the fleet | Seen: the
    device's firewall counts and drops it | Left: zero lookups, zero outside attempts across
    a gateway restart and traffic to both models"""
    dev = devices[B]
    # No IPv6 in the gateway's container: the IPv4 rules below see all it can send.
    assert dev.exec("docker", "exec", "llama-gateway", "cat", "/proc/net/if_inet6") == ""
    _firewall(devices)
    try:
        # The rules are live: a name lookup, a connection to a lab address that is not a
        # device (the registry mirror) and one to the device itself (ssh) are counted.
        _in_gateway(dev, "getent hosts deb.debian.org", f"echo > /dev/tcp/{lab.REGISTRY_IP}/5000",
                    f"echo > /dev/tcp/{dev.ip}/22")
        live = _counters(dev)
        assert live["GW-FWD"]["gw-dns"] >= 1, live
        assert live["GW-FWD"]["gw-out"] >= 1 and live["GW-IN"]["gw-out"] >= 1, live
        for chain in FIREWALL:
            dev.exec("iptables", "-Z", chain)
        dev.exec("systemctl", "restart", "llama-gateway")
        for name, model in ((A1, "tiny-a"), (A2, "tiny-a"), (B, "tiny-b")):
            wait_up(devices, name, model, 1, seconds=60)  # a check passed behind the rules
        c = client(devices, fleet["key"])
        for model in ("tiny-a", "tiny-b", "tiny-a", "tiny-b"):
            assert complete(c, model)
        seen = _counters(dev)
        # The gateway's traffic went through both chains, and nothing else was tried.
        assert seen["GW-FWD"]["gw-dev"] > 0 and seen["GW-IN"]["gw-dev"] > 0, seen
        assert {ch: {k: v for k, v in rules.items() if k != "gw-dev"}
                for ch, rules in seen.items()} == {
            "GW-FWD": {"gw-dns": 0, "gw-out": 0}, "GW-IN": {"gw-dns": 0, "gw-out": 0}}, seen
    finally:
        _firewall_off(dev)


def test_changing_a_model_updates_the_routes_in_the_same_run(
        devices: dict[str, lab.Device], fleet: dict) -> None:
    serves = {**fleet["serves"], A2: fleet["models"]["b"]}
    inv = write_inventory(fleet["folder"], devices, serves)
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    assert run.changed(B) >= 1 and run.changed(G) >= 1  # the routes (and the restarts)
    for via in (B, G):  # both gateways, in the same run
        wait_up(devices, A2, "tiny-b", 1, seconds=60, via=via)
        health = gateway_health(devices, via)
        assert set(health["tiny-a"]) == {A1} and set(health["tiny-b"]) == {A2, B}, health


def test_a_gateway_switched_off_is_removed(devices: dict[str, lab.Device], fleet: dict) -> None:
    """`gateway = False` again on B: its gateway stops and its unit and routes (with the keys)
    go in that run, B keeps serving its model, and the next run changes nothing."""
    dev = devices[B]
    serves = {**fleet["serves"], A2: fleet["models"]["b"]}
    inv = write_inventory(fleet["folder"], devices, serves, knobs={B: {"port": 8081}})
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    assert "gateway switched off: llama-gateway.service stopped and removed" in run.output
    assert dev.exec("systemctl", "is-active", "llama-gateway", check=False).strip() != "active"
    assert dev.exec("ls", "/etc/systemd/system/llama-gateway.service",
                    "/etc/llama-docker/gateway.cfg", check=False).strip() == ""
    assert dev.exec("docker", "ps", "-q", "--filter", "name=llama-gateway").strip() == ""
    wait_up(devices, B, "tiny-b", 1, seconds=60, via=G)  # B still serves, through G's gateway
    again = deploy(inv)
    assert again.code == 0 and again.changed(B) == 0, again.output[-4000:]



def test_a_server_that_becomes_gateway_only_stops_serving(devices: dict[str, lab.Device],
                                                          fleet: dict) -> None:
    """A1 served tiny-a on 8080; `gateway = "only"` on the same port: in one run its server
    unit stops and goes, the gateway takes 8080 (routes to tiny-b alone: nobody else serves
    tiny-a now), the model store stays, and the next run changes nothing."""
    dev = devices[A1]
    serves = {A2: fleet["models"]["b"], B: fleet["models"]["b"]}
    knobs = {B: {"port": 8081}, A1: {"gateway": "only", "gateway_port": 8080}}
    inv = write_inventory(fleet["folder"], devices, serves, knobs=knobs)
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    assert ("gateway only: llama-docker.service stopped and removed (its models stay in "
            "/var/lib/llama-docker/models)") in run.output, run.output[-4000:]
    assert dev.exec("systemctl", "is-active", "llama-docker", check=False).strip() != "active"
    assert dev.exec("sh", "-c", "ls /etc/systemd/system/llama-docker.service; "
                    "docker ps -q --filter name=^llama$", check=False).strip() == ""
    assert dev.exec("sh", "-c", "ls /var/lib/llama-docker/models/*.gguf | wc -l").strip() != "0"
    c = client(devices, fleet["key"], via=A1)
    assert [m.id for m in c.models.list()] == ["tiny-b"]
    assert complete(c, "tiny-b")
    again = deploy(inv)
    assert again.code == 0 and again.changed(A1) == 0, again.output[-4000:]
