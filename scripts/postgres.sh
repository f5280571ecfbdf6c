#!/usr/bin/env bash
# Makes sure a PostgreSQL server that the tests can use is running, and prints
# its maintenance-database DSN on stdout (everything else goes to stderr).
#
# In order, it uses:
#   1. $PATCHMESH_TEST_POSTGRES, if that server answers;
#   2. the local server at 127.0.0.1:5432 with trust auth for user postgres
#      (as on the project's machines), starting an installed-but-stopped
#      Debian cluster first;
#   3. a private throwaway cluster (initdb, trust auth, 127.0.0.1:55432) under
#      ${PATCHMESH_PG_DIR:-/tmp/patchmesh-pg}, installing PostgreSQL with
#      apt-get first when it is missing. This is what a newcomer's machine gets:
#      a stock install's 5432 wants a password, so we never touch it.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

default_dsn="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
private_port="${PATCHMESH_PG_PORT:-55432}"
private_dsn="postgres://postgres@127.0.0.1:${private_port}/postgres?sslmode=disable"
pgdir="${PATCHMESH_PG_DIR:-/tmp/patchmesh-pg}"

answers() { command -v psql >/dev/null 2>&1 && psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if [ -n "${PATCHMESH_TEST_POSTGRES:-}" ] && answers "$PATCHMESH_TEST_POSTGRES"; then
  echo "$PATCHMESH_TEST_POSTGRES"; exit 0
fi
if answers "$default_dsn"; then echo "$default_dsn"; exit 0; fi

# An installed Debian cluster that is merely stopped.
if command -v pg_lsclusters >/dev/null 2>&1; then
  while read -r ver name port status _; do
    [ "$port" = 5432 ] && [ "$status" = down ] || continue
    log "starting cluster $ver/$name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
  done < <(pg_lsclusters -h 2>/dev/null)
  for _ in $(seq 1 20); do answers "$default_dsn" && { echo "$default_dsn"; exit 0; }; sleep 0.5; done
fi

if answers "$private_dsn"; then echo "$private_dsn"; exit 0; fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || ! command -v psql >/dev/null 2>&1; then
  log "PostgreSQL is not installed; installing it with apt-get"
  as_root apt-get update -qq >&2 || { log "cannot run apt-get (need root or sudo)"; exit 1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# The server refuses to run as root, so a root caller runs it as postgres.
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ ! -f "$pgdir/data/PG_VERSION" ]; then
  log "creating a private cluster in $pgdir"
  mkdir -p "$pgdir"
  [ "$(id -u)" = 0 ] && chown postgres: "$pgdir"
  run_pg "$bindir/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 >&2
fi
log "starting the private cluster on 127.0.0.1:$private_port"
run_pg "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$private_port -c unix_socket_directories=$pgdir -c max_connections=300 -c fsync=on" start >&2
answers "$private_dsn" || { log "the private cluster does not answer; see $pgdir/server.log"; exit 1; }
echo "$private_dsn"
