#!/bin/sh
# Starts llama-server on 0.0.0.0:8080 inside the container; the unit decides what the host
# publishes. Host and port are always passed: llama-server's own defaults have moved.
set -eu
model=${LLAMA_MODEL:-/models/current.gguf}
if [ ! -r "$model" ]; then
  echo "llama-docker: model $model is missing or unreadable" >&2
  exit 66
fi
set -- --host 0.0.0.0 --port 8080 --model "$model" "$@"
if [ -n "${LLAMA_MMPROJ:-}" ]; then
  set -- "$@" --mmproj "$LLAMA_MMPROJ"
fi
# The key stays in a file: never on a command line, where `ps` would show it.
if [ -r /run/secrets/llama-api-key ]; then
  set -- "$@" --api-key-file /run/secrets/llama-api-key
fi
exec llama-server "$@"
