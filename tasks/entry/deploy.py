"""The whole deploy: pyinfra inventory.py deploy.py (the steps are in tasks/, in order)."""

from llama_docker.tasks.deploys import llama_server

llama_server()
