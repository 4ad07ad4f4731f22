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

.PHONY: setup sandbox-deps browser-deps db-deps hub-deps demo test nbval formgrader export lab release grade bench gpu-check gpu-wheels clean

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

# The JupyterHub test (tests/hub) runs a real hub, whose proxy is configurable-http-proxy from the npm registry
# (CHP_VERSION, the one we tested): installed here when missing and possible (root with npm); otherwise that
# test is skipped, loudly.
CHP_VERSION ?= 5.3.0
hub-deps:
	@command -v configurable-http-proxy >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && { command -v npm >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -qq npm >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1; \
		  apt-get install -y -qq npm >/dev/null 2>&1; }; }; command -v npm >/dev/null 2>&1; }; }; then \
		echo "Installing configurable-http-proxy (npm) for the JupyterHub test..."; \
		npm install -g --silent configurable-http-proxy@$(CHP_VERSION) >/dev/null 2>&1 || true; \
	fi; true
	@command -v configurable-http-proxy >/dev/null 2>&1 || \
	echo "WARNING: configurable-http-proxy is not installed (as root: npm install -g configurable-http-proxy): the JupyterHub test (tests/hub) is SKIPPED"

demo: setup sandbox-deps
	$(PY) -m autograder release
	$(PY) -m autograder grade $(ASSIGNMENT) --submissions $(SUBMISSIONS) --out $(OUT) --workers $(WORKERS)

# One OpenMP/MKL thread per process: the suite runs dozens of torch processes at once (xdist workers, their
# grading workers, kernels) on 2 cores, where each one's pool of spinning threads only slows the others.
test: setup sandbox-deps browser-deps db-deps hub-deps
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NBGRADER_EXECUTION=ci WANDB_MODE=disabled MPLBACKEND=Agg $(PY) -m pytest -p no:cacheprovider -n 3 --dist loadgroup -m "not slow" --durations=25 tests

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
	$(PY) -m autograder.intake.samples

grade: setup sandbox-deps
	$(PY) -m autograder grade $(ASSIGNMENT) --submissions $(SUBMISSIONS) --out $(OUT) --workers $(WORKERS)

bench: setup
	$(PY) -m benchmarks

# The CUDA half in one call on a machine with torch and CUDA; no registry needed there (carry build/gpu-wheels,
# made by `make gpu-wheels`). Without .venv (a lent GPU machine) it uses that machine's python3. Results in
# $OUT when set, else build/gpu-check/.
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)

gpu-check:
	$(GPU_PY) -m gpu.check

gpu-wheels: setup
	$(PY) -m gpu.wheels

clean:
	rm -rf grading-out .nbgrader .pytest_cache .hypothesis
