# One command per job; every target sets up .venv first (pinned packages from pyproject.toml).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ASSIGNMENT ?= rope
SUBMISSIONS ?= autograder/samples/$(ASSIGNMENT)
OUT     ?= grading-out/$(ASSIGNMENT)
WORKERS ?= 2
# Quiet pip: no progress bars, no warnings about this machine's local package folders.
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check --progress-bar off

export WANDB_MODE ?= offline

.PHONY: setup demo test lab release grade bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "Installing the pinned packages into $(VENV) (first time: about a minute)..."
	@$(PIP) -e . 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import torch, nbgrader, course_lib" || { echo "setup failed: see the pip output above" >&2; exit 1; }
	@touch $(STAMP)

demo: setup
	$(PY) -m autograder release
	$(PY) -m autograder grade $(ASSIGNMENT) --submissions $(SUBMISSIONS) --out $(OUT) --workers $(WORKERS)

test: setup
	NBGRADER_EXECUTION=ci WANDB_MODE=disabled MPLBACKEND=Agg $(PY) -m pytest -p no:cacheprovider tests solutions --nbval-lax

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

release: setup
	$(PY) -m autograder release

grade: setup
	$(PY) -m autograder grade $(ASSIGNMENT) --submissions $(SUBMISSIONS) --out $(OUT) --workers $(WORKERS)

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf grading-out .nbgrader .pytest_cache .hypothesis
