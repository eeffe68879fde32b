"""pyinfra's run configuration for `llama-docker` (passed as --config): strict host keys
unless the inventory's data says otherwise, and the summary. A config.py in the folder the run
starts from is read after it, as pyinfra would have read it."""

from pathlib import Path

from pyinfra import state
from pyinfra_cli.util import exec_file

from llama_docker.tasks.before_connect import setup

setup()
_own = Path(state.cwd or ".") / "config.py"
if _own.is_file() and _own.resolve() != Path(__file__).resolve():
    exec_file(str(_own))
