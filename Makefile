# Hodei. `make help` lists the targets.
GO      ?= go
TOOL    := $(GO) tool -modfile=tools/go.mod
BIN     := bin/hodei

.PHONY: help build run test test-chaos test-heavy k8s-binaries bench generate dashboards cover verify lint deps images clean screenshots

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install what the platform and tests need from Debian when missing (PostgreSQL, Prometheus, Chromium)
	@scripts/deps.sh

build: ## build bin/hodei (static)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/hodei

run: deps build ## start hodei dev (embedded PostgreSQL) and run a first job
	@scripts/run-demo.sh

test: deps build lint verify images ## vet, verify generated code, and run every test with -race on a shared embedded PostgreSQL
	@scripts/test.sh

test-chaos: deps build ## the chaos suite: kill -9 servers, agents and replicas, crash PostgreSQL and cut the network under load (a few minutes)
	HODEI_TEST_BINARY=$(CURDIR)/$(BIN) $(GO) test -tags chaos -count=1 -timeout 15m -run '^TestChaos' -v ./cmd/hodei

screenshots: deps build ## regenerate the dashboard screenshots in docs/img from the browser tests
	HODEI_SCREENSHOTS=$(CURDIR)/docs/img scripts/test.sh -run '^TestDashboardInChromium$$' ./cmd/hodei

k8s-binaries: ## build kube-apiserver and etcd from source for the Kubernetes tests, cached in ~/.cache/hodei/k8s/VERSION (about 10 minutes the first time)
	@scripts/k8s-binaries.sh >/dev/null

test-heavy: deps build images k8s-binaries ## the heavy tests: the Kubernetes provider against a real kube-apiserver and etcd, then the chaos suite
	@scripts/test.sh ./internal/provider/kubernetes/...
	@scripts/test.sh -run '^TestKubernetes' ./cmd/hodei
	$(MAKE) test-chaos

images: ## build the local Docker images: the workers', hodei:dev (server and worker pods on Kubernetes) and the tests' (skipped without an engine)
	@if docker version >/dev/null 2>&1; then scripts/build-images.sh; else echo "images: no Docker engine reachable; Docker tests will be skipped"; fi

bench: deps build images ## run the benchmarks; each prints a final `result name=...` line
	$(BIN) bench startup
	$(BIN) bench events
	$(BIN) bench dispatch
	$(BIN) bench throughput --jobs 10000 --rounds 3
	$(BIN) bench throughput --modes noop --jobs 30000 --rounds 3 --presubmit
	$(BIN) bench logs
	$(BIN) bench provision
	$(BIN) bench throughput --modes noop --jobs 1000000 --presubmit
	$(BIN) bench throughput --modes noop --jobs 30000 --presubmit --hold-snapshot
	$(BIN) bench dispatch --backlog 1000000
	$(BIN) bench dispatch --backlog 1000000 --retries
	$(BIN) bench throughput --modes noop --jobs 30000 --presubmit --history 10000000
	$(BIN) bench dispatch --history 10000000
	$(BIN) bench throughput --modes noop --jobs 30000 --presubmit --history 1000000 --history-expired

.PHONY: bench-river
bench-river: deps ## River's no-op throughput here (tools/riverbench, own module), to compare with bench throughput; ARGS="--jobs 30000 --rounds 3" (work only) or ARGS="--duration 10s" (continuous)
	cd tools/riverbench && $(GO) run . $(ARGS)

generate: ## regenerate protobuf/Connect and sqlc code
	$(TOOL) buf generate
	$(TOOL) sqlc generate

dashboards: ## regenerate the Grafana dashboards in deploy/grafana from tools/dashboards (Grafana Foundation SDK)
	cd tools/dashboards && $(GO) run . -out $(CURDIR)/deploy/grafana

cover: deps build images k8s-binaries ## run the tests with -coverpkg=./... on one embedded PostgreSQL; writes coverage.html, prints the total and per package, fails under the floor in .ci/coverage-floor
	@scripts/cover.sh

verify: ## fail when generated code or dashboards drift from their sources, protos break lint/compat, or alert rules fail promtool
	@scripts/verify.sh

lint: ## go vet and gofmt
	$(GO) vet ./...
	$(GO) vet -tags chaos ./cmd/hodei
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^api/gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean: ## remove build output
	rm -rf bin
