# Flotilla. `make demo` runs the product's scenario; `make test` passes the tests.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO    ?= go
BIN   := $(CURDIR)/bin
TOOLS := $(GO) tool -modfile=$(CURDIR)/hack/tools/go.mod
# Where pkg/testbed finds the control plane that `make testbed` builds.
export FLOTILLA_TESTBED_BIN ?= $(BIN)/testbed
# Where pkg/jaeger finds the Jaeger that `make jaeger` builds.
export FLOTILLA_JAEGER_BIN ?= $(BIN)/jaeger
# Integration tests start API servers; the whole suite stays well under this.
TEST_TIMEOUT ?= 30m

.PHONY: build test test-unit testbed jaeger lint generate verify-generated fuzz bench chaos up down demo demo-airgap link-down link-up clean

## build: every Flotilla binary into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build ./...
	@mains="$$($(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./...)"; \
	if [ -n "$$mains" ]; then GOBIN=$(BIN) $(GO) install $$mains; fi
	@# NATS for `make up`, built from the nats-server/v2 module Flotilla already pins.
	GOBIN=$(BIN) $(GO) install github.com/nats-io/nats-server/v2
	@# The same plugin answers as `kubectl amc`, so scripts written for ACK One run unchanged.
	@ln -sf kubectl-flotilla $(BIN)/kubectl-amc

## testbed: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok into bin/testbed (incremental)
testbed:
	@hack/testbed/build.sh

## jaeger: Jaeger v2 (pinned in hack/jaeger/go.mod) into bin/jaeger, for make up and the trace tests (incremental)
jaeger:
	@hack/jaeger/build.sh

## test: everything: unit, integration against real API servers, NATS and Jaeger, end to end
test: testbed jaeger build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

## test-unit: pure tests, no servers, seconds
test-unit:
	$(GO) test -short -count=1 ./...

## lint: gofmt, go vet, staticcheck
lint:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS) staticcheck ./...

## generate: deepcopy for pkg/api and the CRDs in deploy/crds, from the Go types
generate:
	$(TOOLS) controller-gen object paths=./pkg/api/... crd:crdVersions=v1 output:crd:artifacts:config=deploy/crds

## verify-generated: fail when generated files are not what `make generate` makes
verify-generated: generate
	@stale="$$(git diff --name-only -- deploy/crds pkg/api; git ls-files --others --exclude-standard -- deploy/crds pkg/api)"; \
	if [ -n "$$stale" ]; then echo "generated files are stale: run 'make generate' and commit:"; echo "$$stale"; exit 1; fi

## fuzz: run every fuzz test for FUZZTIME each (make test runs their seed corpora)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

## chaos: the fault suite on real parts: CHAOS_RELEASES releases (50) through two-step workflows with approvals, over a 3-node NATS cluster and two replicas of each hub service, while a driver kills -9 replicas, agents and NATS nodes; CHAOS_RUNS runs in a row (3); prints the counts (log in .flotilla/chaos.log; make test runs 10 releases once)
CHAOS_RELEASES ?= 50
CHAOS_RUNS ?= 3
chaos: testbed jaeger build
	@mkdir -p .flotilla; \
	FLOTILLA_CHAOS_RELEASES=$(CHAOS_RELEASES) $(GO) test -count=$(CHAOS_RUNS) -failfast -v -timeout 150m -run '^TestChaos$$' ./test/e2e/ > .flotilla/chaos.log 2>&1; rc=$$?; \
	grep -E 'chaos: |^ *--- |^(ok|FAIL)|_test.go:[0-9]+: .*(want|refused|not )' .flotilla/chaos.log; exit $$rc

## bench: measured times, printed not asserted (test bed start and stop, ...)
bench: testbed
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout $(TEST_TIMEOUT) ./...

REPLICAS ?= 1

## up: the whole product on this machine, Jaeger included, in the background (state, logs and PIDs in .flotilla/); REPLICAS=N runs N of each hub service (N>1: on a 3-node NATS cluster, R3 streams; NATS_NODES to choose)
up: build testbed jaeger
	@REPLICAS=$(REPLICAS) NATS_NODES=$(NATS_NODES) hack/up.sh

## down: stop everything `make up` started
down:
	@hack/down.sh

## demo: `make up`, then the product page's scenario, step by step, checked
demo: up
	@hack/demo.sh

## link-down: cut the link between the air-gapped site (the second cluster's NATS leaf node) and the hub
link-down:
	@hack/link.sh down

## link-up: restore that link
link-up:
	@hack/link.sh up

## demo-airgap: `make up`, then the product page's scenario with the production site cut off at the approval, checked
demo-airgap: up
	@hack/demo-airgap.sh

## clean: remove built binaries (the Go build cache keeps the Kubernetes build warm)
clean:
	rm -rf $(BIN) .flotilla
