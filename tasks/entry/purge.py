"""Stop and remove llama-docker's units, containers and images, and delete the model store."""

from llama_docker.tasks.deploys import llama_remove

llama_remove(purge=True)
