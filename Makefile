# beamish: the two commands a new machine needs are `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NODES   ?= 1

.PHONY: demo test lint typecheck pytest bench erlang netns node browser gateway-tools clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# setup.py builds the C codec: editing it rebuilds.
$(STAMP): pyproject.toml setup.py src/beamish/dist/_etf_c.c | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,uvloop,config,bench,apps]'
	touch $(STAMP)

# Debian's erlang and elixir for the interop tests, when missing and apt is there.
# In CI (CI=true) the interop tests fail, rather than skip, if `erl` is still missing.
erlang:
	@if ! command -v erl >/dev/null 2>&1 || ! command -v elixir >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	      erlang-base erlang-crypto erlang-ssl erlang-public-key erlang-asn1 erlang-dev elixir >/dev/null; \
	  else echo "apt-get not found: interop tests need erlang and elixir installed"; fi; \
	fi

# iproute2 (`ip`, `tc`) for the partition tests (tests/interop/netns.py), which
# need root; in CI they fail, rather than skip, without it.
netns:
	@if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq iproute2 >/dev/null; \
	  else echo "apt-get not found: partition tests need iproute2 (ip, tc)"; fi; \
	fi

# The chat's JavaScript (Phoenix's client, and ws for tests run from Node), from the
# committed lockfile; Debian's nodejs and npm when missing.
CHAT_ASSETS := apps/chat/assets
NODE_STAMP  := $(CHAT_ASSETS)/node_modules/.installed
$(NODE_STAMP): $(CHAT_ASSETS)/package.json $(CHAT_ASSETS)/package-lock.json
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "apt-get not found: the chat needs node and npm"; fi; \
	fi
	cd $(CHAT_ASSETS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node: $(NODE_STAMP)

# Debian's chromium for the browser tests (Playwright drives it by executable_path;
# `playwright install` is never run). In CI a missing browser fails the tests.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  else echo "apt-get not found: browser tests need chromium"; fi; \
	fi

# Debian's wrk and nginx for the gateway's benchmark (bench/bench_gateway.py),
# which the test suite runs in --quick mode.
gateway-tools:
	@if ! command -v wrk >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk nginx-light >/dev/null; \
	  else echo "apt-get not found: the gateway's benchmark needs wrk and nginx"; fi; \
	fi

demo: $(STAMP) $(NODE_STAMP)
	$(BIN)/python examples/demo.py --nodes $(NODES)

lint: $(STAMP)
	$(BIN)/ruff check --no-cache src tests examples bench apps

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) erlang netns node browser gateway-tools
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP) gateway-tools
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .hypothesis
