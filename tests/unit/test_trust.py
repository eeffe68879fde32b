"""Host keys from any folder: strict unless the user's data says otherwise, an unknown key
refused in one line naming ssh-keyscan; against a real SSH server on 127.0.0.1, through the
`llama-docker` command, plain pyinfra with the packaged deploy, and the status table."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.connectors.ssh import SSHConnector

from llama_docker.tasks import trust

from .fixtures.ssh_server import ssh_server

USER_DEPLOY = "from llama_docker.tasks import deploys\n\ndeploys.llama_server()\n"
SETUP = "from llama_docker.tasks.before_connect import setup\n\nsetup()\n"
NAS = "nas.lan ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"


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
    packaged deploy then refuses the host before it changes anything and takes the key out
    of known_hosts again, so the next run is refused as well, not waved through."""
    folder, line = fresh
    known = folder / "known_hosts"
    mine = f"# mine\n{NAS}"
    known.write_text(mine)
    known.chmod(0o600)
    port = line.split("]:")[1].split()[0]
    (folder / "deploy.py").write_text(USER_DEPLOY)
    for _ in range(2):
        proc = run(folder, "-m", "pyinfra", "-y", "inventory.py", "deploy.py")
        assert proc.returncode != 0
        assert (f"dev  REFUSED      its host key was not in {known}; pyinfra's default "
                "(accept-new) added it unchecked and llama-docker removed it again: refused; "
                "check and pin it first (README, Deploying to your own devices, step 2): "
                f"ssh-keyscan -p {port} 127.0.0.1 >> {known} (a config.py with "
                "llama_docker.tasks.before_connect.setup() refuses such a host before "
                "connecting)\n") in summary(proc), summary(proc)
        assert "Preflight" not in proc.stdout + proc.stderr  # stopped before the first fact
        assert known.read_text() == mine and known.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in folder.glob("known_hosts*")) == ["known_hosts"]


KEY_TYPE = "ssh-ed25519"
KEY_B64 = "AAAAC3NzaC1lZDI1NTE5AAAAIHVb2kvYxv4kGQnPAw6o7zbvnxiPv8pAJ3aS0AkGQ0Vh"
USERS = (  # a user's own known_hosts: none of it is the accept-new line
    "# pinned by hand\n"
    f"{NAS}"
    "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ecdsa-sha2-nistp256 AAAAE2\n"
    "[raspi.local]:2222 ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7\n"
    f"@revoked * {KEY_TYPE} {KEY_B64}\n"
    "\n")


def test_forget_key_drops_only_the_line_accept_new_appended(tmp_path: Path) -> None:
    """pyinfra's own writer appends the line; everything else stays byte for byte, the mode
    with it, and no `.old` or temporary file is left beside it."""
    from paramiko import PKey
    from pyinfra.connectors.sshuserclient.client import append_hostkey

    known = tmp_path / "known_hosts"
    known.write_text(USERS)
    known.chmod(0o600)
    key = PKey.from_type_string(KEY_TYPE, base64.b64decode(KEY_B64))
    append_hostkey(SimpleNamespace(_host_keys_filename=str(known)), "[raspi.local]:2222", key)
    assert known.read_text().endswith(f"[raspi.local]:2222 {KEY_TYPE} {KEY_B64}\n")
    assert trust.forget_key(str(known), KEY_TYPE, KEY_B64) == ["[raspi.local]:2222"]
    assert known.read_text() == USERS and known.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["known_hosts"]
    assert trust.forget_key(str(known), KEY_TYPE, KEY_B64) == []  # nothing more to take
    assert trust.forget_key(str(tmp_path / "none"), KEY_TYPE, KEY_B64) == []


def test_forget_key_keeps_an_earlier_line_with_the_same_key(tmp_path: Path) -> None:
    """A line paramiko could not read (a bad line before it stops its reading) is the
    user's: only the last one, the appended one, goes."""
    known = tmp_path / "known_hosts"
    theirs = f"raspi.local {KEY_TYPE} {KEY_B64}\n"
    known.write_text(theirs + f"raspi.local {KEY_TYPE} {KEY_B64}\n")
    assert trust.forget_key(str(known), KEY_TYPE, KEY_B64) == ["raspi.local"]
    assert known.read_text() == theirs


def test_forget_key_rewrites_a_symlinks_target(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "known_hosts"
    target.parent.mkdir()
    target.write_text(USERS + f"raspi.local {KEY_TYPE} {KEY_B64}\n")
    link = tmp_path / "known_hosts"
    link.symlink_to(target)
    assert trust.forget_key(str(link), KEY_TYPE, KEY_B64) == ["raspi.local"]
    assert link.is_symlink() and target.read_text() == USERS


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
