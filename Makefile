# hagent — build, test, lab and benchmarks. See README.md.
SHELL := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/bin
PKGS     = $(shell $(GO) list ./... | grep -v 'hagent/hagent/test')

.PHONY: all help build check test fmtcheck vet lint unit integration lab bench soak chaos fuzz clean deb debtest

# The version hagentd --version and agentctl --version print.
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS := -X github.com/hagent/hagent/internal/cli.Version=$(VERSION)

all: build ## the same as make build

# make help: every target with what it does, from the ## after its name.
help: ## list the targets
	@awk -F ':.*## ' '/^[a-z][a-z]*:.*## / { printf "  make %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## hagentd, agentctl and hagent-lab into bin/
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/... ./test/lab/cmd/...

# make test: everything — formatting, vet, unit tests (with the race detector,
# fuzz corpus seeds included), the Debian package's tests, then the netns
# integration tests (root).
test: fmtcheck vet unit debtest integration ## everything: fmt, vet, unit (race), the Debian package's tests, netns integration (root)

# make check: the quick loop, no root needed: formatting, vet and the unit
# tests without the race detector; the tests that need root (network
# namespaces, tmpfs, AF_PACKET) skip themselves when not run as root.
check: fmtcheck vet ## quick loop without root: fmt, vet, unit tests (no -race)
	$(GO) test -count=1 $(PKGS)

fmtcheck: ## fail on files gofmt would change
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet ./...
	$(GO) vet ./...

# make lint: staticcheck (fetched through the module proxy on first use).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet ## staticcheck
	$(GO) run $(STATICCHECK) ./...

unit: ## unit tests with the race detector
	$(GO) test -race -count=1 $(PKGS)

integration: build ## netns integration tests of test/ (root)
	HAGENT_BIN=$(BIN) $(GO) test -p 1 -count=1 -timeout 18m -v ./test/... 2>&1 | tee /tmp/hagent-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|outage|measured' ; \
	rc=$${PIPESTATUS[0]}; [ $$rc = 0 ] || bash test/failed-output.sh /tmp/hagent-integration.log; exit $$rc

# make lab: the 2-node failover demo in network namespaces.
# LAB_ARGS="-direct -probe 1ms": the same crash over a direct hb cable.
LAB_ARGS ?=
lab: build ## the 2-node failover demo in network namespaces (root)
	HAGENT_BIN=$(BIN) bash deploy/lab/lab.sh $(LAB_ARGS)

# make bench: failover benchmark against keepalived, sync benchmark, channel throughput, session pickup
# against conntrackd (bench-results/sessions.md), micro-benchmarks.
# Results go to bench-results/ (results.md, sync.md, outages.svg, …).
bench: build ## benchmarks; results in bench-results/ (root)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300ms ./heartbeat/ ./configsync/ ./l2chan/ ./sessionsync/ | grep -E '^(Benchmark|ok|FAIL)'
	HAGENT_BENCH=1 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -v -run 'TestBench' ./test/bench/
	HAGENT_BENCH=1 HAGENT_SYNC_BENCH_REPS=3 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 20m -v -run 'TestSyncBench' ./test/syncbench/
	HAGENT_BENCH=1 $(GO) test -count=1 -timeout 10m -v -run 'TestChannelBench' ./test/chanbench/
	HAGENT_BENCH=1 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 40m -v -run 'TestSessionBench' ./test/sessbench/ | grep -E '^(=== RUN|--- |ok|FAIL)|measured'; exit $${PIPESTATUS[0]}

# make soak: 10 minutes at 10ms x 3 under CPU load, counting false failovers.
soak: build ## 10 minutes at 10ms x 3 under CPU load (root)
	HAGENT_SOAK=1 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -v -run 'TestSoak' ./test/bench/

# make chaos: the seeded fault campaign over a 3-node lab (test/chaos; SEED,
# DURATION), then 1 000 forced failovers with the outage of each. A failing
# seed replays the same schedule: make chaos SEED=<seed> DURATION=<duration>.
# The report and the record (JSON) are left in /tmp/hagent-chaos-*.
SEED     ?= $(shell date +%s)
DURATION ?= 10m
chaos: build ## the seeded fault campaign, then 1 000 failovers (root)
	HAGENT_CHAOS_SEED=$(SEED) HAGENT_CHAOS_DURATION=$(DURATION) HAGENT_CHAOS_REPORT=/tmp/hagent-chaos-report.txt HAGENT_CHAOS_RECORD=/tmp/hagent-chaos-record.json HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 0 -v -run 'TestChaos$$' ./test/chaos/ 2>&1 | tee /tmp/hagent-chaos.log; c=$${PIPESTATUS[0]}; \
	HAGENT_FAILOVERS=1000 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -v -run 'TestFailovers$$' ./test/chaos/; f=$$?; exit $$((c | f))

# make fuzz: run every fuzz target of every package for FUZZTIME each (the
# targets are listed by go test, so a new one is never forgotten; their seed
# corpora run in every make test).
FUZZTIME ?= 30s
fuzz: ## every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# make deb: the Debian package hagent_<version>_<arch>.deb (README, "Install").
# nfpm runs as a Go tool of deploy/deb/go.mod, which keeps its dependencies
# out of hagent's go.mod. Untagged, the version is 0.0.0+git<commits>.<hash>
# (the commit count keeps upgrades ordered); v1.2.0-3-gabc becomes 1.2.0+3.gabc.
deb_v       := $(patsubst v%,%,$(VERSION))
DEB_VERSION := $(if $(shell echo '$(deb_v)' | grep -E '^[0-9]+\.'),$(shell echo '$(deb_v)' | sed 's/-/+/; s/-/./g'),0.0.0+git$(shell git rev-list --count HEAD 2>/dev/null).$(subst -,.,$(deb_v)))
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEB         := hagent_$(DEB_VERSION)_$(DEB_ARCH).deb
DATE_EPOCH  := $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
deb: ## the Debian package hagent_<version>_<arch>.deb
	rm -rf build/deb hagent_*.deb && mkdir -p build/deb
	CGO_ENABLED=0 $(GO) build -trimpath -buildmode=pie -ldflags '-s -w $(LDFLAGS)' -o build/deb/ ./cmd/hagentd ./cmd/agentctl
	$(GO) run ./deploy/gen -o build/deb -version '$(VERSION)' -debversion '$(DEB_VERSION)' -date $$(date -u -d @$(DATE_EPOCH) +%F)
	gzip -9n build/deb/*.8 build/deb/*.5 build/deb/changelog
	cd deploy/deb && SOURCE_DATE_EPOCH=$(DATE_EPOCH) DEB_VERSION='$(DEB_VERSION)' DEB_ARCH=$(DEB_ARCH) \
		$(GO) tool nfpm package -f nfpm.yaml -p deb -t ../../$(DEB)

# make debtest: lintian, then install into a temporary root (deploy/deb_test.go).
debtest: deb ## lintian and an install into a temporary root
	HAGENT_DEB=$(CURDIR)/$(DEB) HAGENT_VERSION='$(VERSION)' $(GO) test -count=1 -v -run 'TestDeb' ./deploy/

clean: ## remove bin/ and build/
	rm -rf $(BIN) build
