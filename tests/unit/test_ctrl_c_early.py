"""Ctrl-C before pyinfra has a host: the run still says it did not finish (exit 130).

No device: the inventory itself waits, so the signal lands while pyinfra reads it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

SLOW_INVENTORY = """\
import pathlib, time
pathlib.Path(__file__).with_name("reading").touch()
time.sleep(60)
lab = [("never-reached", {})]
"""


def test_ctrl_c_while_the_inventory_loads_exits_130(tmp_path: Path) -> None:
    (tmp_path / "inventory.py").write_text(SLOW_INVENTORY)
    # This interpreter's pyinfra: whatever `pyinfra` is first on PATH may not see this checkout.
    proc = subprocess.Popen([sys.executable, "-m", "pyinfra", "-y",
                             str(tmp_path / "inventory.py"), "deploy.py"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "reading").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "inventory never read"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "Loading inventory" in out and "summary" not in out, out
