"""Host keys from any folder: strict unless the user's data says otherwise, an unknown key
refused in one line naming ssh-keyscan; against a real SSH server on 127.0.0.1, through the
`llama-docker` command, plain pyinfra with the packaged deploy, and the status table."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.connectors.ssh import SSHConnector

from llama_docker.tasks import trust

from .fixtures.ssh_server import ssh_server

USER_DEPLOY = "from llama_docker.tasks import deploys\n\ndeploys.llama_server()\n"
SETUP = "from llama_docker.tasks.before_connect import setup\n\nsetup()\n"


@pytest.fixture
def pyinfra_default() -> Iterator[None]:
    """strict_by_default() changes pyinfra's default for this process: put it back."""
    meta = SSHConnector.data_meta[trust.KEY]
    kept = meta.default
    yield
    meta.default = kept


def connector_setting(data: dict, groups: dict | None = None) -> str:
    inventory = Inventory((["dev"], {}), **(groups or {}), **{"mine": (["dev"], data)})
    State(inventory, Config())
    return inventory.get_host("dev").connector.data[trust.KEY]


def test_strict_by_default_unless_the_users_data_says_otherwise(pyinfra_default: None
                                                                 ) -> None:
    assert connector_setting({}) == "accept-new"  # pyinfra's own default
    trust.strict_by_default()
    assert connector_setting({}) == "yes"
    assert connector_setting({trust.KEY: "accept-new"}) == "accept-new"


@pytest.mark.parametrize(("reason", "line"), [
    ("SSH error (StrictPolicy: No host key for [127.0.0.1]:2222 found in known_hosts)",
     "host key of [127.0.0.1]:2222 is not in /k: refused; check and pin it first (README, "
     "Deploying to your own devices, step 2): ssh-keyscan -p 2222 127.0.0.1 >> /k"),
    ("SSH error (StrictPolicy: No host key for raspi.local found in known_hosts)",
     "host key of raspi.local is not in /k: refused; check and pin it first (README, "
     "Deploying to your own devices, step 2): ssh-keyscan raspi.local >> /k"),
    ("could not connect: [Errno None] Unable to connect to port 22 on 10.0.0.9", ""),
])
def test_unknown_host_line(reason: str, line: str) -> None:
    assert trust.unknown_host_line(reason, "/k") == line


def run(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=folder, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(folder)})


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder with no clone and no config.py: an inventory whose one device's host key is
    not in its (empty) known_hosts; the device's known_hosts line beside."""
    with ssh_server(tmp_path) as (port, line, key):
        (tmp_path / "known_hosts").write_text("")
        (tmp_path / "inventory.py").write_text(
            f'home = [("dev", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}, '
            f'"ssh_user": "pi", "ssh_key": "{key}", '
            f'"ssh_known_hosts_file": "{tmp_path / "known_hosts"}"}})]\n')
        yield tmp_path, line


def summary(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout + proc.stderr
    assert "--> llama-docker summary" in out, out
    return out[out.index("--> llama-docker summary"):]


def test_the_command_refuses_an_unknown_host_from_any_folder(fresh: tuple[Path, str]) -> None:
    folder, line = fresh
    port = line.split("]:")[1].split()[0]
    proc = run(folder, "-c", "import sys; from llama_docker.tasks.cli import main; "
                             "sys.exit(main())", "deploy", "inventory.py", "-y")
    assert proc.returncode != 0
    (row,) = [r for r in summary(proc).splitlines() if r.strip().startswith("dev ")]
    assert row.strip().split("  ", 2)[1:] == ["UNREACHABLE", (
        f"host key of [127.0.0.1]:{port} is not in {folder / 'known_hosts'}: refused; check "
        "and pin it first (README, Deploying to your own devices, step 2): "
        f"ssh-keyscan -p {port} 127.0.0.1 >> {folder / 'known_hosts'}")], row
    assert (folder / "known_hosts").read_text() == ""  # nothing trusted on first use


def test_the_packaged_deploy_with_the_setup_in_config_py(fresh: tuple[Path, str]) -> None:
    folder, _ = fresh
    (folder / "deploy.py").write_text(USER_DEPLOY)
    (folder / "config.py").write_text(SETUP)
    proc = run(folder, "-m", "pyinfra", "-y", "inventory.py", "deploy.py")
    assert proc.returncode != 0
    assert "ssh-keyscan -p " in summary(proc), summary(proc)
    assert (folder / "known_hosts").read_text() == ""


def test_the_packaged_deploy_alone_refuses_what_pyinfra_trusted_unchecked(
        fresh: tuple[Path, str]) -> None:
    """No config.py: pyinfra's default accepts the key before any deploy file runs; the
    packaged deploy then refuses the host before it changes anything."""
    folder, _ = fresh
    (folder / "deploy.py").write_text(USER_DEPLOY)
    proc = run(folder, "-m", "pyinfra", "-y", "inventory.py", "deploy.py")
    assert proc.returncode != 0
    assert "dev  REFUSED      its host key was not in known_hosts and pyinfra's default " \
           "(accept-new) has just added it unchecked" in summary(proc)
    assert "Preflight" not in proc.stdout + proc.stderr  # stopped before the first fact


def test_a_pinned_key_is_not_refused(fresh: tuple[Path, str]) -> None:
    folder, line = fresh
    (folder / "known_hosts").write_text(line + "\n")
    (folder / "deploy.py").write_text(USER_DEPLOY)
    proc = run(folder, "-m", "pyinfra", "-y", "inventory.py", "deploy.py")
    out = proc.stdout + proc.stderr
    assert "[dev] Connected" in out and "host key" not in summary(proc), out


def test_status_from_any_folder_trusts_nothing_new(fresh: tuple[Path, str]) -> None:
    folder, _ = fresh
    proc = run(folder, "-c", "import sys; from llama_docker.tasks.cli import main; "
                             "sys.exit(main())", "status", "inventory.py")
    assert proc.returncode == 1
    assert "host key not in known_hosts" in proc.stdout, proc.stdout + proc.stderr
    assert (folder / "known_hosts").read_text() == ""
