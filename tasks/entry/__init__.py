"""The files `llama-docker` hands to pyinfra, inside the wheel so that it runs from any folder:
config.py (read before connecting) and one deploy file per command. The checkout's top-level
deploy.py, model.py, rollback.py, remove.py and config.py are the same calls."""
