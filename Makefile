# Ferry — a TURN/STUN relay for WebRTC video consultations.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Arguments for `make run`, e.g. make run ARGS="--config ferry.yaml"
ARGS        ?=
# How long `make fuzz` runs each Fuzz target
FUZZTIME    ?= 15s
# Arguments for `make bench`, e.g. make bench BENCH_ARGS="-quick" (see go run ./bench -h)
BENCH_ARGS  ?=
# Packages that must also build on macOS and Windows (make lint vets them for both);
# bench/ and e2e/ stay Linux-only.
PORTABLE    ?= ./cmd/... ./relay/... ./config/... ./auth/... ./signaling/... ./metrics/... ./alloclog/... ./cluster/... ./internal/... ./check/...

.DEFAULT_GOAL := help

.PHONY: help build run test test-deps test-short test-browser test-firewall test-b08-quick screenshots fuzz lint bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/ferry (the first build compiles every dependency: minutes; each package is listed)
	@echo "go build -o bin/ferry ./cmd/ferry: the first build compiles every dependency (a few minutes on 2 CPUs), listing each package as it goes; later builds take seconds"
	$(GO) build -v -o bin/ferry ./cmd/ferry

run: build ## Build and run ferry serve (embedded default config unless ARGS="--config file")
	exec bin/ferry serve $(ARGS)

test: test-deps ## Run every test with the race detector (installs coturn's clients if missing)
	$(GO) test -race -count=1 -timeout 15m ./...

test-deps: ## Install the real clients the tests drive (Debian packages), if missing
	@./.ci/test-deps

test-browser: test-deps ## Run the consultation page's browser tests only (headless Chromium)
	$(GO) test -race -count=1 -timeout 15m -run 'TestPage|TestB0[1-9]|TestB1[0-9]' -v ./e2e/

test-firewall: test-deps ## Run the firewall test only (root: network namespaces, nftables, pion and Chromium calls)
	$(GO) test -race -count=1 -timeout 10m -run 'TestFirewallOnly443' -v ./e2e/

test-b08-quick: test-deps ## B08 with a 20 MB file instead of 500 MB (E2E_B08_BYTES)
	E2E_B08_BYTES=20000000 $(GO) test -race -count=1 -timeout 15m -run 'TestB08' -v ./e2e/

screenshots: test-deps ## Save the page's screenshots (waiting room, call, screen share) to bin/screenshots
	E2E_SCREENSHOTS=$(CURDIR)/bin/screenshots $(GO) test -count=1 -run 'TestPageCall$$' ./e2e/
	@ls bin/screenshots

test-short: ## Run the unit tests only (no end-to-end tests, no external programs)
	$(GO) test -short -count=1 ./...

fuzz: ## Run every Fuzz target for FUZZTIME (15s) each, from its committed corpus (testdata/fuzz)
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for target in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$dir $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$dir; \
	  done; \
	done

lint: ## gofmt, go vet (also for macOS and Windows: PORTABLE) and staticcheck
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	for os in darwin windows; do GOOS=$$os $(GO) vet $(PORTABLE) || exit 1; done
	$(GO) run $(STATICCHECK) ./...

bench: ## Benchmarks: Go micro-benchmarks, then Ferry vs coturn vs a raw forwarder (bench/, ~12 min)
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./bench $(BENCH_ARGS)

clean: ## Remove build output
	rm -rf bin
