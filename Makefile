# Two commands: `make run` and `make test`. Both install what is missing (as root) or print the
# exact apt-get line (as a normal user), then build.
SHELL := /bin/bash
SWIFT ?= swift
RUN_CONFIG ?= release
# Debian packages the build, the tests and the benchmarks need.
PACKAGES := libhiredis-dev libpq-dev libsqlite3-dev pkg-config redis-server postgresql-15 wrk curl jq python3 python3-yaml procps iproute2 iptables faketime
TESTENV_DIR ?= $(CURDIR)/.testenv
ARGS ?=

.PHONY: run test deps build build-tests bench chaos clean testenv-up testenv-down

deps:
	@missing=""; \
	for p in $(PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages. Run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6.1 or newer (swift.org) and put it on PATH"; exit 1; }

build: deps
	$(SWIFT) build -c $(RUN_CONFIG) --product coordinator

## make run: build and start a pilot node on 127.0.0.1:8080 (data in ./coordinator-data).
run: build
	$$($(SWIFT) build -c $(RUN_CONFIG) --show-bin-path)/coordinator serve $(ARGS)

build-tests: deps
	$(SWIFT) build --build-tests

## make test: start throwaway Redis + PostgreSQL primary/replica, run every test, stop them. Unit, node and HTTP
## tests run in parallel; the integration tests (real servers, private primaries and replicas, timing bounds)
## run one at a time, so one test's server start-up cannot stall another's deadline check on 2 cores.
test: build-tests
	@set -o pipefail; \
	cluster/testenv down "$(TESTENV_DIR)" >/dev/null 2>&1 || true; \
	cluster/testenv up "$(TESTENV_DIR)" || exit 1; \
	trap 'cluster/testenv down "$(TESTENV_DIR)"' EXIT; \
	source "$(TESTENV_DIR)/env"; \
	export COORDINATOR_TEST_BINARY="$$($(SWIFT) build --show-bin-path)/coordinator"; \
	$(SWIFT) test --skip-build --skip IntegrationTests 2>&1 | tee "$(TESTENV_DIR).log"; status=$$?; \
	$(SWIFT) test --skip-build --no-parallel --filter IntegrationTests 2>&1 | tee -a "$(TESTENV_DIR).log" || status=1; \
	python3 chaos/run --quick --bin "$$COORDINATOR_TEST_BINARY" --report-dir "$(TESTENV_DIR)-chaos" || status=1; \
	if grep -Eq "Test .* skipped[.:]|with [1-9][0-9]* tests? skipped" "$(TESTENV_DIR).log"; then \
	  echo "error: a test was skipped; in make test every test must run"; status=1; fi; \
	rm -f "$(TESTENV_DIR).log"; \
	exit $$status

testenv-up: deps
	cluster/testenv up "$(TESTENV_DIR)"

testenv-down:
	cluster/testenv down "$(TESTENV_DIR)"

## make bench: the benchmark table of README (release builds): HTTP side by side with wrk, exact (cluster)
## mode against redis-benchmark on its own redis-server (unpipelined, then pipelined), approximate mode vs
## exact mode with its overshoot, trip propagation across 5 processes, PostgreSQL routing vs direct libpq
## (throughput, failover, read-your-writes), then the
## package-benchmark suite of Benchmarks/ (its own package) with ratios to its in-run baseline.
## ARGS go to `coordinator bench http` (e.g. ARGS="--duration 20 --connections 64").
bench: deps
	$(SWIFT) build -c release --product coordinator
	$$($(SWIFT) build -c release --show-bin-path)/coordinator bench http $(ARGS)
	$$($(SWIFT) build -c release --show-bin-path)/coordinator bench exact
	$$($(SWIFT) build -c release --show-bin-path)/coordinator bench exact --pipeline 16 --node-concurrency 128
	$$($(SWIFT) build -c release --show-bin-path)/coordinator bench approximate
	$$($(SWIFT) build -c release --show-bin-path)/coordinator bench propagation
	$$($(SWIFT) build -c release --show-bin-path)/coordinator bench postgres
	@set -o pipefail; cd Benchmarks && mkdir -p .build && \
	  $(SWIFT) package --disable-sandbox benchmark --no-progress 2>&1 | tee .build/benchmark-output.txt && \
	  python3 ratios.py .build/benchmark-output.txt

## make chaos: every chaos scenario on fresh release-build clusters (ARGS, e.g. ARGS="--repeat 5"); report in ./chaos-report.
chaos: deps
	$(SWIFT) build -c release --product coordinator
	python3 chaos/run --bin "$$($(SWIFT) build -c release --show-bin-path)/coordinator" $(ARGS)

clean:
	rm -rf .build .testenv
