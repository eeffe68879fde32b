"""Stop and remove llama-docker's units, containers and images; the models stay."""

from llama_docker.tasks.deploys import llama_remove

llama_remove()
