# route-agent. `make help` lists the targets.
GO ?= go
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)
HELM ?= helm

# What the image and its binaries report: the nearest tag, the commits since
# it and the commit ("-dirty" with uncommitted changes).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git describe --always --dirty --abbrev=40 --exclude='*' 2>/dev/null)
IMAGE ?= ghcr.io/routeagent/route-agent
# podman where it is installed (it needs no daemon), else docker; flags for
# every call of it, e.g. CONTAINER_FLAGS=--storage-driver=vfs.
CONTAINER_TOOL ?= $(notdir $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null))
CONTAINER_FLAGS ?=
CONTAINER := $(strip $(CONTAINER_TOOL) $(CONTAINER_FLAGS))
# Set to a path to also write the image there as an OCI archive.
IMAGE_ARCHIVE ?=
CHART := deploy/helm/route-agent
MANIFESTS_DIR ?= deploy

.PHONY: help build deps generate check-generated vet unit test e2e lab bench \
	image-binaries image image-archive check-image chart manifests check-manifests check-chart version

help:
	@echo "make lab      bring up the lab (kube-apiserver, FRR ToRs, three nodes) and show it; Ctrl-C tears it down (root)"
	@echo "make test     everything CI runs: vet, unit tests, generated-code and manifest checks, chart and image checks, lab e2e (root)"
	@echo "make unit     unit tests only (no root)"
	@echo "make build    bin/route-agent and bin/routectl"
	@echo "make bench    the performance table: route-agent against FRR/BIRD and serial netlink in the same run (root)"
	@echo "make image    the container image $(IMAGE):$(VERSION) with $(or $(CONTAINER_TOOL),podman or docker); IMAGE_ARCHIVE=file also writes it as an OCI archive"
	@echo "make image-archive  the image as bin/route-agent-$(VERSION).oci.tar, for air-gapped nodes"
	@echo "make chart    bin/route-agent-<chart version>.tgz, the Helm chart with the image version $(VERSION) as its default"
	@echo "make manifests  deploy/rbac.yaml, daemonset.yaml and bgp-config.yaml, rendered from the chart"

build:
	$(GO) build -ldflags "-X routeagent.io/route-agent/version.Version=$$(git describe --tags --always --dirty 2>/dev/null || echo dev) \
		-X routeagent.io/route-agent/version.Commit=$$(git rev-parse HEAD 2>/dev/null)" -o bin/ ./cmd/route-agent ./cmd/routectl

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

test: deps vet unit check-generated check-manifests check-chart check-image e2e

# Built, then exec'd rather than `go run`: go run exits 1 when the lab is
# interrupted, so a clean Ctrl-C teardown would end in make's "Error 1".
lab: deps
	$(GO) build -o bin/lab ./e2e/cmd/lab && exec bin/lab

# One table: each figure, its peer's figure from the same run, the ratio and
# the goal (docs/benchmarks.md).
bench: deps
	$(GO) build -o bin/bench ./e2e/cmd/bench && exec bin/bench

version:
	@echo $(VERSION)

# Static binaries for the image, which has no libc.
image-binaries:
	CGO_ENABLED=0 $(GO) build -trimpath \
		-ldflags "-s -w -X routeagent.io/route-agent/version.Version=$(VERSION) -X routeagent.io/route-agent/version.Commit=$(COMMIT)" \
		-o bin/image/ ./cmd/route-agent ./cmd/routectl

image: image-binaries
	@test -n "$(CONTAINER_TOOL)" || { echo "make image: neither podman nor docker is installed" >&2; exit 1; }
	$(CONTAINER) build --build-arg VERSION=$(VERSION) --tag $(IMAGE):$(VERSION) --file Dockerfile .
	@if [ -n "$(IMAGE_ARCHIVE)" ]; then \
		set -x; rm -f $(IMAGE_ARCHIVE); \
		if [ "$(CONTAINER_TOOL)" = docker ]; then $(CONTAINER) save --output $(IMAGE_ARCHIVE) $(IMAGE):$(VERSION); \
		else $(CONTAINER) save --format oci-archive --output $(IMAGE_ARCHIVE) $(IMAGE):$(VERSION); fi; \
	fi

image-archive:
	@mkdir -p bin
	$(MAKE) image IMAGE_ARCHIVE=bin/route-agent-$(VERSION).oci.tar

# The image as a user gets it: the entrypoint and version label, the OCI
# archive naming it, and both binaries copied out of it report this
# version and their help.
check-image: IMAGE_ARCHIVE = bin/route-agent-$(VERSION).oci.tar
check-image: image
	@set -eu; img=$(IMAGE):$(VERSION); \
	entry=$$($(CONTAINER) image inspect --format '{{json .Config.Entrypoint}}' $$img); \
	test "$$entry" = '["/usr/bin/route-agent"]' || { echo "check-image: entrypoint $$entry, want [\"/usr/bin/route-agent\"]" >&2; exit 1; }; \
	label=$$($(CONTAINER) image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' $$img); \
	test "$$label" = "$(VERSION)" || { echo "check-image: label org.opencontainers.image.version $$label, want $(VERSION)" >&2; exit 1; }; \
	tar -xOf $(IMAGE_ARCHIVE) oci-layout | grep -q imageLayoutVersion || { echo "check-image: $(IMAGE_ARCHIVE) has no oci-layout" >&2; exit 1; }; \
	tar -xOf $(IMAGE_ARCHIVE) index.json | grep -qF "\"$$img\"" || { echo "check-image: $(IMAGE_ARCHIVE)'s index.json does not name $$img" >&2; exit 1; }; \
	dir=$$(mktemp -d); ctr=$$($(CONTAINER) create $$img); \
	trap '$(CONTAINER) rm $$ctr >/dev/null; rm -rf $$dir' EXIT; \
	$(CONTAINER) cp $$ctr:/usr/bin/route-agent $$dir/; \
	$(CONTAINER) cp $$ctr:/usr/bin/routectl $$dir/; \
	for b in route-agent routectl; do \
		out=$$($$dir/$$b --version); echo "$$b --version: $$out"; \
		case "$$out" in *" $(VERSION) "*|*" $(VERSION)") ;; *) echo "check-image: $$b --version does not say $(VERSION)" >&2; exit 1;; esac; \
		$$dir/$$b --help >/dev/null || { echo "check-image: $$b --help failed" >&2; exit 1; }; \
	done; \
	echo "check-image: $$img: entrypoint $$entry, version label $$label, OCI archive $(IMAGE_ARCHIVE), both binaries run"

chart:
	@mkdir -p bin
	$(HELM) package $(CHART) --app-version $(VERSION) --destination bin/

# The plain manifests are the chart rendered with its defaults (and seed
# 004's bgp-config for the example), so there is one source of truth.
define generated
# Generated from deploy/helm/route-agent by `make manifests`$(1): edit the chart, not this file.
endef
manifests:
	@mkdir -p $(MANIFESTS_DIR)
	{ echo '$(call generated,)'; $(HELM) template route-agent $(CHART) --namespace kube-system \
		--show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml; } > $(MANIFESTS_DIR)/rbac.yaml
	{ echo '$(call generated,)'; $(HELM) template route-agent $(CHART) --namespace kube-system \
		--show-only templates/daemonset.yaml; } > $(MANIFESTS_DIR)/daemonset.yaml
	{ echo '$(call generated, with ci/seed-004-values.yaml)'; $(HELM) template route-agent $(CHART) --namespace kube-system \
		--values $(CHART)/ci/seed-004-values.yaml --show-only templates/bgp-config.yaml; } > $(MANIFESTS_DIR)/bgp-config.yaml

check-manifests: deps
	@set -eu; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(MAKE) -s manifests MANIFESTS_DIR=$$tmp; \
	for f in rbac.yaml daemonset.yaml bgp-config.yaml; do \
		diff -u deploy/$$f $$tmp/$$f || { echo "deploy/$$f does not match the chart: run make manifests" >&2; exit 1; }; \
	done

# helm lint with the defaults and with each values file of ci/, then the
# golden test: each value lands on the flag or ConfigMap key it names.
check-chart: deps
	$(HELM) lint --strict $(CHART)
	for f in $(CHART)/ci/*-values.yaml; do $(HELM) lint --strict $(CHART) --values $$f || exit 1; done
	HELM=$$(command -v $(HELM)) $(GO) test -count=1 ./deploy/helm/
