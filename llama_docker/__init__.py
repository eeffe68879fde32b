"""llama-docker: a private llama-server on every device you own, in one pyinfra run."""

__version__ = "0.1.0"
