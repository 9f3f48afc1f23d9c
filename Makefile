# apparate: `make run` starts the console with a worker on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint agent-image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# requirements.txt includes agent/requirements.txt: a change to either reinstalls.
$(VENV)/.runtime-installed: requirements.txt agent/requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt agent/requirements.txt requirements-dev.txt | $(BIN)/python
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

# The node agent's image (agent/Dockerfile): the agent plus upstream's containerd-stargz-grpc, built
# with docker buildx and pushed to AGENT_IMAGE (the console's default APPARATE_SUITE_IMAGE:VERSION).
# linux/arm64 is built too once STARGZ_SHA256_ARM64 gives the sha256 of upstream's arm64 tarball.
# Needs docker with buildx, and network access to Docker Hub, PyPI and GitHub release downloads.
AGENT_IMAGE ?= ghcr.io/apparate/agent:1.0.0
STARGZ_SHA256_ARM64 ?=
comma := ,
AGENT_PLATFORMS ?= linux/amd64$(if $(STARGZ_SHA256_ARM64),$(comma)linux/arm64)
agent-image:
	docker buildx build --platform $(AGENT_PLATFORMS) -f agent/Dockerfile \
		--build-arg STARGZ_SHA256_ARM64=$(STARGZ_SHA256_ARM64) -t $(AGENT_IMAGE) --push .
