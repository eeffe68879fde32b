# The two commands of the README. Both prepare the machine first (apt, pip, dockerd).
.PHONY: setup demo test lint down

setup:
	bash tests/lab/setup-host.sh

demo: setup
	python3 -m tests.lab demo

test: setup lint
	python3 -m pytest -v -n 2 --dist loadfile --no-loadscope-reorder

lint:
	ruff check .
	lint-imports
	mypy llama_docker

down:
	python3 -m tests.lab down
