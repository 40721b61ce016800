# The README's test command is `make test`; .ci/run calls it.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test unit lint e2e fuzz build bench deps validate-deploy cluster-up cluster-down

## test: everything: lint, unit and integration tests, then the end-to-end tests.
## Each runs even when an earlier one fails; the failed ones are named at the end.
test:
	@failed=""; for t in lint unit e2e; do \
	  $(MAKE) --no-print-directory $$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: lint, unit and e2e passed" >&2

## lint: formatting and clippy, warnings as errors; shellcheck on hack/*.sh, ruff on hack/*.py;
## no import cycle between the crate's modules (hack/check-layers.py).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	shellcheck -x -S warning hack/*.sh
	python3 -m ruff check hack/*.py
	python3 hack/check-layers.py

## unit: unit tests and integration tests against the mock on loopback.
unit:
	$(CARGO) test --locked --no-fail-fast

## fuzz: the property tests of the parsers and the client's framing, searching longer than `unit`.
fuzz:
	PROPTEST_CASES=20000 $(CARGO) test --locked --test fuzz
	PROPTEST_CASES=20000 $(CARGO) test --locked --lib wire::tests::framing

## build: the release binary.
build:
	$(CARGO) build --release --locked

## deps: build the Go test peers into the versioned cache (skips what is built).
deps:
	hack/build-deps.sh

## e2e: bring up the local control plane (unless up), run the end-to-end tests, bring it down.
e2e:
	hack/e2e.sh

## bench: the benchmarks (release build, separate processes on loopback); see BENCHMARKS.md.
bench:
	$(CARGO) build --release --locked --bin dst-load-controller
	hack/bench.py

## validate-deploy: the deployment files' offline checks (needs `make cluster-up`; part of e2e).
validate-deploy:
	hack/validate-deploy.sh

cluster-up:
	hack/local-cluster.sh up

cluster-down:
	hack/local-cluster.sh down
