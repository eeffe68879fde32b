"""No-op re-run: a converged fleet, the whole deploy again, against two references.

The floor is `pyinfra -y INV exec -- true` on the same devices (connect, one command,
disconnect): nothing can be faster with pyinfra. The other reference is the same converge
as an Ansible playbook (bench/ansible/site.yml, builtin modules only), run with pipelining
on and a fresh SSH control socket each run (no connection left warm from the previous one).
Ansible needs Python on the devices; the bench installs python3 there (pyinfra does not).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

from llama_docker.device.image import build_args, image_tag
from llama_docker.device.units import FILES

from .common import (
    REPO,
    WORK,
    Lab,
    Result,
    Row,
    deploy,
    interleave,
    inventory,
    lab,
    log,
    med,
    model,
    ratio_rounds,
    rounds,
    run,
    timed,
    write_knobs,
)

VENV = lab.STATE / "venv-ansible"  # beside the lab state: kept between runs, not in git
PLAYBOOK = REPO / "bench" / "ansible" / "site.yml"
ANSIBLE = "ansible-core>=2.17,<2.20"
STORE = "/var/lib/llama-docker/models"


def ansible_playbook() -> Path:
    """ansible-core from PyPI in a venv of its own (created once, kept)."""
    exe = VENV / "bin" / "ansible-playbook"
    if not exe.exists():
        log(f"installing {ANSIBLE} into {VENV}")
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(VENV / "bin" / "pip"), "install", "-q", ANSIBLE], timeout=600)
    return exe


def _python_on(devs: list[lab.Device]) -> None:
    """Ansible's modules run in Python on the device: install it, in parallel."""
    def one(d: lab.Device) -> None:
        d.exec("sh", "-c", "command -v python3 >/dev/null && python3 -c 'import apt' || "
               "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
               "python3 python3-apt >/dev/null", timeout=300)

    threads = [threading.Thread(target=one, args=(d,)) for d in devs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(320)


def _ansible_files(folder: Path, devs: list[lab.Device], model_path: Path, sha: str) -> Path:
    """inventory.ini, ansible.cfg and vars.json for the playbook; returns the inventory."""
    key, known = lab.STATE / "id_ed25519", lab.STATE / "known_hosts"
    hosts = "\n".join(f"{d.name} ansible_host=127.0.0.1 ansible_port={d.ssh_port}" for d in devs)
    inv = folder / "inventory.ini"
    inv.write_text(
        f"[lab]\n{hosts}\n\n[lab:vars]\nansible_user=pi\nansible_ssh_private_key_file={key}\n"
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n"
        "ansible_python_interpreter=/usr/bin/python3\n")
    (folder / "ansible.cfg").write_text(
        "[defaults]\nforks = 10\nhost_key_checking = True\nretry_files_enabled = False\n"
        "interpreter_python = /usr/bin/python3\n\n[ssh_connection]\npipelining = True\n")
    args = build_args("debian:forky-slim", False)
    dev = devs[0]
    (folder / "vars.json").write_text(json.dumps({
        "daemon_json": dev.exec("cat", "/etc/docker/daemon.json"),
        "unit": dev.exec("cat", "/etc/systemd/system/llama-docker.service"),
        "image": image_tag(args), "context": "/opt/llama-docker/build", "files_dir": str(FILES),
        "build_flags": " ".join(f"--build-arg {k}={v}" for k, v in sorted(args.items())),
        "models_dir": STORE, "sha256": sha, "model_path": str(model_path),
    }))
    return inv


def _ansible(exe: Path, folder: Path, inv: Path) -> tuple[float, int]:
    """One playbook run with a cold SSH control socket; (seconds, tasks changed)."""
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as cp:
        env = {"ANSIBLE_CONFIG": str(folder / "ansible.cfg"), "ANSIBLE_SSH_CONTROL_PATH_DIR": cp,
               "ANSIBLE_NOCOLOR": "1", "PATH": f"{exe.parent}:/usr/bin:/bin"}
        out: list[str] = []
        t = timed(lambda: out.append(run(
            [str(exe), "-i", str(inv), str(PLAYBOOK), "-e", f"@{folder / 'vars.json'}"],
            env=env, cwd=folder, timeout=600)))
    changed = sum(int(x) for x in re.findall(r"changed=(\d+)", out[0]))
    return t, changed


def remote_commands(inv: Path) -> tuple[int, list[tuple[str, int]]]:
    """Commands a no-op run sends to one host (pyinfra --debug), and the most repeated facts."""
    out = deploy(inv, "--debug").ok().output
    host = re.search(r"Running command on ([\w.-]+):", out)
    n = len(re.findall(rf"Running command on {re.escape(host.group(1))}:", out)) if host else 0
    facts = re.findall(r"Getting fact: ([\w.]+)", out)
    top = sorted({f: facts.count(f) for f in facts}.items(), key=lambda kv: -kv[1])[:5]
    return n, top


def floor(inv: Path) -> float:
    """`pyinfra -y INV exec -- true`: connect, one command, disconnect."""
    return deploy(inv, "--", "true", entry="exec").ok().seconds


def bench(L: Lab) -> Result:
    exe = ansible_playbook()
    devs = L.converge(4)
    _python_on(devs)
    path, sha = model("base", seed=7)
    t: dict[int, dict[str, list[float]]] = {}
    ansible_changed = 0
    for n in (4, 1):  # 4 first: converge every device once, for both tools
        folder = WORK / f"noop-{n}"
        inv = inventory(folder, devs[:n])
        write_knobs(folder, model={"name": "base", "path": str(path), "sha256": sha})
        if n == 4:
            deploy(inv).ok()  # this model (the last benchmark may have left another)
        ainv = _ansible_files(folder, devs[:n], path, sha)  # reads the unit pyinfra wrote
        if n == 4:
            _, warm = _ansible(exe, folder, ainv)  # Ansible's first run: its build marker
            log(f"Ansible's converging run changed {warm} task(s)")

        def pyinfra_deploy(inv: Path = inv) -> float:
            d = deploy(inv).ok()
            if d.changed():
                raise RuntimeError(f"the no-op re-run changed something:\n{d.output[-3000:]}")
            return d.seconds

        def ansible(folder: Path = folder, ainv: Path = ainv) -> float:
            nonlocal ansible_changed
            secs, changed = _ansible(exe, folder, ainv)
            ansible_changed += changed
            return secs

        t[n] = interleave({
            "deploy": pyinfra_deploy,
            "exec true": partial(floor, inv),
            "ansible": ansible,
        }, rounds(3))
    ncmd, top = remote_commands(WORK / "noop-1" / "inventory.py")
    gap = med(t[1]["deploy"]) - med(t[1]["exec true"])
    rows = []
    for n in (1, 4):
        r = ratio_rounds(t[n]["deploy"], t[n]["exec true"])
        rows.append(Row(f"no-op re-run, {n} device(s)", f"{med(t[n]['deploy']):.2f} s",
                        f"pyinfra exec -- true {med(t[n]['exec true']):.2f} s", r, "<= 2",
                        r <= 2))
    for n in (1, 4):
        r = ratio_rounds(t[n]["deploy"], t[n]["ansible"])
        rows.append(Row(f"no-op re-run vs Ansible, {n} device(s)", f"{med(t[n]['deploy']):.2f} s",
                        f"ansible-playbook {med(t[n]['ansible']):.2f} s", r, "<= 0.25",
                        r <= 0.25))
    details = (
        "Devices converged first (one deploy, one Ansible run), then interleaved rounds of: "
        "the whole `pyinfra -y INV deploy.py` (must report no change), `pyinfra -y INV exec "
        "-- true`, and `ansible-playbook` of bench/ansible/site.yml (the same converge: apt, "
        "copy, systemd, file, stat, command with creates, uri; pipelining on, forks 10, a "
        "fresh control socket each run). Ratio = ours / reference (lower is better). "
        f"Ansible tasks reported changed over the timed runs: {ansible_changed}. "
        "Seconds per round:\n\n"
        + "\n".join(f"- {n} device(s): " + "; ".join(
            f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in t[n].items()) for n in sorted(t))
        + f"\n\nWhat a no-op run does beyond the floor: it sends {ncmd} commands to each "
        "host (`exec -- true` sends 1 after the same connect): preflight reads who the device "
        "is and everything the steps check in two batches (tasks/batch.py), and a step calls "
        "a pyinfra operation only where the batch shows a difference. Facts asked: "
        + ", ".join(f"{f} x{c}" for f, c in top)
        + f". The difference, {gap:.2f} s with 1 device, is that second round trip and the "
        "deploy's own Python (every step's decisions, the controller's model marker, the "
        "summary). Before the batching the same run sent 43 commands (3.14x the floor with "
        "1 device, 4.39x with 4).")
    return Result("noop", rows, details)
