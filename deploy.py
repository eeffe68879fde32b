"""The whole deploy: each step in tasks/, in order. Run: pyinfra inventory.py deploy.py"""

from tasks.health import health
from tasks.image import image
from tasks.model import model, prune_store
from tasks.preflight import preflight
from tasks.runtime import runtime
from tasks.service import service
from tasks.summary import print_summary_at_exit

print_summary_at_exit()
plan = preflight()
if plan is not None:
    runtime_changed = runtime(plan)
    tag, built = image(plan)
    switch = model(plan)
    restarted = service(plan, tag, changed=built or switch.changed)
    health(plan.cfg, plan.target, plan.target.unit_env(plan.uid),
           restarted=restarted or runtime_changed, switch=switch, known=plan.known)
    prune_store(plan)
