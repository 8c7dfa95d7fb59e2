# The two commands of the README:
#   make demo   set up everything and run the main job on the embedded synthetic web
#   make test   set up everything and run the whole test suite (what .ci/run runs)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: 2.13.0's CPU build is what a CPU-only machine gets here,
# while an unpinned torch pulls several GB of CUDA wheels. setup.py pins the same release.
TORCH  := torch==2.13.0
# img2dataset imports albumentations, which looks for updates online at import time.
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: venv system-deps test demo bench screenshot clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests use: WordNet 3.0 (the real database the query-list tests read) and
# Chromium (the pages are checked in a real browser, headless).
system-deps:
	@missing=; \
	[ -f /usr/share/wordnet/data.noun ] || missing="$$missing wordnet-base"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "installing Debian packages the tests use:$$missing"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || echo "warning: could not install$$missing; tests that need them skip (the browser tests fail under CI)"; \
	fi

test: venv system-deps
	$(BIN)/python -m pytest tests

demo: venv
	$(BIN)/clipdata demo --output demo_output

# Each benchmark prints its figure beside the peer it is compared with (see README, Benchmarks).
bench: venv
	$(BIN)/python bench/queries.py
	$(BIN)/python bench/curate.py matcher
	$(BIN)/python bench/curate.py pipeline
	$(BIN)/python bench/download.py
	$(BIN)/python bench/train.py

# The README's screenshot, from the demo's page rendered in headless Chromium (run `make demo` first).
screenshot: venv system-deps
	$(BIN)/python tests/browser.py demo_output/index.html pipeline/demo/demo_report.png

clean:
	rm -rf $(VENV) demo_output bench_output .pytest_cache
