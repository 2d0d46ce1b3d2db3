# The runnable companion to the tutorial on non-blocking and multiplexed socket IO.
# `python`, as README writes it, where that is Python 3.8 or newer; otherwise `python3`.
PYTHON ?= $(shell python -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null \
            && echo python || echo python3)
PORT ?= 8800
HOST ?= 127.0.0.1

.DEFAULT_GOAL := help
.PHONY: help test bench run-nonblocking run-select run-selectors client interactive clean

help:
	@echo 'make test              run the tests (sets up .venv with pytest if $(PYTHON) lacks it)'
	@echo 'make bench             measure the IO models, asyncio and threads side by side, and draw'
	@echo '                       the crowd in crowd.svg (5 to 7 minutes)'
	@echo 'make run-nonblocking   the busy-loop server: replies b"my server"'
	@echo 'make run-select        the select.select() server: replies the text upper-cased'
	@echo 'make run-selectors     the selectors server: replies data.upper() + b"_SB"'
	@echo 'make client            client.py: sends "my client:<pid>" every second'
	@echo 'make interactive       interactive_client.py: the >>: prompt'
	@echo 'make clean             remove .venv and caches'
	@echo 'Variables: PYTHON=$(PYTHON) HOST=$(HOST) PORT=$(PORT)'

# Use $(PYTHON) when it has pytest; otherwise .venv with pytest in it, made from $(PYTHON) itself:
# a .venv left from another interpreter is made again, so that PYTHON= is always obeyed.
# `--half both`: the tests in two halves side by side, about a minute rather than two (conftest.py).
test:
	@if $(PYTHON) -c 'import pytest' 2>/dev/null; then py='$(PYTHON)'; else \
	    want=$$($(PYTHON) -c 'import sys; print(sys.version)'); \
	    have=$$(.venv/bin/python -c 'import pytest, sys; print(sys.version)' 2>/dev/null); \
	    if [ "$$have" != "$$want" ]; then \
	        echo '$(PYTHON) has no pytest: installing it in .venv'; rm -rf .venv; \
	        $(PYTHON) -m venv .venv && .venv/bin/python -m pip install -q pytest || exit 1; \
	    fi; py=.venv/bin/python; fi; \
	$$py -m pytest -q -rs --half both test_servers.py

bench:
	$(PYTHON) tools/bench.py --svg crowd.svg

run-nonblocking:
	$(PYTHON) nonblocking_server.py --host $(HOST) --port $(PORT)

run-select:
	$(PYTHON) select_server.py --host $(HOST) --port $(PORT)

run-selectors:
	$(PYTHON) selectors_server.py --host $(HOST) --port $(PORT)

client:
	$(PYTHON) client.py --host $(HOST) --port $(PORT)

interactive:
	$(PYTHON) interactive_client.py --host $(HOST) --port $(PORT)

clean:
	rm -rf .venv .pytest_cache __pycache__
