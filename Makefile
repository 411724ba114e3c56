# The README's two commands: `make train` (the main job) and `make test` (the whole suite).
# Each sets up what it needs first (scripts/setup.sh: .venv, torch, the project, the dataset).
.PHONY: setup train test summary gradcheck

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/alexnet train $(ARGS)

test: setup
	.venv/bin/python -m pytest -n 2 $(ARGS)

summary: setup
	.venv/bin/alexnet summary

gradcheck: setup
	.venv/bin/alexnet gradcheck
