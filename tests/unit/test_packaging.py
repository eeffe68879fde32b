"""The packaged deploys: one source for the knob defaults, the data folders found."""

import ast
import runpy
import warnings
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import read_configuration

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


def _wheel_config() -> dict:
    """pyproject.toml as setuptools reads it to build the wheel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # [tool.setuptools] in pyproject is "beta" to it
        return read_configuration(REPO / "pyproject.toml")


ENTRY_FILES = ("config.py", "deploy.py", "model.py", "rollback.py", "remove.py", "purge.py")


def test_the_wheel_carries_what_a_run_needs_from_any_folder() -> None:
    """tasks/entry/ (config.py and the deploy files) is a package of the wheel, as every
    folder of the steps is, and the command is a console script of it."""
    conf = _wheel_config()
    packages, dirs = conf["tool"]["setuptools"]["packages"], \
        conf["tool"]["setuptools"]["package-dir"]
    assert dirs["llama_docker.tasks"] == "tasks"
    steps = {".".join(("llama_docker", "tasks", *p.parent.relative_to(REPO / "tasks").parts))
             for p in (REPO / "tasks").rglob("__init__.py")}
    assert steps <= set(packages), steps - set(packages)
    assert "llama_docker.tasks.entry" in packages
    for name in ENTRY_FILES:
        assert (REPO / "tasks" / "entry" / name).is_file(), name
    assert conf["project"]["scripts"] == {
        "llama-docker": "llama_docker.tasks.cli:main",
        "llama-docker-status": "llama_docker.tasks.cli:status_main"}


def _code(path: Path) -> list[str]:
    """A file's statements, its docstring left out."""
    return [ast.dump(node) for node in ast.parse(path.read_text()).body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]


@pytest.mark.parametrize("name", ["deploy.py", "model.py", "rollback.py", "remove.py"])
def test_the_checkouts_entry_files_make_the_wheels_calls(name: str) -> None:
    assert _code(REPO / name) == _code(REPO / "tasks" / "entry" / name)
