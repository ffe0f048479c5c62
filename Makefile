# route-agent. `make help` lists the targets.
GO ?= go
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: help build deps generate check-generated vet unit test e2e lab bench

help:
	@echo "make lab      bring up the lab (kube-apiserver, FRR ToRs, three nodes) and show it; Ctrl-C tears it down (root)"
	@echo "make test     everything CI runs: vet, unit tests, generated-code check, lab e2e (root)"
	@echo "make unit     unit tests only (no root)"
	@echo "make build    bin/route-agent and bin/routectl"
	@echo "make bench    the performance table: route-agent against FRR/BIRD and serial netlink in the same run (root)"

build:
	$(GO) build -o bin/ ./cmd/route-agent ./cmd/routectl

deps:
	./scripts/install-deps

generate:
	$(GO) generate ./api/... ./bpf/...

# Generated code is committed; this fails when it no longer matches its source.
check-generated: deps
	$(GO) generate ./api/... ./bpf/...
	git diff --exit-code -- api/ bpf/

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

unit:
	$(GO) test -race -count=1 ./...

e2e: deps
	$(GO) test -tags e2e -count=1 -v -timeout 45m ./e2e/...

test: deps vet unit check-generated e2e

# Built, then exec'd rather than `go run`: go run exits 1 when the lab is
# interrupted, so a clean Ctrl-C teardown would end in make's "Error 1".
lab: deps
	$(GO) build -o bin/lab ./e2e/cmd/lab && exec bin/lab

# One table: each figure, its peer's figure from the same run, the ratio and
# the goal (docs/benchmarks.md).
bench: deps
	$(GO) build -o bin/bench ./e2e/cmd/bench && exec bin/bench
