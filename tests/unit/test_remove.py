"""`llama-docker remove`: what it runs on a deployed device of each family (from fact
fixtures), that the store goes only with --purge, and that a removed device gets no operation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llama_docker.device import leftovers
from llama_docker.device.target import choose

from .fixtures.harness import Run, knobs, load_fixture, run_deploy

SERVER = "llama-docker/server:0123456789ab"
LINUX_UNIT = "/etc/systemd/system/llama-docker.service"
GATEWAY_UNIT = "/etc/systemd/system/llama-gateway.service"
DECK_UNIT = "/home/deck/.config/systemd/user/llama-docker.service"
AGENTS = "/Users/me/Library/LaunchAgents"
RUNNING = {"SystemdStatus(*)": {"llama-docker.service": True, "llama-gateway.service": True},
           "SystemdEnabled(*)": {"llama-docker.service": True, "llama-gateway.service": True}}
FOLDER = {"mode": 755, "user": "root", "group": "root"}


def remove(tmp_path: Path, fixture: str, facts: dict[str, Any], purge: bool = False,
           **overrides: Any) -> Run:
    data = knobs(ssh_user="deck" if fixture == "steamos" else "me",
                 cache_dir=str(tmp_path / "cache"), **overrides)
    entry = "tasks/entry/purge.py" if purge else "remove.py"
    return run_deploy(f"{fixture}.local", data, {**load_fixture(fixture), **facts}, entry=entry)


def there(*paths: str) -> dict[str, Any]:
    """Facts of paths that exist: PathExists for the batch, File or Directory for the op."""
    facts: dict[str, Any] = {}
    for path in paths:
        facts[f"PathExists({path})"] = True
        kind = "File" if path.endswith((".service", ".plist", "api-key", ".header")) \
            else "Directory"
        facts[f"{kind}({path})"] = FOLDER if kind == "Directory" else {"mode": 644}
    return facts


def deployed_debian(**more: Any) -> dict[str, Any]:
    return {**RUNNING, **there(LINUX_UNIT, GATEWAY_UNIT, "/etc/llama-docker",
                                "/opt/llama-docker", "/var/lib/llama-docker"),
            "Leftovers": {"docker": {"containers": ["llama"],
                                     "images": [SERVER, "llama-docker/gateway:ba9876543210"]}},
            **more}


def test_debian_units_containers_images_and_folders_go_the_store_stays(tmp_path: Path
                                                                       ) -> None:
    run = remove(tmp_path, "debian", deployed_debian())
    commands = run.commands()
    assert any("systemctl stop llama-docker.service" in c for c in commands), commands
    assert any("systemctl disable llama-docker.service" in c for c in commands), commands
    assert any("systemctl stop llama-gateway.service" in c for c in commands), commands
    assert f"rm -f {LINUX_UNIT}" in commands and f"rm -f {GATEWAY_UNIT}" in commands
    assert "docker rmi llama-docker/server:0123456789ab llama-docker/gateway:ba9876543210" \
        in commands
    assert any(c.startswith("for i in ") and "docker rm -f llama " in c for c in commands)
    assert "rm -rf /etc/llama-docker" in commands and "rm -rf /opt/llama-docker" in commands
    assert not [c for c in commands if "/var/lib/llama-docker" in c]  # the models stay
    assert all(op.sudo for op in run.ops), [op.name for op in run.ops if not op.sudo]
    # units stop before their images go
    names = run.names()
    stop = next(i for i, n in enumerate(names) if "stop llama-docker.service" in n)
    images = next(i for i, n in enumerate(names) if "containers and images" in n)
    assert stop < images


def test_purge_deletes_the_store_too(tmp_path: Path) -> None:
    run = remove(tmp_path, "debian", deployed_debian(), purge=True)
    assert "rm -rf /var/lib/llama-docker" in run.commands()


def test_purge_refuses_a_store_that_is_somebody_elses_folder(tmp_path: Path) -> None:
    (op,) = remove(tmp_path, "debian", deployed_debian(), purge=True, models_dir="/home/me").ops
    assert op.name.endswith("Refuse this host")
    assert "--purge would delete /home/me" in op.calls[0]["message"]


@pytest.mark.parametrize("fixture", ["debian", "steamos", "macos"])
@pytest.mark.parametrize("purge", [False, True])
def test_a_removed_device_gets_no_operation(tmp_path: Path, fixture: str, purge: bool
                                           ) -> None:
    """Nothing of llama-docker is there (the fixtures' paths do not exist): a second run of
    remove changes nothing."""
    facts = {"PathExists(*)": False, "Leftovers": {}, "ColimaProfile(llama-docker)": False}
    run = remove(tmp_path, fixture, facts, purge=purge)
    assert run.ops == [], run.names()


def test_steam_deck_user_unit_and_rootless_podman_without_sudo(tmp_path: Path) -> None:
    facts = {**RUNNING, **there(DECK_UNIT, "/home/deck/.config/llama-docker",
                                "/home/deck/.local/share/llama-docker/build"),
             "PathExists(*)": False,
             "Leftovers": {"podman": {"containers": [],
                                      "images": [f"localhost/{SERVER}"]}}}
    run = remove(tmp_path, "steamos", facts)
    commands = run.commands()
    assert any("systemctl --user stop llama-docker.service" in c for c in commands), commands
    assert f"podman rmi localhost/{SERVER}" in commands
    assert "rm -rf /home/deck/.local/share/llama-docker/build" in commands
    assert not [c for c in commands if "models" in c]
    assert not [op.name for op in run.ops if op.sudo]
    assert all(op.env.get("XDG_RUNTIME_DIR") == "/run/user/1000" for op in run.ops
               if "systemctl" in " ".join(op.commands))


def test_mac_agents_booted_out_images_removed_before_colima_goes(tmp_path: Path) -> None:
    server, colima = (f"{AGENTS}/com.llama-docker.llama-docker.plist",
                      f"{AGENTS}/com.llama-docker.colima.plist")
    facts = {**there(server, colima, "/Users/me/.llama-docker/build",
                     "/Users/me/.llama-docker/api-key"),
             "PathExists(*)": False, "ColimaProfile(llama-docker)": True,
             "Leftovers": {"docker": {"containers": [], "images": [SERVER]}}}
    run = remove(tmp_path, "macos", facts)
    commands = run.commands()
    order = [next(i for i, c in enumerate(commands) if needle in c) for needle in (
        "bootout gui/501/com.llama-docker.llama-docker", f"docker rmi {SERVER}",
        "bootout gui/501/com.llama-docker.colima", "colima delete --force")]
    assert order == sorted(order), commands
    assert f"rm -f {server}" in commands and f"rm -f {colima}" in commands
    assert "rm -f /Users/me/.llama-docker/api-key" in commands
    assert not [c for c in commands if "/Users/me/.llama-docker/models" in c]
    assert not [op.name for op in run.ops if op.sudo]
    rmi = next(op for op in run.ops if f"docker rmi {SERVER}" in op.commands)
    assert rmi.env["DOCKER_CONTEXT"] == "colima-llama-docker"


def test_what_is_listed_per_family() -> None:
    deb = choose("debian", "auto", "auto", "/home/pi", "llama-docker")
    assert leftovers.folders(deb, purge=False) == ["/etc/llama-docker", "/opt/llama-docker"]
    assert leftovers.folders(deb, purge=True)[-1] == "/var/lib/llama-docker"
    own = choose("debian", "auto", "/srv/models", "/home/pi", "llama-docker")
    assert "/srv/models" in leftovers.folders(own, purge=True)
    assert "/srv" not in leftovers.folders(own, purge=True)  # the user's folder stays
    mac = choose("macos", "auto", "auto", "/Users/me", "llama-docker")
    assert leftovers.files(mac, purge=False) == ["/Users/me/.llama-docker/api-key",
                                                  "/Users/me/.llama-docker/api-key.header"]
    assert leftovers.files(mac, purge=True) == []  # the whole ~/.llama-docker goes


def test_listing_is_parsed_per_runtime() -> None:
    got = leftovers.parse_listing(["C docker llama", f"I docker {SERVER} 1a2b",
                                   "I docker llama-docker/server:<none> 3c4d",  # by its ID
                                   f"I podman localhost/{SERVER} 5e6f", "docker: not running"])
    assert got == {"docker": {"containers": ["llama"], "images": [SERVER, "3c4d"]},
                   "podman": {"containers": [], "images": [f"localhost/{SERVER}"]}}
