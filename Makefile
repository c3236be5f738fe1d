# StudyApp. `make run` for a local demo, `make test` for the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Development defaults for `make run`; production settings come from the environment.
DEV := DJANGO_DEBUG=1

.PHONY: run test serve lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(DEV) $(BIN)/python manage.py migrate --no-input
	$(DEV) $(BIN)/python manage.py setup_demo
	$(DEV) $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Production-like: needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS in the environment.
serve: $(VENV)/.installed
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input
	$(BIN)/gunicorn studyapp.wsgi --workers 2 --bind 127.0.0.1:$(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

# Issue 8's benchmark, written to BENCHMARKS.md; DATABASE_URL=postgres://… for PostgreSQL.
# Its HTTP section drives gunicorn with wrk (Debian's package), installed here when
# missing and possible; without it, bench/loadgen.py's asyncio client stands in.
bench: $(VENV)/.installed-bench
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| echo "wrk is not installed: the HTTP section uses bench/loadgen.py"
	$(DEV) $(BIN)/python manage.py bench

# Issue 7's load test: gunicorn -w 2 on PostgreSQL, 20 students for 60 s (loopback).
.PHONY: loadtest
LOADTEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
loadtest: $(VENV)/.installed-bench
	DATABASE_URL=$(LOADTEST_DATABASE_URL) $(DEV) $(BIN)/python manage.py loadtest

clean:
	rm -rf $(VENV) staticfiles db.sqlite3 db.sqlite3-wal db.sqlite3-shm
