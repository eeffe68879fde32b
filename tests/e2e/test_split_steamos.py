"""A split with a Steam Deck at either end: the deck as the head (its server rootless in
podman on the host's network, its link forwards as systemd user units, its link key under
/home/deck), then the roles swapped in the next run, the deck as the worker (its RPC server
rootless, bound to its loopback, reached through its own sshd). Nothing on the deck goes
outside /home/deck, and no package manager is called."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import deploy, http_json, wait_healthy, write_knobs
from tests.e2e.test_split import _inventory
from tests.lab import images, lab
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
DECK, BOX = "e2e-split-deck", "e2e-split-box"
RPC_PORT = 50052


@pytest.fixture(scope="module")
def devices(device_image: str) -> Iterator[dict[str, lab.Device]]:
    devs = {DECK: lab.start_device(DECK, images.build_steamos(), index=123, fresh=True,
                                   profile="steamos", own_keys=True),
            BOX: lab.start_device(BOX, device_image, index=124, fresh=True, own_keys=True)}
    yield devs
    for d in devs.values():
        lab.remove_device(d)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("split-deck")
    path = folder / "split-deck.gguf"
    sha = write_tiny_gguf(path, seed=33, n_embd=512, n_ff=1024, n_head=8, n_layer=4)
    write_knobs(folder, model={"name": "tiny-split-deck", "path": str(path), "sha256": sha},
                ctx_size=256)
    return folder, {"sha256": sha}


def _completes(dev: lab.Device) -> dict:
    wait_healthy(dev.http_port, 240)
    status, body = http_json(f"http://127.0.0.1:{dev.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 8}, timeout=120)
    assert status == 200 and body.get("tokens_predicted", 0) > 0, body
    return body


def _split(inv: Path, head: lab.Device, worker: lab.Device) -> None:
    """The deploy converges, says the split over these two, and the head answers."""
    run = deploy(inv, timeout=2400)
    assert run.code == 0, run.output[-6000:]
    assert re.search(rf"\[{head.name}\]\s+split: \d+ layers here .*, \d+ layers on "
                     rf"{worker.name} ", run.output), run.output[-4000:]
    _completes(head)


def _second_run_changes_nothing(inv: Path) -> None:
    again = deploy(inv, timeout=1200)
    assert again.code == 0, again.output[-4000:]
    for name in (DECK, BOX):
        assert again.changed(name) == 0, again.output[-4000:]


def _as_deck(deck: lab.Device, command: str) -> str:
    return deck.exec("runuser", "-u", "deck", "--", "env", "XDG_RUNTIME_DIR=/run/user/1000",
                     "sh", "-c", command, check=False)


def test_the_deck_heads_a_split_over_a_debian_box(
        devices: dict[str, lab.Device], model: tuple[Path, dict]) -> None:
    """Seen: the run splits the model over the deck and the box; the deck answers
    /completion through the box's RPC server; its link forward is a user unit of deck's;
    its server's --rpc names the forward | Left: no package manager called on the deck,
    nothing of ours outside /home/deck; a second run changes nothing"""
    deck, box = devices[DECK], devices[BOX]
    folder, _ = model
    inv = _inventory(folder, [deck, box], {DECK: {"split_over": [BOX]}})
    _split(inv, deck, box)
    units = _as_deck(deck, "systemctl --user list-units --all --no-legend 'llama-docker*'")
    assert "llama-docker-link" in units, units
    unit = _as_deck(deck, "cat ~/.config/systemd/user/llama-docker.service")
    assert f"--rpc 127.0.0.1:{RPC_PORT + 1}" in unit, unit
    assert deck.exec("cat", "/var/log/lab-forbidden.log", check=False).strip() == ""
    assert "active" in box.exec("systemctl", "is-active", "llama-docker-rpc.service",
                                check=False)

    _second_run_changes_nothing(inv)


def test_then_the_deck_is_the_worker_of_the_box(
        devices: dict[str, lab.Device], model: tuple[Path, dict]) -> None:
    """Seen: with split_over moved to the box, the box answers /completion through the
    deck's rootless RPC server, which listens on the deck's loopback only; the deck's own
    server and link forward are gone | Left: a second run changes nothing"""
    deck, box = devices[DECK], devices[BOX]
    folder, _ = model
    inv = _inventory(folder, [deck, box], {BOX: {"split_over": [DECK]}})
    _split(inv, box, deck)
    listening = deck.exec("sh", "-c", "cat /proc/net/tcp | awk '$4 == \"0A\"'; true")
    port_hex = f"{RPC_PORT:04X}"
    ours = [line.split()[1] for line in listening.splitlines()
            if line.split()[1].endswith(":" + port_hex)]
    assert ours == ["0100007F:" + port_hex], listening  # the deck's loopback only
    rpc = _as_deck(deck, "podman ps --format '{{.Names}}'")
    assert "llama-rpc" in rpc, rpc  # rootless, as deck
    units = _as_deck(deck, "systemctl --user list-units --all --no-legend "
                           "'llama-docker-link*'")
    assert "llama-docker-link" not in units, units
    server = _as_deck(deck, "systemctl --user is-active llama-docker.service").strip()
    assert server != "active", server  # a worker runs only its RPC server
    assert deck.exec("cat", "/var/log/lab-forbidden.log", check=False).strip() == ""

    _second_run_changes_nothing(inv)
