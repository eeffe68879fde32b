"""Redeploy only the model: pyinfra inventory.py model.py (after changing the model knob)."""

from tasks.health import health
from tasks.image import image
from tasks.model import model, prune_store
from tasks.preflight import preflight
from tasks.service import service
from tasks.summary import print_summary_at_exit

print_summary_at_exit()
plan = preflight()
if plan is not None:
    tag, built = image(plan)
    switch = model(plan)
    restarted = service(plan, tag, changed=built or switch.changed)
    health(plan.cfg, plan.target, plan.target.unit_env(plan.uid),
           restarted=restarted, switch=switch, known=plan.known)
    prune_store(plan)
