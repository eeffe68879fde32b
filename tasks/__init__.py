"""pyinfra glue, installed as `llama_docker.tasks` (the packaged deploys run it).

Imports only run downward:

    steps.py       the steps in the order they run (runtime, image, model, webui, service,
                   health, gpu, prune, gateway); preflight.py reads every fact they check in
                   one round trip
    preflight.py   facts and refusals, before anything changes; makes the host's Plan
    runtime/       the container runtime, one module per device family behind __init__
    image.py       the server image: built once per CPU and build args (image_once.py ships it)
    model.py, router.py   one model, or a set of them served in router mode
    webui.py, health.py, gpu.py, gateway.py   one @deploy each
    service/       the API key, then systemd.py (Linux) or launchd.py (macOS)
    plan.py        what the steps share: Plan, Switch, Progress
    rollback.py    the rollback deploy; remove.py the remove deploy (units, containers, images)
    cli.py         the `llama-docker` command: pyinfra with the files in entry/, from any
                   folder; inventory_check.py, trust.py (host keys) and before_connect.py
                   are what it sets up before pyinfra connects
    agents.py      launchd agents (colima's and the server's)
    batch.py, facts.py, converge.py, common.py, summary.py, busy_port.py   the ground floor
"""
