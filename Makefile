# apparate: `make run` starts the console with a worker on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

run: $(VENV)/.runtime-installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py bootstrap_admin
	$(BIN)/python manage.py runconsole --host $(HOST) --port $(PORT)

# In this order: Debian packages (building the venv may need python3-venv), the venv, then pytest against
# PostgreSQL and Redis. TEST_DATABASE_URL / TEST_BROKER_URL, given on the command line or in the environment,
# reach the script as environment variables and name existing servers; see scripts/testenv.py.
test:
	$(PYTHON) scripts/testenv.py install
	$(MAKE) --no-print-directory $(VENV)/.dev-installed
	$(BIN)/python scripts/testenv.py run $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
