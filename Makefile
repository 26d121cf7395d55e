# drsentry: `make demo` and `make test` are the two commands (README, Quick start).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: venv test lint unit integration e2e demo bench image clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check layers functions tests infra
	$(BIN)/ruff format --check layers functions tests infra
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/cfn-lint template.yaml infra/replica.yaml
	$(BIN)/hadolint infra/Dockerfile

test: venv lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: venv
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: venv
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

demo: venv
	$(BIN)/python infra/demo.py

bench: venv
	$(BIN)/python infra/bench/run.py $(BENCH_ARGS)

# The Fargate task image (needs a Docker daemon); README "Running on Fargate" pushes it to ECR.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -f infra/Dockerfile -t drsentry:$(VERSION) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
