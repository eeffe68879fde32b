"""Serve each device's previous model again: pyinfra inventory.py rollback.py"""

from llama_docker.tasks.deploys import llama_rollback

llama_rollback()
