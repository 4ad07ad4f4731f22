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

.PHONY: setup sandbox-deps browser-deps db-deps demo test nbval formgrader export lab release grade bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "Installing the pinned packages into $(VENV) (first time: about a minute)..."
	@$(PIP) -e . 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import torch, nbgrader, course_lib" || { echo "setup failed: see the pip output above" >&2; exit 1; }
	@touch $(STAMP)

# The grading sandbox needs bubblewrap (Debian package `bubblewrap`) and, for its uid tier (containers),
# setfacl (package `acl`), and shellcheck for the review of the Gradescope scripts: installed here when missing and possible (root with apt-get); otherwise the
# tier that needs them is unavailable and its tests are skipped, loudly.
sandbox-deps:
	@missing=""; command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v setfacl >/dev/null 2>&1 || missing="$$missing acl"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing$$missing for the grading sandbox..."; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq $$missing >/dev/null 2>&1; }; \
	fi; true
	@command -v bwrap >/dev/null 2>&1 || echo "WARNING: bubblewrap (bwrap) is not installed: the bwrap sandbox tier is unavailable and its tests are SKIPPED"
	@command -v setfacl >/dev/null 2>&1 || echo "WARNING: setfacl (acl) is not installed: the uid sandbox tier cannot close readable course files"

# Browser tests (tests/browser) drive Debian's chromium through Playwright: installed here when missing and
# possible (root with apt-get); otherwise those tests are skipped, loudly.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing chromium for the browser tests..."; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq chromium >/dev/null 2>&1; }; \
	fi; true
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	echo "WARNING: chromium is not installed: the browser tests (tests/browser) are SKIPPED"

# The shared-gradebook tests (tests/autograder/test_shared_gradebook.py) start a real PostgreSQL server:
# Debian's postgresql, installed here when missing and possible (root with apt-get); otherwise they are
# skipped, loudly.
db-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing postgresql for the shared-gradebook tests..."; \
		apt-get install -y -qq postgresql >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq postgresql >/dev/null 2>&1; }; \
	fi; true
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	echo "WARNING: PostgreSQL's server is not installed: the shared-gradebook tests are SKIPPED"

demo: setup sandbox-deps
	$(PY) -m autograder release
	$(PY) -m autograder grade $(ASSIGNMENT) --submissions $(SUBMISSIONS) --out $(OUT) --workers $(WORKERS)

test: setup sandbox-deps browser-deps db-deps
	NBGRADER_EXECUTION=ci WANDB_MODE=disabled MPLBACKEND=Agg $(PY) -m pytest -p no:cacheprovider -n 3 --durations=25 tests

# The instructor's notebooks cell by cell with nbval (hidden tests included). Not in `make test`: the
# bundle tests run every filled solution top to bottom there, and grading them gives full marks.
nbval: setup
	NBGRADER_EXECUTION=ci WANDB_MODE=disabled MPLBACKEND=Agg $(PY) -m pytest -p no:cacheprovider --nbval-lax solutions

formgrader: setup
	$(PY) -m autograder formgrader $(OUT) $(if $(DB),--db $(DB))

export: setup
	$(PY) -m autograder export $(OUT) $(if $(DB),--db $(DB))

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

release: setup
	$(PY) -m autograder release --timings
	$(PY) -m autograder.submissions

grade: setup sandbox-deps
	$(PY) -m autograder grade $(ASSIGNMENT) --submissions $(SUBMISSIONS) --out $(OUT) --workers $(WORKERS)

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf grading-out .nbgrader .pytest_cache .hypothesis
