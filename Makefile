# The two commands of the README. Both prepare the machine first (apt, a venv of this
# checkout in .venv, dockerd); every Python command below runs from that venv.
.PHONY: setup setup-demo demo test lint down

VENV ?= .venv
export VENV
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

setup:
	bash tests/lab/setup-host.sh test

setup-demo:
	bash tests/lab/setup-host.sh demo

demo: setup-demo
	python -m tests.lab demo

# The unit tests first, in a process of their own: the lab modules import pyinfra's CLI
# (gevent's patch_all) into their worker, which no unit test's threads should meet.
test: setup lint
	python -m pytest -v -n 2 --dist loadfile tests/unit
	python -m pytest -v -n 2 --dist loadfile --no-loadscope-reorder --durations=20 tests/e2e

lint:
	ruff check .
	lint-imports
	mypy llama_docker tasks

down:
	python -m tests.lab down
