# PAIR - the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PAIR := $(VENV)/bin/pair
DEMO_DIR ?= demo-data
DEMO_PORT ?= 8000
DEMO_DICOM_PORT ?= 11112

.PHONY: env sysdeps ohif test lint demo clean bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU build from the local wheel store; never a CUDA torch
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $@

env: $(VENV)/.installed

sysdeps:
	@missing=""; \
	command -v storescu >/dev/null || missing="$$missing dcmtk"; \
	test -x /usr/lib/postgresql/15/bin/initdb || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v Orthanc >/dev/null || missing="$$missing orthanc orthanc-dicomweb"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (run 'sudo make sysdeps')"; exit 1; fi; \
	fi

lint: env
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

# the pinned OHIF Viewer build for the OHIF browser tests and PAIR_OHIF_DIR (docs/viewers.md);
# npm fetches it from the npm registry into .cache/ohif (not committed)
ohif: sysdeps
	scripts/fetch_ohif.sh

# ruff and mypy run inside the suite too (tests/test_code_quality.py)
test: env sysdeps ohif
	$(PY) -m pytest -q

demo: env sysdeps
	$(PY) -m pair.demo --data-dir $(DEMO_DIR) --port $(DEMO_PORT) --dicom-port $(DEMO_DICOM_PORT)

bench: env sysdeps
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache .cache
