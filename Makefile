# Two commands do everything on a fresh machine:
#   make serve   set up, build the demo models, serve them on :3000 with embedded defaults
#   make test    set up, start what the tests need, run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
GRPC_PORT ?= 3001
METRICS_PORT ?= 3002
export BENTOML_HOME ?= $(CURDIR)/.bentoml

.PHONY: setup models serve test test-cache-off bench system-deps redis bento clean cluster docs cluster-test test-compiled

$(BIN)/python:
	@echo "setup: creating the virtual environment $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

## pip's own progress, one line per package it fetches or installs (its errors still go to stderr).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "setup: installing rtserve and its dependencies into $(VENV) (a few minutes the first time) ..."
	@set -o pipefail; $(BIN)/pip install --progress-bar off -e ".[test,load,docs,text,heavy]" \
	  | awk '/^(Collecting|Installing collected|Successfully installed)/ { print "  " $$0; fflush() }'
	touch $@

## Debian packages the tests and the benchmark drive: wrk (load), prometheus + promtool, redis-server,
## podman + runc + debootstrap (the container test), nginx (the cluster; /usr/sbin is not on every PATH),
## h2load (gRPC load for make bench-grpc), chromium (the API page's test, headless).
system-deps:
	@missing=""; \
	for pair in wrk:wrk hey:hey prometheus:prometheus promtool:prometheus redis-server:redis-server \
	  podman:podman runc:runc debootstrap:debootstrap nginx:nginx h2load:nghttp2-client \
	  chromium:chromium; do \
	  command -v $${pair%%:*} >/dev/null || [ -x /usr/sbin/$${pair%%:*} ] || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## Redis on 127.0.0.1:6379, started when it is not answering.
redis: system-deps
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
	    --dir /tmp --logfile /tmp/rtserve-redis.log
	@for i in $$(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 0.1; done; \
	  echo "redis did not start" >&2; exit 1

setup: $(VENV)/.installed
	@echo "setup: the demo models in $(BENTOML_HOME): each one missing is trained and imported (a line per model) ..."
	$(BIN)/python -m demo.build

models: setup

DEV_SECRET := .dev/jwt-secret

serve: setup
	@echo "serve: the development key in $(DEV_SECRET), then the server ..."
	@$(BIN)/python -c "from gateway.tokens import ensure_dev_secret; from pathlib import Path; ensure_dev_secret(Path('$(DEV_SECRET)'))"
	@echo "Open Inference Protocol: http://localhost:$(PORT)/v2   API page: http://localhost:$(PORT)/docs"
	@echo "gRPC (KServe V2 GRPCInferenceService, tritonclient.grpc): localhost:$(GRPC_PORT)"
	@echo "Prometheus metrics: http://localhost:$(METRICS_PORT)/metrics"
	@echo "Auth is on with a development key ($(DEV_SECRET)). Get a token:"
	@echo "  TOKEN=\$$($(BIN)/rtserve token --scope 'predict admin' --tenant dev)"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://localhost:$(PORT)/v2/models/digits-sklearn"
	@echo "Starting: the server imports its frameworks, then logs each model version as it loads, and one"
	@echo "'ready:' line once every model is ready (until then /v2/health/ready answers 503)."
	RTSERVE_AUTH_ENABLED=true RTSERVE_AUTH_HS256_SECRET_FILE=$(DEV_SECRET) RTSERVE_RATELIMIT_ENABLED=true \
	  RTSERVE_GRPC_PORT=$(GRPC_PORT) RTSERVE_METRICS_PORT=$(METRICS_PORT) $(BIN)/bentoml serve --port $(PORT)

## Each pytest session copies the demo models from one build in build/test-models/ (tests/demo_store.py), made
## again only when the code or packages that build them change; the tests never read .bentoml/, so `setup`'s
## build of it is not waited for here (`make serve` makes it).
test: $(VENV)/.installed system-deps redis
	$(BIN)/python -m pytest --ignore=tests/deploy/test_container.py --ignore=tests/cluster/test_model_repository.py \
	  --ignore=tests/app/test_optimize_compiled.py
	$(MAKE) --no-print-directory test-cache-off
	$(MAKE) --no-print-directory container-test

## `rtserve optimize --to compiled` on a tiny network: an AOTInductor compile, minutes on two loaded cores.
test-compiled: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest -q tests/app/test_optimize_compiled.py -o timeout=1200

## The reference docs (docs/, mkdocs.yml) into build/docs/, strict: a warning or a broken internal link fails.
## `make test` builds them too (tests/docs/).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## The in-process tests again with the prediction cache off (production runs with it on, as the suite does):
## those whose requests can take another path without it. Tests marked cache_independent stay out (decided
## before the cache, or servers of their own, which RTSERVE_TEST_CACHE does not reach); each file says why.
test-cache-off: $(VENV)/.installed system-deps redis
	RTSERVE_TEST_CACHE=off $(BIN)/python -m pytest -q -m "not cache_independent" \
	  $(sort $(shell grep -rl serve_in_process tests --include='test_*.py') tests/jobs)

## CLUSTER_REPLICAS replicas of two workers behind nginx on 127.0.0.1:$(CLUSTER_PORT), sharing the Redis on
## :6379 and the development key; prints the URL and a token; Ctrl-C or SIGTERM stops nginx and every replica.
CLUSTER_REPLICAS ?= 2
CLUSTER_PORT ?= 8080
cluster: setup system-deps redis
	$(BIN)/python -m deploy.cluster --replicas $(CLUSTER_REPLICAS) --port $(CLUSTER_PORT) --secret-file $(DEV_SECRET)

## Two replicas with a model store each and one model repository (SeaweedFS) behind nginx, under load:
## deploy through one, served by the other, a canary promoting on both, storage stopped during a pull.
cluster-test: setup system-deps
	$(BIN)/python -m pytest -s -q tests/cluster/test_model_repository.py

bench: setup system-deps redis
	$(BIN)/python -m loadtest.bench --open-loop --scaling $(BENCH_ARGS)

## Benchmark models of real size (a ResNet-50-sized network as ONNX and TorchScript, a BERT-base-sized text
## encoder serving strings, 500 XGBoost trees) built from fixed seeds into the store through the importer:
## about 1.2 GB on disk, minutes to build (loadtest/heavy/build.py). Not part of `make test`, which builds stand-ins.
.PHONY: heavy-models
heavy-models: setup
	$(BIN)/python -m loadtest.heavy.build $(HEAVY_ARGS)

## The heavy models' own numbers without HTTP (loadtest/heavy/bench.py): load time and memory (1 and 2 workers,
## after unload), the runner's batch curve at batch 1..64, the batcher's predicted cost against the measured,
## and 1 worker x 2 threads against 2 workers x 1 thread. Tables in loadtest/results/heavy-*.md (tens of minutes).
.PHONY: heavy-bench
heavy-bench: heavy-models
	$(BIN)/python -m loadtest.heavy $(HEAVY_BENCH_ARGS)

## The heavy models through the whole service (loadtest/heavy/fullpath.py): auth, limits, cache, metrics on Redis,
## closed loop at rising concurrency and open loop at half the runner's limit, against that limit and against
## Triton (PyTriton, ONNX Runtime in Python) and stock BentoML on the same files. Tables in
## loadtest/results/heavy-fullpath-*.md (about 40 minutes).
.PHONY: heavy-fullpath
heavy-fullpath: heavy-models redis
	$(BIN)/python -m loadtest.heavy.fullpath $(HEAVY_FULLPATH_ARGS)

## gRPC beside REST on the same server in one run (h2load for gRPC, wrk for REST; about 4 minutes).
.PHONY: bench-grpc
bench-grpc: setup system-deps redis
	$(BIN)/python -m loadtest.grpcbench $(BENCH_ARGS)

## Ten minutes at half of the measured saturation on the production path, not part of `make test`:
## no errors, p99 and worker memory steady, GC pauses not growing. SOAK_ARGS="--minutes 2": a quick check.
.PHONY: soak
soak: setup system-deps redis
	$(BIN)/python -m loadtest.soak $(SOAK_ARGS)

## The Bento: CPU build by default (torch's CPU wheel carried in wheels/, no CUDA stack);
## GPU build: make bento BENTOFILE=deploy/container/bentofile.gpu.yaml. The build imports service.py,
## which validates the serving configuration; building serves nothing, so it needs no key.
BENTOFILE ?= bentofile.yaml
bento: setup
	deploy/container/fetch-torch-wheel.sh $(BENTOFILE)
	$(BIN)/bentoml build -f $(BENTOFILE) .

## The CPU Bento's image built and run with podman (private store and settings in deploy/container/):
## serves with a token, refuses without, stops on SIGTERM. BENTOFILE=deploy/container/bentofile.gpu.yaml:
## the same for the GPU image (about 2.7 GB of CUDA wheels to download; served on the CPU here). Removes its images afterwards; the local
## base image (docker.io/library/python:3.11-slim, from Debian packages) is kept for the next run.
.PHONY: container-test
container-test: $(VENV)/.installed system-deps
	RTSERVE_CONTAINER_BENTOFILE=$(BENTOFILE) $(BIN)/python -m pytest tests/deploy/test_container.py -p no:cacheprovider

clean:
	rm -rf $(VENV) .bentoml .pytest_cache build/test-models

## Fuzzing: atheris on the decoders (FUZZ_SECONDS per target; corpora and crashes in build/fuzz/), then
## schemathesis against real servers (FUZZ_EXAMPLES inputs per operation, each sent three ways: over
## 10,000 requests). Tables: build/fuzz/atheris.md, build/fuzz/schemathesis.md.
FUZZ_SECONDS ?= 60
FUZZ_EXAMPLES ?= 300
.PHONY: fuzz
fuzz: setup system-deps redis
	mkdir -p build/fuzz && set -o pipefail && $(BIN)/python -m fuzz.run --seconds $(FUZZ_SECONDS) | tee build/fuzz/atheris.md
	RTSERVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) RTSERVE_FUZZ_REPORT=build/fuzz/schemathesis.md \
	  $(BIN)/python -m pytest tests/fuzz/test_schemathesis.py -q -o timeout=3600

## Kubernetes: render every kustomization in deploy/k8s/ and validate each manifest (core kinds against
## Kubernetes 1.30 in strict mode, custom kinds against deploy/schemas/); the Prometheus Operator's
## resources must match deploy/prometheus/ (python -m deploy.k8s.generate rewrites them).
.PHONY: k8s-validate
k8s-validate: $(VENV)/.installed
	$(BIN)/python -m deploy.k8s.generate --check
	$(BIN)/python -m deploy.k8s.validate
