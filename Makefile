# drsentry: `make demo` and `make test` are the two commands (README, Quick start).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=
# checkov pins its own boto3 (1.35), older than the project's: it gets a venv of its own,
# inside .venv so that nothing new appears at the top of the repository.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := $(VENV)/tools-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

.PHONY: venv test lint checkov unit integration e2e demo bench image clean

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
	@# `sam validate --lint` is cfn-lint on the SAM-transformed template: the line above already
	@# ran it (cfn-lint applies the SAM transform itself); run it too where the SAM CLI is installed.
	@if command -v sam >/dev/null 2>&1; then sam validate --lint --template template.yaml --region us-east-1; \
	  else echo "sam CLI not installed: cfn-lint above ran the SAM transform and its rules"; fi
	$(MAKE) --no-print-directory checkov

# Every finding is fixed or skipped in the template with a written reason (Metadata: checkov: skip).
checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov -f template.yaml -f infra/replica.yaml --framework cloudformation \
	  --quiet --compact --skip-download

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	@rm -f $(CHECKOV_VENV)/.installed-*
	@touch $@

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
