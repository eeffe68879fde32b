"""The packaged deploys: one source for the knob defaults, the data folders found."""

import runpy
from pathlib import Path

from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.resources import folder
from llama_docker.tasks import deploys

REPO = Path(__file__).resolve().parents[2]


def test_data_defaults_are_the_documented_knob_file() -> None:
    documented = {k: v for k, v in runpy.run_path(str(REPO / "group_data" / "all.py")).items()
                  if not k.startswith("_")}
    assert DEFAULTS == documented
    for entry in (deploys.llama_server, deploys.llama_model, deploys.llama_rollback):
        assert entry._inner.deploy_data is DEFAULTS


def test_templates_are_found_where_the_code_runs() -> None:
    assert (folder("files") / "Containerfile").is_file()
    assert (folder("group_data") / "all.py").is_file()
