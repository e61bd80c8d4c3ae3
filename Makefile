# Everything a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck bench bench-masking clean

$(STAMP): pyproject.toml setup.py $(wildcard src/rowgate/*/_*.c src/rowgate/*/_*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rowgate demo --data-dir .rowgate-demo

# The suite runs on an embedded PostgreSQL; the tests whose outcome depends on the server
# (proxy, masking, upstream roles) then run again against the machine's PostgreSQL on
# 127.0.0.1:5432 when one answers there.
EXTERNAL_PG ?= postgresql://postgres@127.0.0.1:5432/postgres

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest
	@if $(BIN)/python -c "import psycopg; psycopg.connect('$(EXTERNAL_PG)', connect_timeout=3).close()" 2>/dev/null; then \
		echo "== proxy, masking and access tests again, against the PostgreSQL at $(EXTERNAL_PG) =="; \
		ROWGATE_TEST_PG_DSN='$(EXTERNAL_PG)' $(BIN)/pytest tests/proxy tests/masking tests/identity/test_access.py -m "not slow"; \
	else \
		echo "== skipped the external-server run: no PostgreSQL answers at $(EXTERNAL_PG) =="; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/pgbench_compare.py

# reading a 200k-row result directly, through rowgate unmasked, and masked
bench-masking: $(STAMP)
	$(BIN)/python bench/masking_bench.py

clean:
	rm -rf $(VENV) .rowgate-demo .pytest_cache .mypy_cache .ruff_cache build
	find src -name '*.so' -delete
