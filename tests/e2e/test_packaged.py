"""The wheel, used the way a pyinfra user would: installed in a virtualenv outside this
checkout, called from their own deploy.py next to an operation of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, Run, fresh_device, make_model, wait_healthy
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-packaged"

device = fresh_device(HOST, index=38)

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
                 "llama_docker/tasks/summary.py", "llama_docker/files/Containerfile",
                 "llama_docker/files/entrypoint.sh", "llama_docker/files/llama-docker.service.j2",
                 "llama_docker/group_data/all.py"):
        assert need in names, need
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "llama-docker-status = llama_docker.status.cli:main" in \
        zipfile.ZipFile(wheel).read(entry).decode()


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
