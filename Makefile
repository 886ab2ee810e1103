# Two commands do all set-up on a fresh machine:
#   make run    # the whole pipeline on four books with scratch:tiny, on the CPU
#   make test   # lint and the test suite
# and one keeps the pinned versions current:
#   make lock   # requirements.lock from pyproject.toml's ranges (then commit it)
#   make lock UPGRADE=1   # the same, every package at the newest version the ranges allow
# While working: make test-fast  # lint and every test but the end-to-end and whole-book ones
PYTHON ?= python3
VENV := .venv
# The CPU wheel of this version is on the project's machines; an unpinned torch would pull
# several GB of CUDA packages. GPU hosts set TORCH_VERSION (or install torch) themselves.
TORCH_VERSION ?= 2.13.0
# Where `make lock` finds torch's CPU wheel: the site's pip wheel folder when pip has one,
# else PyTorch's CPU index. Resolving against the CPU wheel keeps CUDA packages out of the lock.
TORCH_CPU_SOURCE ?= $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu)
# The lock is resolved for this Python and platform (the project's machines).
LOCK_PYTHON ?= 3.11
LOCK_PLATFORM ?= x86_64-manylinux_2_28
DEMO_IDS ?= 1041,574,1065,12242
# Offline, the local mirror beside the checkout (what the tests read); else the public site.
MIRROR ?= $(or $(EMOVERSE_GUTENBERG_MIRROR),$(if $(wildcard ../shared/gutenberg),../shared/gutenberg,https://www.gutenberg.org))

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: run test test-fast lint lock

# Installs exactly requirements.lock (every package pinned, --no-deps) with uv when uv is on the
# PATH or pip can fetch it into the venv, else (or with NO_UV=1) with pip alone. torch is not in
# the lock: pip chooses it, because pip reads the site's configuration (local wheel folders,
# constraints) and uv does not; uv then installs pip's choice. With the lock already installed,
# pip's choice on the CPU is torch alone; on a GPU host (another TORCH_VERSION) also the CUDA
# packages that torch needs.
PIP_CHOICE := import json, sys; r = json.load(open(sys.argv[1])); \
  print("\n".join(i["metadata"]["name"] + " @ " + i["download_info"]["url"] for i in r["install"]))
$(VENV)/.installed: pyproject.toml requirements.lock
	rm -f $@
	$(PYTHON) -m venv --without-pip $(VENV)
	@set -e; py=$(VENV)/bin/python; uv=$$([ -n "$(NO_UV)" ] || command -v uv || true); \
	if [ -z "$${uv}$(NO_UV)" ] && $(PYTHON) -m pip --python $$py install --quiet uv; then uv=$(VENV)/bin/uv; fi; \
	if [ -n "$$uv" ]; then \
	  echo "installing requirements.lock, torch $(TORCH_VERSION) and emoverse with $$uv"; \
	  $$uv pip install --quiet --python $$py --no-deps -r requirements.lock pip; \
	  $$py -m pip install --quiet --dry-run --report $(VENV)/torch.json torch==$(TORCH_VERSION); \
	  $$py -c '$(PIP_CHOICE)' $(VENV)/torch.json > $(VENV)/torch.txt; \
	  [ ! -s $(VENV)/torch.txt ] || $$uv pip install --quiet --python $$py --no-deps -r $(VENV)/torch.txt; \
	  $$uv pip install --quiet --python $$py --no-deps -e .; \
	  $$uv pip check --quiet --python $$py; \
	else \
	  echo "uv not available: installing requirements.lock, torch and emoverse with pip"; \
	  $$py -m ensurepip --upgrade --default-pip > /dev/null; \
	  $$py -m pip install --quiet --no-deps -r requirements.lock; \
	  $$py -m pip install --quiet torch==$(TORCH_VERSION); \
	  $$py -m pip install --quiet --no-deps -e .; \
	  $$py -m pip check; \
	fi
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/emoverse run --mirror $(MIRROR) --ids $(DEMO_IDS) --base-model scratch:tiny

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# pytest's exit 5 (no test collected) passes only where NO_TESTS_OK is set: CI reports a run of
# no tests itself, and fails a script that exits non-zero.
test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && [ -n "$(NO_TESTS_OK)" ] || exit $$rc; }

# The loop to run after every change: no end-to-end runs, no whole books, both cores.
test-fast: lint
	$(VENV)/bin/python -m pytest -m "not slow and not full_mirror" -n 2 --dist loadfile $(PYTEST_ARGS)

# Keeps the current pins where the ranges allow and resolves what changed; UPGRADE=1 takes the
# newest versions the ranges allow. Needs uv (on the PATH, or in the venv after one install).
# Fails rather than lock CUDA packages.
lock:
	@uv=$$(command -v uv || echo $(VENV)/bin/uv); \
	[ -x "$$uv" ] || { echo "make lock needs uv: pip install uv (or make $(VENV)/.installed)"; exit 2; }; \
	tmp=$$(mktemp -d); printf 'torch==%s+cpu\n' $(TORCH_VERSION) > $$tmp/torch.txt; \
	cp requirements.lock $$tmp/ 2>/dev/null || true; \
	$$uv pip compile pyproject.toml --extra dev --quiet $(if $(UPGRADE),--upgrade) \
	  --python-version $(LOCK_PYTHON) --python-platform $(LOCK_PLATFORM) \
	  $(TORCH_CPU_SOURCE) -c $$tmp/torch.txt --no-emit-package torch \
	  --custom-compile-command "make lock" -o $$tmp/requirements.lock && \
	if grep -q -i -E '^(nvidia|triton|cuda)' $$tmp/requirements.lock; then \
	  echo "make lock: CUDA packages in the resolution; TORCH_CPU_SOURCE must give torch's CPU wheel"; \
	  rm -r $$tmp; exit 1; \
	fi; \
	mv $$tmp/requirements.lock requirements.lock; rm -r $$tmp
