# arbg: every target does its own set-up.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATIC := static/3Dmol-min.js
TORCH ?= torch==2.13.0

.PHONY: run test bench setup browser-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# 3Dmol.js comes from npm into the app's static folder (not committed).
$(STATIC):
	mkdir -p static
	cd static && npm install --no-audit --no-fund --silent --prefix ./.npm 3dmol@2.5.5
	cp static/.npm/node_modules/3dmol/build/3Dmol-min.js $(STATIC)

setup: $(STAMP) $(STATIC)

# Debian chromium for the real-browser tests (playwright cannot download browsers here).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

run: setup
	$(BIN)/streamlit run app.py

test: setup browser-deps
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m arbg_core.cli bench --out results

clean:
	rm -rf $(VENV) static/.npm $(STATIC)
