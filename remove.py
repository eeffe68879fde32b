"""Stop and remove llama-docker's units, containers and images (the models stay):
pyinfra inventory.py remove.py; `llama-docker remove --purge` deletes the models too."""

from llama_docker.tasks.deploys import llama_remove

llama_remove()
