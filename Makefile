# hagent — build, test, lab and benchmarks. See README.md.
SHELL := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/bin
PKGS     = $(shell $(GO) list ./... | grep -v '/test')

.PHONY: all build test fmtcheck vet lint unit integration lab bench soak fuzz clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/... ./test/lab/cmd/...

# make test: everything — formatting, vet, unit tests (with the race detector,
# fuzz corpus seeds included), then the netns integration tests (root).
test: fmtcheck vet unit integration

fmtcheck:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# make lint: staticcheck (fetched through the module proxy on first use).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 $(PKGS)

integration: build
	HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 18m -v ./test/... 2>&1 | tee /tmp/hagent-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|outage|measured' ; exit $${PIPESTATUS[0]}

# make lab: the 2-node failover demo in network namespaces.
lab: build
	HAGENT_BIN=$(BIN) bash deploy/lab/lab.sh

# make bench: failover benchmark against keepalived, sync benchmark, channel throughput, micro-benchmarks.
# Results go to bench-results/ (results.md, sync.md, outages.svg, …).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300ms ./heartbeat/ ./configsync/ ./l2chan/ | grep -E '^(Benchmark|ok|FAIL)'
	HAGENT_BENCH=1 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -v -run 'TestBench' ./test/bench/
	HAGENT_BENCH=1 HAGENT_SYNC_BENCH_REPS=2 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 20m -v -run 'TestSyncBench' ./test/syncbench/
	HAGENT_BENCH=1 $(GO) test -count=1 -timeout 10m -v -run 'TestChannelBench' ./test/chanbench/

# make soak: 10 minutes at 10ms x 3 under CPU load, counting false failovers.
soak: build
	HAGENT_SOAK=1 HAGENT_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -v -run 'TestSoak' ./test/bench/

# make fuzz: run each fuzz target for a while (the seeds run in every make test).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzUnmarshal -fuzztime $(FUZZTIME) ./heartbeat/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./config/

clean:
	rm -rf $(BIN)
