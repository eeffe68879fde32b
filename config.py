"""pyinfra's run configuration for this folder, loaded before any host is contacted: the
llama-docker summary is set up here so that it also names the hosts pyinfra cannot reach."""

from llama_docker.tasks.summary import print_summary_at_exit

print_summary_at_exit()
