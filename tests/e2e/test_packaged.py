"""The wheel, used the way a user would: installed in a virtualenv outside this checkout,
called from their own deploy.py next to an operation of their own, and as the `llama-docker`
command in a folder with no clone: deploy, remove, deploy again, host keys refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    Run,
    fresh_device,
    make_model,
    own_known_hosts,
    wait_healthy,
    write_knobs,
)
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-packaged"

device = fresh_device(HOST, index=38)
ENTRY_FILES = ("config.py", "deploy.py", "model.py", "rollback.py", "remove.py", "purge.py")
STORE = "/var/lib/llama-docker/models"

USER_DEPLOY = '''\
"""A user's own deploy: something of theirs, then a private LLM."""
from io import StringIO

from pyinfra.operations import files

from llama_docker.tasks import deploys

files.put(name="My own note", src=StringIO("managed by my deploy\\n"), dest="/tmp/my-note")
deploys.llama_server(model=MODEL, registry_mirror=MIRROR, apt_check_valid_until=False,
                     cache_dir=CACHE, webui="simplechat")
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the set-up installed setuptools and wheel, and tests reach no index.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(REPO)], check=True,
                   timeout=300, capture_output=True)
    (found,) = out.glob("llama_docker-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the checkout: this project's dependencies from the test run's own
    site (no index is reached), llama_docker itself only from the wheel. The site is added as
    a plain path, so its .pth files (this checkout's editable install among them) are not run."""
    env = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (purelib(env) / "test-run-deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([str(env / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    return env


def purelib(env: Path) -> Path:
    """The venv's site-packages folder."""
    (found,) = (env / "lib").glob("python3*/site-packages")
    return found


def test_the_wheel_carries_the_steps_templates_and_defaults(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("llama_docker/tasks/deploys.py", "llama_docker/tasks/preflight.py",
                 "llama_docker/tasks/summary.py", "llama_docker/tasks/cli.py",
                 *(f"llama_docker/tasks/entry/{name}" for name in ENTRY_FILES),
                 "llama_docker/files/Containerfile",
                 "llama_docker/files/entrypoint.sh", "llama_docker/files/llama-docker.service.j2",
                 "llama_docker/group_data/all.py"):
        assert need in names, need
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert "llama-docker = llama_docker.tasks.cli:main" in scripts
    assert "llama-docker-status = llama_docker.tasks.cli:status_main" in scripts


def run_user_deploy(venv: Path, folder: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # pyinfra comes from the test run's site (no index is reached): its console script is not
    # in the virtualenv, its module is.
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pyinfra", "-y", "inventory.py",
                           "deploy.py"],
                          cwd=folder, capture_output=True, text=True, timeout=900, env=env)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def test_a_users_own_deploy_converges_with_the_packaged_deploy(
        device: lab.Device, venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import llama_docker.tasks.deploys as d; print(d.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True, env=env).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not this checkout

    model = make_model(tmp_path, "tiny-pkg", seed=38)
    (tmp_path / "inventory.py").write_text(f"devices = {[(HOST, device.host_data())]!r}\n")
    (tmp_path / "deploy.py").write_text(
        f"MODEL = {model!r}\nMIRROR = {lab.REGISTRY!r}\nCACHE = {str(tmp_path / 'cache')!r}\n"
        + USER_DEPLOY)
    first = run_user_deploy(venv, tmp_path)
    assert first.code == 0, first.output[-4000:]
    assert device.exec("cat", "/tmp/my-note") == "managed by my deploy\n"
    wait_healthy(device.http_port)
    assert f"{HOST}  ok" in first.output  # the packaged deploy's own summary

    again = run_user_deploy(venv, tmp_path)
    assert again.code == 0, again.output[-3000:]
    assert again.changed(HOST) == 0, again.output[-3000:]

    status = subprocess.run([str(venv / "bin" / "llama-docker-status"), "inventory.py",
                             "--json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    (row,) = json.loads(status.stdout)
    # Knobs given in code are not in the inventory, so status sees the defaults' service.
    assert row["host"] == HOST and row["health"] == 200 and row["healthy"], row


def llama_docker(venv: Path, folder: Path, *args: str) -> Run:
    """The wheel's `llama-docker` command, run in `folder` (no checkout there)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(venv / "bin" / "llama-docker"), *args], cwd=folder,
                          capture_output=True, text=True, timeout=900, env=env)
    return Run(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def no_clone(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of a user's own: an inventory and the lab's knobs beside it, nothing else."""
    folder = tmp_path_factory.mktemp("no-clone")
    (folder / "inventory.py").write_text(
        f"lab = {[(HOST, own_known_hosts(folder, device))]!r}\n")
    write_knobs(folder, model=make_model(folder, "tiny-cli", seed=39))
    return folder


def sh(device: lab.Device, command: str) -> str:
    return device.exec("sh", "-c", command, check=False).strip()


def test_llama_docker_deploys_from_a_folder_with_no_clone(
        device: lab.Device, venv: Path, no_clone: Path) -> None:
    assert not (no_clone / "deploy.py").exists() and not (no_clone / "config.py").exists()
    first = llama_docker(venv, no_clone, "deploy", "inventory.py", "-y")
    assert first.code == 0, first.output[-4000:]
    assert f"{HOST}  ok" in first.output  # the summary, set up by the wheel's config.py
    wait_healthy(device.http_port)
    again = llama_docker(venv, no_clone, "deploy", "inventory.py", "-y")
    assert again.code == 0 and again.changed(HOST) == 0, again.output[-3000:]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    status = subprocess.run([str(venv / "bin" / "llama-docker"), "status", "inventory.py",
                             "--json"], cwd=no_clone, capture_output=True, text=True,
                            timeout=300, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    (row,) = json.loads(status.stdout)
    assert row["model"] == "tiny-cli" and row["health"] == 200 and row["healthy"], row


def test_remove_then_deploy_again_converges(device: lab.Device, venv: Path,
                                            no_clone: Path) -> None:
    gone = llama_docker(venv, no_clone, "remove", "inventory.py", "-y")
    assert gone.code == 0, gone.output[-4000:]
    assert f"{HOST}  ok" in gone.output and gone.changed(HOST) > 0, gone.output[-3000:]
    assert sh(device, "systemctl is-active llama-docker") != "active"
    assert sh(device, "test -e /etc/systemd/system/llama-docker.service || echo gone") == "gone"
    assert "llama" not in sh(device, "docker ps -a --format '{{.Names}}'").split()
    assert sh(device, "docker images --format '{{.Repository}}' | grep -c '^llama-docker/'") \
        == "0"
    assert sh(device, "ls -d /etc/llama-docker /opt/llama-docker 2>/dev/null || true") == ""
    assert ".gguf" in sh(device, f"ls {STORE}")  # the models stay without --purge
    assert sh(device, "systemctl is-active docker") == "active"  # the runtime is the device's

    twice = llama_docker(venv, no_clone, "remove", "inventory.py", "-y")
    assert twice.code == 0, twice.output[-3000:]
    assert twice.changed(HOST) == 0, twice.output[-3000:]

    back = llama_docker(venv, no_clone, "deploy", "inventory.py", "-y")
    assert back.code == 0, back.output[-4000:]
    assert f"{HOST}  ok" in back.output
    wait_healthy(device.http_port)
    assert sh(device, "systemctl is-active llama-docker") == "active"


def test_remove_purge_deletes_the_store(device: lab.Device, venv: Path,
                                        no_clone: Path) -> None:
    purged = llama_docker(venv, no_clone, "remove", "--purge", "inventory.py", "-y")
    assert purged.code == 0, purged.output[-4000:]
    assert sh(device, "ls -d /var/lib/llama-docker 2>/dev/null || echo gone") == "gone"
    twice = llama_docker(venv, no_clone, "remove", "--purge", "inventory.py", "-y")
    assert twice.code == 0 and twice.changed(HOST) == 0, twice.output[-3000:]


def test_an_unknown_host_key_is_refused_from_that_folder_and_through_the_packaged_deploy(
        device: lab.Device, venv: Path, tmp_path: Path) -> None:
    """The inventory says nothing of host keys and its known_hosts does not have the device:
    refused by `llama-docker` and by plain pyinfra with the packaged deploy and the two-line
    config.py, known_hosts untouched; with no config.py pyinfra's own default trusts the key
    on connecting, and the packaged deploy refuses the host before its first step and takes
    the key out of known_hosts again, so a second run is refused as well."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    data = {k: v for k, v in device.host_data().items() if k != "ssh_strict_host_key_checking"}
    (tmp_path / "inventory.py").write_text(
        f"lab = {[(HOST, {**data, 'ssh_known_hosts_file': str(known)})]!r}\n")
    write_knobs(tmp_path, model=make_model(tmp_path, "tiny-keys", seed=40))
    port = device.ssh_port
    refused = re.compile(
        rf"{HOST}\s+UNREACHABLE\s+host key of \[127\.0\.0\.1\]:{port} is not in "
        rf"{re.escape(str(known))}: refused; .*ssh-keyscan -p {port} 127\.0\.0\.1 >> "
        rf"{re.escape(str(known))}")

    cli = llama_docker(venv, tmp_path, "deploy", "inventory.py", "-y")
    assert cli.code != 0 and refused.search(cli.output), cli.output[-3000:]
    assert known.read_text() == ""

    (tmp_path / "deploy.py").write_text(
        "from llama_docker.tasks import deploys\n\ndeploys.llama_server()\n")
    (tmp_path / "config.py").write_text(
        "from llama_docker.tasks.before_connect import setup\n\nsetup()\n")
    packaged = run_user_deploy(venv, tmp_path)
    assert packaged.code != 0 and refused.search(packaged.output), packaged.output[-3000:]
    assert known.read_text() == ""

    (tmp_path / "config.py").unlink()
    taken_back = re.compile(
        rf"{HOST}\s+REFUSED\s+its host key was not in {re.escape(str(known))}; pyinfra's "
        r"default \(accept-new\) added it unchecked and llama-docker removed it again: "
        rf"refused; .*ssh-keyscan -p {port} 127\.0\.0\.1 >> {re.escape(str(known))}")
    for _ in range(2):  # the key pyinfra added is taken back: the next run is refused too
        unset = run_user_deploy(venv, tmp_path)
        assert unset.code != 0 and taken_back.search(unset.output), unset.output[-3000:]
        assert "Preflight" not in unset.output  # refused before the first fact
        assert known.read_text() == ""
        assert [p.name for p in tmp_path.glob("known_hosts*")] == ["known_hosts"]
