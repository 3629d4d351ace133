# miitel-crm-sync — every build and test entry point. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The Dockerfile builds with exactly these flags (a test in charts/test compares them).
BUILD_FLAGS := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
BUILD_PKG := ./cmd/miitel-crm-sync

.PHONY: all deps build test test-go test-chart test-crash test-failover vet fmt-check bench fuzz soak run clean load-deps load-receiver load-worker

all: build

## build: the static binary, built the same way as in the Dockerfile
build:
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/miitel-crm-sync $(BUILD_PKG)

## test: everything CI runs: format, vet, unit + integration tests (race, shuffled), chart tests, build
test: deps fmt-check vet test-go test-chart build

## deps: what the tests need on the machine: Go (given) and redis-server, which tests start
## privately on free ports so they can stop and break it without touching a shared Redis.
deps:
	@command -v redis-server >/dev/null || { echo "installing redis-server"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; }
	@redis-server --version

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test-go:
	$(GO) test -race -shuffle=on -count=1 -timeout 10m ./...

test-chart:
	@if [ -f charts/test/go.mod ]; then cd charts/test && $(GO) test -count=1 -shuffle=on -timeout 10m ./...; fi

## test-crash: kill -9 of a worker in the middle of 1,000 batched Salesforce syncs, waiting for
## asynq's own recovery (about a minute a run); prints the time to empty after the restart
## (docs/BENCHMARKS.md, "Worker: recovery"). ROUNDS=3
test-crash: deps
	MCS_TEST_CRASH=1 $(GO) test -count=$(or $(ROUNDS),3) -timeout 30m -run '^TestE2ECrash1000' -v $(BUILD_PKG) | grep -E '^(---|=== RUN|PASS|FAIL|ok)|at the kill|RECOVERY'; exit $${PIPESTATUS[0]}

## test-failover: the Redis failover soak (minutes, not in make test): steady webhook traffic
## through serve on a private Sentinel set, SENTINEL FAILOVER and a SIGKILLed master, each
## with ack_replicas 0 and auto, interleaved; docs/BENCHMARKS.md "Redis failover".
## FAILOVER_ROUNDS=3 FAILOVER_DURATION=45s FAILOVER_RATE=50 FAILOVER_AT=20s
test-failover: deps
	MCS_E2E_FAILOVER=1 $(GO) test -count=1 -timeout 60m -run '^TestE2ERedisFailover$$' -v ./cmd/miitel-crm-sync 2>&1 | \
	  grep -v '^ *{"time"' | grep -v '^redis: ' ; exit $${PIPESTATUS[0]}

## bench: the benchmarks (receiver accept path, mapping render, ...)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10x $$pkg || exit 1; \
	  done; done

## load-receiver: the receiver's load run against its floor and a naive receiver, interleaved,
## on a private redis-server (AOF everysec); docs/BENCHMARKS.md. ROUNDS=3 DUR=10s SCENARIOS=...
load-receiver: deps load-deps
	ROUNDS=$(or $(ROUNDS),3) DUR=$(or $(DUR),10s) bash receiver/internal/loadrun/run.sh

## load-worker: 10,000 calls (1,000 customer numbers) through the HubSpot connector into the
## fake enforcing HubSpot's limits; requests made and drain time; docs/BENCHMARKS.md.
## CALLS=10000 NUMBERS=1000 ROUNDS=3 UNIQUE= (a unique property name: the upsert path)
load-worker: deps
	$(GO) test -count=1 -timeout 30m -run '^TestLoadWorker$$' -v ./worker/crm/hubspot/ -load \
	  -load.calls $(or $(CALLS),10000) -load.numbers $(or $(NUMBERS),1000) -load.rounds $(or $(ROUNDS),3) -load.unique "$(UNIQUE)"

## load-deps: wrk (closed-loop HTTP load) from Debian's packages, as deps installs redis-server
load-deps:
	@command -v wrk >/dev/null || { echo "installing wrk"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null; }

## run: the embedded default (in-process Redis, dry-run CRM) on :8080
run:
	$(GO) run $(BUILD_PKG) serve

clean:
	rm -rf bin
