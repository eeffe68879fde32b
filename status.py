"""One status table for every device: python3 status.py inventory.py [--json]

The same as the installed `llama-docker-status` command (llama_docker/status/cli.py). Not a
deploy file: pyinfra runs those once per host, and one table needs every host at once.
"""

import sys

import pyinfra
from pyinfra.api.exceptions import PyinfraError

from llama_docker.status.cli import main

if __name__ == "__main__":
    sys.exit(main())
elif pyinfra.is_cli:
    raise PyinfraError("status.py prints one table for all hosts, which a deploy file cannot: "
                       "run python3 status.py inventory.py")
