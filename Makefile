# Two commands do all set-up on a fresh machine:
#   make run    # the whole pipeline on four books with scratch:tiny, on the CPU
#   make test   # lint and the test suite
# While working: make test-fast  # lint and every test but the slow end-to-end runs
PYTHON ?= python3
VENV := .venv
# The CPU wheel of this version is on the project's machines; an unpinned torch would pull
# several GB of CUDA packages. GPU hosts set TORCH_VERSION (or install torch) themselves.
TORCH_VERSION ?= 2.13.0
DEMO_IDS ?= 1041,574,1065,12242
# Offline, the local mirror beside the checkout (what the tests read); else the public site.
MIRROR ?= $(or $(EMOVERSE_GUTENBERG_MIRROR),$(if $(wildcard ../shared/gutenberg),../shared/gutenberg,https://www.gutenberg.org))

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: run test test-fast lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==$(TORCH_VERSION)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/emoverse run --mirror $(MIRROR) --ids $(DEMO_IDS) --base-model scratch:tiny

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# pytest's exit 5 (no test collected) passes only where NO_TESTS_OK is set: CI reports a run of
# no tests itself, and fails a script that exits non-zero.
test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && [ -n "$(NO_TESTS_OK)" ] || exit $$rc; }

test-fast: lint
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)
