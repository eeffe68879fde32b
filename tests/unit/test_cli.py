"""The `llama-docker` command: each subcommand's help, the knobs of every host checked before
anything is contacted, and the pyinfra run it becomes (its config, deploy file and options)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llama_docker.tasks import cli

REPO = Path(__file__).resolve().parents[2]
PURPOSE = {
    "deploy": "deploy llama-server to every device of the inventory",
    "plan": "the dry run",
    "model": "redeploy only the model",
    "rollback": "serve each device's previous model again",
    "remove": "stop and remove llama-docker's units, containers and images",
    "status": "one table for every device",
    "bundle": "write the lock file and every cached file it names",
}


def closed_port() -> int:
    """A local port nobody listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The command in a process of its own (pyinfra_cli patches a process with gevent when it is
# imported): a host contacted fails it, and pyinfra's run is printed instead of started.
RUNNER = """
import json, sys
import paramiko
from llama_docker.tasks import cli

def contacted(*args, **kwargs):
    raise SystemExit("a host was contacted before the knobs were checked")

def ran(argv):
    print("RAN " + json.dumps(argv))
    sys.exit(0)

paramiko.SSHClient.connect = contacted
cli.run_pyinfra = ran
sys.exit(cli.main(sys.argv[1:]))
"""


@dataclass
class Done:
    code: int
    err: list[str]
    argv: list[str] | None  # what pyinfra would have been run with


def llama_docker(folder: Path, *args: str) -> Done:
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=folder,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(folder)})
    ran = [line[4:] for line in proc.stdout.splitlines() if line.startswith("RAN ")]
    return Done(proc.returncode, proc.stderr.splitlines(), json.loads(ran[0]) if ran else None)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A folder of the user's with a two-host inventory: raspi has two bad knobs."""
    port = closed_port()
    (tmp_path / "inventory.py").write_text(
        f'home = [("raspi", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}, '
        f'"port": 99999, "ctx_sise": 4096}}),\n'
        f'        ("nas", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}}})]\n')
    return tmp_path


@pytest.mark.parametrize("name", list(PURPOSE))
def test_every_subcommand_says_its_purpose(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    said = " ".join(capsys.readouterr().out.split())  # argparse wraps its lines
    assert PURPOSE[name] in said.lower(), said


def test_the_top_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    said = capsys.readouterr().out
    for name in PURPOSE:
        assert f"    {name} " in said, said


def test_the_installed_command_runs_from_another_folder(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "llama-docker"
    if not script.exists():
        pytest.skip("the console script is installed with the project (pip install -e .)")
    done = subprocess.run([str(script), "plan", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "pyinfra INVENTORY deploy.py --dry" in done.stdout


def test_bad_knobs_of_an_unreachable_host_said_before_any_connection(home: Path) -> None:
    done = llama_docker(home, "deploy", "inventory.py", "-y")
    assert done.code == 2 and done.argv is None, done
    err = done.err
    assert "raspi: knob port=99999 is invalid: expected a whole number from 1 to 65535" in err
    assert ("raspi: knob ctx_sise=4096 is invalid: expected a knob of group_data/all.py "
            "(did you mean 'ctx_size'?)") in err
    assert not [line for line in err if line.startswith("nas:")]


def test_data_given_on_the_command_line_is_checked(home: Path) -> None:
    done = llama_docker(home, "plan", "inventory.py", "--limit", "nas", "--data", "gpu=cuda")
    assert done.code == 2
    assert done.err[0].startswith("nas: knob gpu='cuda' is invalid"), done


def test_a_limit_leaves_the_other_hosts_knobs_alone(home: Path) -> None:
    argv = llama_docker(home, "deploy", "inventory.py", "--limit", "nas", "-y").argv
    assert argv is not None
    assert argv[1:5] == ["-m", "pyinfra", "--config", str(cli.ENTRY / "config.py")]
    assert argv[5:] == ["inventory.py", "--limit", "nas", "-y", str(cli.ENTRY / "deploy.py")]


@pytest.mark.parametrize(("args", "entry", "extra"), [
    (["plan"], "deploy.py", ["--dry"]),
    (["model"], "model.py", []),
    (["rollback"], "rollback.py", []),
    (["remove"], "remove.py", []),
    (["remove", "--purge"], "purge.py", []),
])
def test_each_command_is_its_deploy_file(home: Path, args: list[str], entry: str,
                                         extra: list[str]) -> None:
    argv = llama_docker(home, *args, "inventory.py", "--limit", "nas",
                        "--use-sudo-password").argv
    assert argv is not None
    assert argv[5:] == [*extra, "inventory.py", "--limit", "nas", "--use-sudo-password",
                        str(cli.ENTRY / entry)]
    assert Path(argv[-1]).is_file() and Path(argv[4]).is_file()


@pytest.mark.parametrize(("args", "said"), [
    (["deploy"], "give the inventory file"),
    (["deploy", "nowhere.py"], "no inventory file nowhere.py"),
    (["deploy", "inventory.py", "deploy.py"], "runs its own deploy file"),
])
def test_what_cannot_run_is_said_in_one_line(home: Path, args: list[str], said: str) -> None:
    done = llama_docker(home, *args)
    assert done.code == 2 and len(done.err) == 1 and said in done.err[0], done


def test_an_inventory_that_does_not_load_is_one_line(home: Path) -> None:
    (home / "broken.py").write_text("home = [(\n")
    done = llama_docker(home, "deploy", "broken.py")
    assert done.code == 2 and len(done.err) == 1, done
    assert done.err[0].startswith("llama-docker: cannot load broken.py:")


def test_plain_pyinfra_names_the_bad_knob_of_a_host_it_cannot_reach(tmp_path: Path) -> None:
    """Without the CLI's check: pyinfra tries, fails to connect, and the summary says the
    knob (the host would have been refused anyway) rather than only UNREACHABLE."""
    (tmp_path / "inventory.py").write_text(
        f'home = [("raspi", {{"ssh_hostname": "127.0.0.1", "ssh_port": {closed_port()}, '
        '"port": 99999})]\n')
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(tmp_path / "inventory.py"),
                           "deploy.py"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode != 0
    summary = done.stderr[done.stderr.index("--> llama-docker summary"):]
    assert "raspi  REFUSED      knob port=99999 is invalid: expected a whole number" in summary, \
        done.stdout + done.stderr


def test_the_run_reads_the_folders_own_config_after_the_packages(home: Path) -> None:
    """The real pyinfra run (its one host refuses connections): the package's config.py sets
    up the summary, and a config.py of the user's folder is still read, as pyinfra would."""
    (home / "config.py").write_text('print("the folder\'s own config.py")\n')
    proc = subprocess.run([sys.executable, "-c", "import sys; from llama_docker.tasks.cli "
                           "import main; sys.exit(main())", "deploy", "inventory.py",
                           "--limit", "nas", "-y"], cwd=home, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(home)})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "the folder's own config.py" in out, out
    assert "nas  UNREACHABLE  could not connect" in out, out
