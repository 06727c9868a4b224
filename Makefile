# Local development helpers. `make build` is serialised with flock so that several
# shells (or helpers) can rebuild the in-place extension without clobbering each other.
PY ?= python
LOCK = flock /tmp/pyotp-build.lock

build:
	$(LOCK) $(PY) setup.py build_ext --inplace -q

# cython -a of the core, one report for all components (build/annotate/core.html) and the
# heaviest Python-API lines of each printed (tools/annotate.py; `... annotate.py etf` for one)
annotate:
	$(PY) tools/annotate.py

test: build
	PYTHONPATH=src $(PY) -m pytest -q tests

bench: build
	PYTHONPATH=src $(PY) -m pytest bench --benchmark-group-by=group -q

.PHONY: build annotate test bench

# Wheels for every pyenv CPython 3.10-3.13: build from the sdist, auditwheel repair to a
# manylinux tag, install each into a fresh venv with no compiler (CC=false) and run the
# test suite against the installed wheel (see tools/build_wheels.py, docs/packaging.md).
wheels:
	$(PY) tools/build_wheels.py

.PHONY: wheels

# docs/images/dashboard*.png: the screenshots the headless-browser tests take (chromium)
screenshots: build
	PYOTP_SCREENSHOT_DIR=docs/images PYTHONPATH=src $(PY) -m pytest -q -p no:cacheprovider tests/apps/test_dashboard_browser.py

.PHONY: screenshots
