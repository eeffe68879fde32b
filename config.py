"""pyinfra's run configuration for this folder, loaded before any host is contacted: host keys
are checked strictly unless the inventory's data says otherwise, and the llama-docker summary
is set up here so that it also names the hosts pyinfra cannot reach."""

from llama_docker.tasks.before_connect import setup

setup()
