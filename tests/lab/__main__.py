"""python -m tests.lab {demo,up,down}: the lab by hand.

demo  build the lab, start one device (a fresh Debian box), deploy to it for real, print the URL
up    start devices (names as arguments; default: debian) and write .lab/inventory.py
down  remove every lab container, volume and the lab network
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request

from . import lab
from .tiny_model import write_tiny_gguf


def lab_model() -> dict:
    path = lab.STATE / "models" / "tiny.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    sha = write_tiny_gguf(path)
    return {"name": "tiny-test", "path": str(path), "sha256": sha}


def up(names: list[str]) -> list[lab.Device]:
    devices = lab.up(names)
    inv = lab.write_inventory(devices, lab_model())
    for d in devices:
        print(f"{d.name}: ssh -i {lab.STATE}/id_ed25519 -o UserKnownHostsFile={lab.STATE}"
              f"/known_hosts -p {d.ssh_port} {d.user}@127.0.0.1")
    print(f"inventory: {inv}")
    return devices


def demo() -> int:
    (dev,) = up(["debian"])
    inv = lab.STATE / "inventory.py"
    cmd = [sys.executable, "-m", "pyinfra", "-y", str(inv), "deploy.py"]
    print("$ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd, cwd=lab.REPO).returncode
    if code != 0:
        print(lab.logs(dev), file=sys.stderr)
        return code
    url = f"http://127.0.0.1:{dev.http_port}"
    with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
        print(f"/health: {resp.status} {resp.read().decode().strip()}")
    print(f"\nllama-server is up on the lab device: open {url}/ for the web UI")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["demo", "up", "down"])
    parser.add_argument("names", nargs="*", default=["debian"])
    args = parser.parse_args(argv)
    if args.command == "down":
        lab.down()
        return 0
    if args.command == "up":
        up(args.names)
        return 0
    return demo()


if __name__ == "__main__":
    sys.exit(main())
