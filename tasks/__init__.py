"""pyinfra glue: one @deploy per step, called in order by deploy.py."""
