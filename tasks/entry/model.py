"""Redeploy only the model: pyinfra inventory.py model.py (after changing the model knob)."""

from llama_docker.tasks.deploys import llama_model

llama_model()
