# meshlab: `make lab` opens the lessons, `make test` runs every check. Each sets itself up:
# a .venv is created when missing, Python packages are installed into it, and (as root on
# Debian/Ubuntu) the Debian packages the real-kernel lab and the browser tests need.

VENV        ?= .venv
# The interpreter the .venv is made from (its build matters for speed: README, "Speed").
PYTHON3     ?= python3
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
DEB_VENV    := python3-venv
DEB_TEST    := iptables nftables conntrack iproute2 ipset chromium fonts-nanum
NBVAL_FLAGS := --nbval --nbval-sanitize-with notebooks/nbval-sanitize.cfg
# JupyterLab defaults for the lessons (widget state saved, no news pop-up), and the IPython
# configuration that loads meshlab.jupyter in every kernel (IPython reads
# <sys.prefix>/etc/ipython), as Binder's postBuild.
JUPYTER_SETTINGS = mkdir -p $(VENV)/share/jupyter/lab/settings $(VENV)/etc/ipython && \
	cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json && \
	cp jupyter/ipython_config.py $(VENV)/etc/ipython/ipython_config.py

.PHONY: lab test check lint unit bench bench-instructions notebooks live-clean setup-lab \
	setup-test clean

lab: setup-lab
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

test: setup-test lint
	$(PY) -m pytest $(NBVAL_FLAGS) tests notebooks

# Quick checks without set-up (assumes `make test` ran once).
check: lint unit
lint:
	$(VENV)/bin/ruff check meshlab i18n tests benchmarks notebooks
unit:
	$(PY) -m pytest -q -m "not live and not browser" tests

bench: setup-test
	$(PY) -m benchmarks

# The parse of each 20,000-rule dump in instructions and cache misses (valgrind), parsed again
# and as the first parse of a new process: the same on every run, for changes too small for
# wall-clock times on a shared machine.
bench-instructions: setup-test
	@$(MAKE) --no-print-directory debian-packages PACKAGES=valgrind
	$(PY) -m benchmarks.instructions kube
	$(PY) -m benchmarks.instructions kube --first
	$(PY) -m benchmarks.instructions flat
	$(PY) -m benchmarks.instructions flat --first

# Re-execute every lesson in place after a library change (stored outputs are what nbval checks):
# the English ones, then the Korean ones, built anew from them and i18n/ko/ (i18n/lessons.py).
EXECUTE = ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.store_widget_state=True --ExecutePreprocessor.record_timing=False \
	  --ExecutePreprocessor.timeout=120
notebooks: setup-test
	cd notebooks && $(EXECUTE) [0-9]*.ipynb
	$(PY) -m i18n.lessons build
	cd notebooks/ko && ../$(EXECUTE) [0-9]*.ipynb

live-clean:
	$(VENV)/bin/meshlab live clean

setup-lab: $(VENV)/.lab-installed

setup-test: $(VENV)/.test-installed
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(DEB_TEST)"

$(PY):
	@$(PYTHON3) -m venv $(VENV) 2>/dev/null || { \
	  $(MAKE) --no-print-directory debian-packages PACKAGES="$(DEB_VENV)" && $(PYTHON3) -m venv $(VENV); }

$(VENV)/.lab-installed: pyproject.toml jupyter/overrides.json jupyter/ipython_config.py | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[lab]'
	$(JUPYTER_SETTINGS)
	touch $@

$(VENV)/.test-installed: pyproject.toml jupyter/overrides.json jupyter/ipython_config.py | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[lab,test]'
	$(JUPYTER_SETTINGS)
	touch $@ $(VENV)/.lab-installed

# Installs the missing Debian packages when root with apt-get; otherwise says what is skipped.
debian-packages:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "not root (or no apt-get): not installing$$missing; tests that need them will say so and skip"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
