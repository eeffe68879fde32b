"""The deploy's steps in the order they run: the one place that says it.

Each step reads the host's Plan and what the steps before it left in Progress. Preflight
reads, in one round trip, every fact the listed steps will check (their `wants`), so a
converged device answers a whole run in two round trips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyinfra import host

from . import gateway, gpu, health, image, model, router, runtime, service, split, summary, webui
from .plan import Plan, Progress

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from .batch import Wanted


@dataclass(frozen=True)
class Step:
    name: str
    wants: Callable[[Config, Target], list[Wanted]]
    run: Callable[[Plan, Progress], None]


def _runtime(plan: Plan, done: Progress) -> None:
    done.runtime_changed = runtime.runtime(plan)


def _early(plan: Plan, done: Progress) -> None:
    model.early(plan)


def _image(plan: Plan, done: Progress) -> None:
    done.tag, done.built = image.image(plan)


def _split(plan: Plan, done: Progress) -> None:
    split.step(plan, done.tag)


def _model(plan: Plan, done: Progress) -> None:
    done.switch = router.model_set(plan) if plan.models else model.model(plan)


def _webui(plan: Plan, done: Progress) -> None:
    webui.webui(plan, done.tag)


def _service(plan: Plan, done: Progress) -> None:
    done.restarted = service.service(plan, done.tag, changed=done.built or done.switch.changed)


def _health(plan: Plan, done: Progress) -> None:
    health.health(plan.cfg, plan.target, plan.target.unit_env(plan.uid),
                  restarted=done.restarted or done.runtime_changed, switch=done.switch,
                  known=plan.known)


def _retire(plan: Plan, done: Progress) -> None:
    service.retire(plan)


def _gateway(plan: Plan, done: Progress) -> None:
    gateway.gateway(plan)


def _gpu(plan: Plan, done: Progress) -> None:
    gpu.check_backend(plan, done)


def _prune(plan: Plan, done: Progress) -> None:
    if plan.models:
        router.prune_set(plan)
    else:
        model.prune_store(plan)


ALL = (
    Step("runtime", runtime.wants, _runtime),
    Step("early", lambda cfg, tgt: [], _early),  # the model store; its pushes start here
    Step("image", image.wants, _image),
    Step("split", split.wants, _split),  # a split model's RPC worker or links (split_over)
    Step("model", lambda cfg, tgt: [*model.wants(cfg, tgt), *router.wants(cfg, tgt)], _model),
    Step("webui", webui.wants, _webui),
    Step("service", service.wants, _service),
    Step("health", health.wants, _health),
    Step("gpu", lambda cfg, tgt: [], _gpu),
    Step("prune", lambda cfg, tgt: [], _prune),
    Step("retire", service.retire_wants, _retire),  # a server, on a host now gateway-only
    Step("gateway", gateway.wants, _gateway),
)
# After a change of the model knob: everything but the runtime, which is already there.
MODEL_ONLY = tuple(s for s in ALL if s.name != "runtime")
# What a gateway-only box (`gateway = "only"`) runs of any list: it serves no model (the split
# step only undoes what a former head or worker left: a link, an RPC worker, a head's key).
GATEWAY_BOX = ("runtime", "split", "retire", "gateway")


def of_host(cfg: Config, which: tuple[Step, ...]) -> tuple[Step, ...]:
    return tuple(s for s in which if s.name in GATEWAY_BOX) if cfg.gateway_only else which


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    """Every fact the steps check, for preflight's one round trip."""
    return [w for step in of_host(cfg, ALL) for w in step.wants(cfg, tgt)]


def run(plan: Plan, which: tuple[Step, ...] = ALL) -> Progress:
    """The steps for one host, in order."""
    summary.note_access(host.name, plan.cfg)  # the summary's line on open LAN ports
    done = Progress()
    for step in of_host(plan.cfg, which):
        if plan.rpc.is_worker and step.name not in split.WORKER_STEPS:
            continue  # an RPC worker serves no model of its own
        step.run(plan, done)
    return done
