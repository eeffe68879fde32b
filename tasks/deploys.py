"""The packaged deploys: a private llama-server inside your own pyinfra deploy.

    from llama_docker.tasks import deploys

    deploys.llama_server()                        # knobs from host and group data
    deploys.llama_server(model="smolvlm-256m", port=8081, _sudo=False)

Knobs are looked up as keyword arguments first, then the host's and its groups' data, then
the defaults (this project's group_data/all.py, shipped in the package). Names beginning with
`_` are pyinfra's global arguments and apply to every operation inside.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host

from llama_docker.knobs.defaults import DEFAULTS

from . import steps, trust
from .common import deploy, fail_host
from .preflight import preflight
from .remove import remove
from .rollback import rollback
from .summary import print_summary_at_exit


@deploy("llama-docker", data_defaults=DEFAULTS)
def llama_server(**knobs: Any) -> None:
    """Everything: runtime, server image, model, service, health; a no-op when converged.

    + knobs: any knob of group_data/all.py, e.g. ``model="qwen2.5-0.5b-instruct"``
    """
    _run_steps(knobs, steps.ALL)


@deploy("llama-docker model", data_defaults=DEFAULTS)
def llama_model(**knobs: Any) -> None:
    """Only the model (after a change of the `model` knob), with the restart it needs.

    + knobs: any knob of group_data/all.py
    """
    _run_steps(knobs, steps.MODEL_ONLY)


@deploy("llama-docker rollback", data_defaults=DEFAULTS)
def llama_rollback(**knobs: Any) -> None:
    """Serve each device's previous model again (the current one becomes the previous).

    + knobs: any knob of group_data/all.py (the service name and model store are read)
    """
    print_summary_at_exit()
    if not refuse_unpinned():
        rollback(knobs)


@deploy("llama-docker remove", data_defaults=DEFAULTS)
def llama_remove(purge: bool = False, **knobs: Any) -> None:
    """Stop and delete llama-docker's units, containers and images; a no-op when gone.

    + purge: also delete the model store (`models_dir`)
    + knobs: any knob of group_data/all.py (the service name and model store are read)
    """
    print_summary_at_exit()
    if not refuse_unpinned():
        remove(knobs, purge=purge)


def _run_steps(knobs: dict[str, Any], which: tuple[steps.Step, ...]) -> None:
    """Preflight, then the listed steps, for a host whose key was checked."""
    print_summary_at_exit()
    if not refuse_unpinned():
        plan = preflight(knobs)
        if plan is not None:
            steps.run(plan, which)


def refuse_unpinned() -> bool:
    """Refuse a host whose key pyinfra's own default has just trusted unchecked (trust.py):
    plain pyinfra connects before any deploy file runs. True when refused."""
    why = trust.accepted_unchecked(host)
    if why:
        fail_host(why)
    return bool(why)
