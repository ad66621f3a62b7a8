# ArtiScan: `make demo` runs the product with demo data on embedded defaults;
# `make test` runs the whole test suite against PostgreSQL and Redis.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
REQS := requirements/web.txt requirements/ml.txt requirements/dev.txt
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/artiscan
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

.PHONY: setup demo test lint frontend screenshots clean

setup: $(VENV)/.installed backend/static_build/app/worklist.js

$(VENV)/.installed: $(REQS) requirements/ml-nodeps.txt $(wildcard deploy/install-ml-data.sh) $(wildcard deploy/install-ohif.sh)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(foreach r,$(REQS),-r $(r))
	$(BIN)/pip install --quiet --no-deps -r requirements/ml-nodeps.txt
	[ ! -f deploy/install-ml-data.sh ] || bash deploy/install-ml-data.sh
	[ ! -f deploy/install-ohif.sh ] || bash deploy/install-ohif.sh
	touch $@

frontend/node_modules/.package-lock.json: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund

backend/static_build/app/worklist.js: frontend/node_modules/.package-lock.json $(shell find frontend/src -type f) frontend/vite.config.ts
	cd frontend && npm run build

frontend: backend/static_build/app/worklist.js

demo: setup
	bash deploy/demo.sh

test: setup
	bash deploy/ensure-services.sh >/dev/null
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python -m pytest $(PYTEST_ARGS)
	cd frontend && npm test

# The worklist, viewer and dashboard pictures from the demo itself (deploy/screenshots.py); the
# annotation and upload pictures from the browser tests that drive those pages.
screenshots: setup
	$(BIN)/python deploy/screenshots.py --out $(CURDIR)/docs/screenshots
	bash deploy/ensure-services.sh >/dev/null
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		ARTISCAN_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest \
		tests/browser/test_annotate_page.py tests/browser/test_upload_page.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy backend annotation ml gpu_ops workstation
	$(BIN)/lint-imports
	cd frontend && npm run typecheck

clean:
	rm -rf $(VENV) var frontend/node_modules backend/static_build
