# nanoMolmo2: `make test` sets up the environments (pinned versions) on first use, then runs the tests.
#   .venv      the project: CPU torch 2.13, the package (editable) and its dev tools
#   .venv-ref  reference only: transformers' Molmo2 image/video processors need torchvision (torch 2.14.1)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REF_VENV := .venv-ref
REF_STAMP := $(REF_VENV)/.installed
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: test test-fast demo demo-quick pretrained rehearsal lint format mutation clean chromium

$(STAMP): pyproject.toml requirements-dev.lock requirements-nodeps.lock requirements-demo.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.lock
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r requirements-demo.lock
	$(PY) -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(REF_STAMP): requirements-ref.lock requirements-nodeps.lock
	test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-ref.lock
	$(REF_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r requirements-nodeps.lock
	touch $(REF_STAMP)

# The browser test of `nanomolmo2 serve` (tests/test_serve.py) drives Debian's Chromium, installed when missing.
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Everything (CI runs this). test-fast skips the tests marked slow (training runs, the quick demo): for development.
test: $(STAMP) $(REF_STAMP) chromium
	$(PY) -m pytest -q

test-fast: $(STAMP) $(REF_STAMP)
	$(PY) -m pytest -q -m "not slow"

# The tiny model through all three stages on ShapesWorld, evaluated: runs/demo/metrics.json, points.png.
demo: $(STAMP)
	$(PY) -m nanomolmo2.demo --out runs/demo --data data/demo

# The tiny model's pretrained parts (nanomolmo2/pretrained/, committed): a SigLIP-style vision encoder and a Qwen3
# pretrained on ShapesWorld's text, both from the demo's training split (nanomolmo2/pretrain/). `make demo` uses them.
pretrained: $(STAMP)
	$(PY) -m nanomolmo2.demo --data-only --data data/demo
	$(PY) -m nanomolmo2.pretrain --train data/demo/train --held-out data/demo/eval --out nanomolmo2/pretrained

demo-quick: $(STAMP)
	$(PY) -m nanomolmo2.demo --quick --out runs/demo-quick --data data/demo-quick

# The real training path, offline, on tiny checkpoints and public-shaped tables served over local HTTPS: download_all.sh,
# stage 1 -> 2 -> 3 under torchrun, transformers serving final/, eval (docs/REAL_TRAINING.md). Everything: runs/rehearsal.
rehearsal: $(STAMP) $(REF_STAMP)
	$(PY) -m tests.rehearsal.run --out runs/rehearsal

# Mutation testing (not in CI; an hour or more on 2 cores): mutmut over the modules listed in pyproject.toml,
# then the score per module and the surviving mutants (docs/TESTING.md).
MUT_STAMP := $(VENV)/.mutation-installed
$(MUT_STAMP): $(STAMP) requirements-mutation.lock
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-mutation.lock
	touch $(MUT_STAMP)

mutation: $(STAMP) $(REF_STAMP) $(MUT_STAMP)
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 || true  # one thread: torch's pool does not survive fork
	$(PY) scripts/mutation_report.py

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(REF_VENV) .pytest_cache .ruff_cache mutants
