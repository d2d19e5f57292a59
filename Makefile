# The two commands: `make run` and `make test`. Everything else is set up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LISTEN ?= :9847
ARGS ?=

.PHONY: run test lint typecheck pytest test-deps bench clean proto demo demo-cluster mutation screenshots manifests

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/node-exporter-ml --web.listen-address=$(LISTEN) --state.dir=$(CURDIR)/.state $(ARGS)

# System packages the tests drive for real: promtool and a Prometheus server, headless
# Chromium for the pages we serve, node_exporter for the scrape benchmark, systemd-analyze
# for the unit file checks.
DEBIAN_TEST_PACKAGES := prometheus chromium prometheus-node-exporter systemd
test-deps:
	@missing=""; \
	for pkg in $(DEBIAN_TEST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy

# pytest exits 5 when it collected no test; that is a failure of the suite, say so clearly.
pytest: $(BIN)/.installed-test test-deps
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test: lint typecheck pytest

# Each benchmark prints its figures beside a peer measured in the same run (bench/README.md).
bench: $(BIN)/.installed-test test-deps
	$(BIN)/python bench/scrape.py
	$(BIN)/python bench/nvml_tick.py
	$(BIN)/python bench/attribution.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/drift_http.py --rows 200000
	$(BIN)/python bench/flood.py

# Mutation testing of the pure cores, one module at a time (not in `make test`: over an
# hour on 2 CPUs; figures in bench/README.md). MUTATION_ARGS=serving/window.py for one.
MUTATION_ARGS ?=
mutation: $(BIN)/.installed-test test-deps
	$(BIN)/python scripts/mutation.py $(MUTATION_ARGS)

# The quickstart: examples/model_server.py (latency histogram, drift feed) + the agent, no GPU.
DEMO_ARGS ?=
demo: $(BIN)/.installed
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

# The README's pictures: the demo until drift shows, then headless Chromium (docs/img/).
screenshots: $(BIN)/.installed-test test-deps
	$(BIN)/python examples/demo.py --port=0 --drift-after=5 --until-ready --timeout=90 \
	  --then "$(BIN)/python scripts/screenshots.py --out docs/img"

# Four agents replaying different GPU recordings, one Prometheus with the shipped rules.
demo-cluster: $(BIN)/.installed-test test-deps
	$(BIN)/python -m tools.cluster

# The deploy files made from other committed files: the dashboard JSON (tools/dashboard_build.py),
# its ConfigMap, the PrometheusRule and the Helm chart's copies (tools/deploy_build.py).
# `make test` fails while one is stale; `python -m tools.deploy_build --check` names them.
manifests: $(BIN)/.installed
	$(BIN)/python -m tools.deploy_build

# The kubelet pod-resources API: proto/podresources/v1/api.proto -> committed Python modules.
# The -I mapping makes the generated _pb2_grpc import its _pb2 by its package path.
proto: $(BIN)/.installed-test
	$(BIN)/python -m grpc_tools.protoc \
	  -Inode_exporter_ml/podresources=proto/podresources/v1 \
	  --python_out=. --pyi_out=. --grpc_python_out=. \
	  node_exporter_ml/podresources/api.proto

# The sdist and the wheel, built in an isolated environment as a release would build them
# (tests/test_dist.py installs the wheel into a fresh virtualenv outside the repository).
DIST ?= dist
.PHONY: dist
dist: $(BIN)/.installed-test
	rm -rf $(DIST)
	$(BIN)/python -m build --outdir $(DIST) .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# --- real model servers (tests/test_serving_real.py) -------------------------------------
# One virtualenv per framework, installed once (stamp files): their pins clash with ours
# and with each other (MLServer 1.7.1 needs uvloop<0.22; MLServer and KServe 0.21 pin
# different starlettes).
SERVERS := .servers
SERVER_FRAMEWORKS := mlserver bentoml kserve
.PHONY: test-servers
$(SERVERS)/%/.installed: tests/servers/requirements-%.txt
	rm -rf $(SERVERS)/$*
	$(PYTHON) -m venv $(SERVERS)/$*
	$(SERVERS)/$*/bin/pip install -q -r $<
	touch $@
test-servers: $(foreach f,$(SERVER_FRAMEWORKS),$(SERVERS)/$(f)/.installed)
pytest: test-servers
# --- end of real model servers ------------------------------------------------------------
