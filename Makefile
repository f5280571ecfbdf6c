# patchmesh — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/patchmesh

.PHONY: build run test vet bench clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/patchmesh

# Runs one node on the embedded default (SQLite + files under the default
# data dir). Pass flags with ARGS, e.g. make run ARGS="--listen 127.0.0.1:9090".
run: build
	./$(BIN) serve $(ARGS)

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every test, PostgreSQL included: scripts/postgres.sh finds, starts or
# installs a server and prints its DSN. -p 2 matches the machine's cores.
# The in-process packages run under the race detector; the ones whose tests
# drive real patchmesh processes (e2e, cmd, meshtest, bench, packaging,
# docs) gain nothing from it in the test binary and run without.
PROCESS_PKGS := /e2e|/cmd/|/internal/meshtest|/bench/|/packaging|/docs
test: vet
	@dsn=$$(scripts/postgres.sh) && \
	race=$$($(GO) list ./... | grep -Ev '$(PROCESS_PKGS)') && \
	procs=$$($(GO) list ./... | grep -E '$(PROCESS_PKGS)') && \
	PATCHMESH_TEST_POSTGRES="$$dsn" $(GO) test -race -count=1 -p 2 -timeout 20m $$race && \
	PATCHMESH_TEST_POSTGRES="$$dsn" $(GO) test -count=1 -p 2 -timeout 20m $$procs

# Benchmarks; figures and the commands that give them are in bench/RESULTS.md.
bench:
	@dsn=$$(scripts/postgres.sh) && \
	PATCHMESH_TEST_POSTGRES="$$dsn" $(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
