# outbox-relay: `make test` and `make demo` work on a fresh Debian machine.
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := contracts relay router stack outbox
PYTEST_ARGS ?=

.PHONY: help bootstrap check fmt test test-unit test-integration test-e2e demo bench lock clean

help:
	@echo "make test    install what is missing, lint, type-check, run every test"
	@echo "make demo    the whole pipeline: notifications from Postgres to a browser"
	@echo "make check   ruff + mypy --strict only"
	@echo "make bench   the benchmark suite (bench/README.md)"
	@echo "make lock    re-pin requirements.lock (the runtime versions) after changing pyproject.toml"

bootstrap:
	@scripts/bootstrap.sh

check: bootstrap
	$(BIN)/ruff check $(PACKAGES) tests bench examples
	$(BIN)/ruff format --check $(PACKAGES) tests bench examples
	$(BIN)/mypy $(PACKAGES)

fmt: bootstrap
	$(BIN)/ruff check --fix $(PACKAGES) tests bench examples
	$(BIN)/ruff format $(PACKAGES) tests bench examples

test: check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: bootstrap
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: bootstrap
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: bootstrap
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

demo: bootstrap
	$(BIN)/outbox demo $(DEMO_ARGS)

bench: bootstrap
	$(BIN)/python -m bench.run_all

lock: bootstrap
	$(BIN)/python scripts/lock.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
