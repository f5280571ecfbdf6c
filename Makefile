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

# Every test, against real servers: scripts/postgres.sh finds, starts or
# installs PostgreSQL and prints its DSN; scripts/minio.sh (S3) and
# scripts/swift.sh (OpenStack Swift) start object stores on loopback (MinIO
# is built once, about six minutes the first time) and print where they
# are. A missing server fails the tests, never skips them; the object
# stores run from a directory of this run's own, so that concurrent runs do
# not share them, and are stopped at the end, pass or fail. -p 2 matches
# the machine's cores.
# The in-process packages run under the race detector; the ones whose tests
# drive real patchmesh processes (e2e, cmd, meshtest, bench, packaging,
# docs) gain nothing from it in the test binary and run without.
# Last, scripts/fuzz.sh runs every fuzz target for 2s (under a minute).
PROCESS_PKGS := /e2e|/cmd/|/internal/meshtest|/bench/|/packaging|/docs
OBJSTORES = export PATCHMESH_MINIO_DIR="$$objdir/minio" PATCHMESH_SWIFT_DIR="$$objdir/swift"
test: vet
	@objdir=$$(mktemp -d "$${TMPDIR:-/tmp}/patchmesh-objstores.XXXXXX") && $(OBJSTORES) && \
	dsn=$$(scripts/postgres.sh) && \
	s3=$$(scripts/minio.sh) && \
	swift=$$(scripts/swift.sh) && \
	race=$$($(GO) list ./... | grep -Ev '$(PROCESS_PKGS)') && \
	procs=$$($(GO) list ./... | grep -E '$(PROCESS_PKGS)') && \
	export PATCHMESH_TEST_POSTGRES="$$dsn" PATCHMESH_TEST_S3="$$s3" PATCHMESH_TEST_SWIFT="$$swift" && \
	$(GO) test -race -count=1 -p 2 -timeout 20m $$race && \
	$(GO) test -count=1 -p 2 -timeout 20m $$procs && \
	GO=$(GO) scripts/fuzz.sh; \
	status=$$?; scripts/minio.sh stop; scripts/swift.sh stop; rmdir "$$objdir"; exit $$status

# Benchmarks; figures and the commands that give them are in bench/RESULTS.md.
bench:
	@objdir=$$(mktemp -d "$${TMPDIR:-/tmp}/patchmesh-objstores.XXXXXX") && $(OBJSTORES) && \
	dsn=$$(scripts/postgres.sh) && \
	s3=$$(scripts/minio.sh) && \
	swift=$$(scripts/swift.sh) && \
	PATCHMESH_TEST_POSTGRES="$$dsn" PATCHMESH_TEST_S3="$$s3" PATCHMESH_TEST_SWIFT="$$swift" \
	$(GO) test -run '^$$' -bench . -benchmem ./...; \
	status=$$?; scripts/minio.sh stop; scripts/swift.sh stop; rmdir "$$objdir"; exit $$status

clean:
	rm -rf bin
