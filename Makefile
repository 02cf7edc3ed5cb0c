# Thin wrappers over the Python entry points. `make serve` and `make test` install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint bench bench-export perf clean prometheus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, alone: where a CPU wheel of this version lies in pip's find-links (as on the
	# project's machines) pip takes it, instead of the multi-GB CUDA build the resolver picks.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[client,export,server,ray,bench,test]"
	touch $(STAMP)

install: $(STAMP)

# The demo model, built only if the repository holds no model yet (about 40 s on 2 cores, measured: 36.9 s).
demo: install
	$(PY) -m export.demo --if-missing

# The embedded tritonserver on ports 8000 (HTTP), 8001 (gRPC) and 8002 (metrics).
serve: demo
	$(PY) -m server

# Prometheus evaluates the autoscaling rule and the dashboard in tests/e2e/test_metrics.py:
# Debian's package, installed like every other dependency (as root, as CI runs).
prometheus:
	@command -v prometheus >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }; }

test: install prometheus
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# Triton against its peers: report, CSV and plot under runs/bench (about 30 minutes on 2 cores). No root:
# perf_analyzer's libraries come from the wheels (bench/perf_analyzer.py). Then the documentation's
# Batch Transform beside a naive script and service: runs/bench/batch_transform.md (about 3 minutes);
# mixed lengths against a naive one-request-at-a-time service: runs/bench/mixed_lengths.md (about 4).
bench: install
	$(PY) -m bench.suite
	$(PY) -m bench.batch_transform
	$(PY) -m bench.mixed_lengths

# perf_analyzer against a running server's front door with your body:
#   make perf BODY=request.json [URL=localhost:8001] [PROTOCOL=grpc|http] [CONTENT_TYPE=...]
BODY ?=
PROTOCOL ?= grpc
perf: install
	@test -n "$(BODY)" || { echo "usage: make perf BODY=request.json [URL=host:port] [PROTOCOL=grpc|http]"; exit 2; }
	$(PY) -m bench.perf_analyzer $(BODY) --protocol $(PROTOCOL) $(if $(URL),--url $(URL)) \
		$(if $(CONTENT_TYPE),--content-type "$(CONTENT_TYPE)")

# Quality figures of the export issue (needs ../shared/data).
bench-export: install
	$(PY) -m bench.export_quality

clean:
	rm -rf .triton runs model_repository/enc*/config.pbtxt model_repository/pair/config.pbtxt \
		model_repository/*/configs \
		model_repository/*/1/model.onnx model_repository/*/1/flat.onnx model_repository/facts.json model_repository/configs.json
