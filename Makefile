# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
export PORT

.PHONY: run test lint fmt typecheck bench bench-peers bench-scale wrk worker beat migrate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --no-input -v 0

## Serve API + admin with gunicorn on 127.0.0.1:$(PORT) (embedded mode unless REDIS_URL is set).
run: migrate
	$(BIN)/python manage.py bootstrap_demo
	exec $(BIN)/gunicorn project.wsgi:application -c project/gunicorn.conf.py

TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres

## The whole suite on a SQLite control plane, then the in-process tests again on PostgreSQL.
## Needs Redis (REDIS_URL or 127.0.0.1:6379) and PostgreSQL (TEST_POSTGRES_URL).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	CONTROL_DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -m "not processes" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,bench]"
	touch $(BENCH_STAMP)

wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null

## Every benchmark but the two below, merged into one JSON object (bench/all.py).
bench: $(STAMP) wrk
	@$(BIN)/python bench/all.py

PEERS_PG ?= postgres://postgres@127.0.0.1:5432/postgres

## This project against django-tenants and one shared PostgreSQL (bench/peers.py; PostgreSQL at
## PEERS_PG): prints JSON and rewrites README's "Compared with" table from it.
bench-peers: $(BENCH_STAMP) wrk
	@$(BIN)/python bench/peers.py --pg $(PEERS_PG) --update-readme $(BENCH_ARGS)

## 100,000 registered tenants: requests over 10 tenants vs over 10,000 (bench/scale.py).
bench-scale: $(STAMP) wrk
	@$(BIN)/python bench/scale.py $(BENCH_ARGS)

## A Celery worker: runs async tool calls and periodic tasks (needs REDIS_URL; without it async
## tool calls run on a thread pool inside each web process, and no worker is needed).
worker: migrate
	@test -n "$$REDIS_URL" || { echo "make worker needs REDIS_URL (e.g. redis://127.0.0.1:6379/0); embedded mode needs no worker." >&2; exit 2; }
	$(BIN)/celery -A project worker --loglevel INFO

## Celery beat: periodic tasks such as expiring idle runs (needs REDIS_URL; one per deployment).
## Embedded mode: run `manage.py expire_runs` from cron instead.
beat: migrate
	$(BIN)/celery -A project beat --loglevel INFO --schedule $${DATA_DIR:-var}/celerybeat-schedule

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
