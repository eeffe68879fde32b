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

test: setup lint
	python -m pytest -v -n 2 --dist loadfile --no-loadscope-reorder

lint:
	ruff check .
	lint-imports
	mypy llama_docker tasks

down:
	python -m tests.lab down
