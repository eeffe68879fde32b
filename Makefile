# The two commands of the README. Both prepare the machine first (apt, pip, dockerd).
.PHONY: setup demo test lint down

setup:
	bash tests/lab/setup-host.sh

demo: setup
	python3 -m tests.lab demo

test: setup
	python3 -m pytest -v

lint:
	ruff check .

down:
	python3 -m tests.lab down
