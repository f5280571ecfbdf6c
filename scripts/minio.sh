#!/usr/bin/env bash
# Makes sure a MinIO server (a real S3-compatible object store) that the
# tests can use is running on 127.0.0.1, and prints on stdout what they need,
# as one URL for PATCHMESH_TEST_S3:
#
#   http://ACCESS_KEY:SECRET_KEY@127.0.0.1:PORT
#
# Everything else goes to stderr. `scripts/minio.sh stop` stops the server it
# started. The tests make a bucket of their own per test and remove it, so a
# later run may reuse a server left running.
#
# The binary is built once with `go install github.com/minio/minio@latest`
# into ${XDG_CACHE_HOME:-$HOME/.cache}/patchmesh/bin (about six minutes the
# first time; the Go build cache keeps it); the server then starts in seconds
# on a random free port with a throwaway data dir under $state.
set -euo pipefail

log() { echo "minio.sh: $*" >&2; }

bindir="${XDG_CACHE_HOME:-$HOME/.cache}/patchmesh/bin"
state="${PATCHMESH_MINIO_DIR:-${TMPDIR:-/tmp}/patchmesh-minio}"
user=patchmesh-test
password=patchmesh-test-secret

answers() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/minio/health/live" 2>/dev/null; }

stop() {
  [ -f "$state/pid" ] || return 0
  pid=$(cat "$state/pid")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping MinIO (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}

if [ "${1:-start}" = stop ]; then stop; exit 0; fi

# Reuse a server this script started earlier, if it still answers.
if [ -f "$state/pid" ] && [ -f "$state/port" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null && answers "$(cat "$state/port")"; then
  echo "http://$user:$password@127.0.0.1:$(cat "$state/port")"; exit 0
fi
stop

command -v curl >/dev/null || { log "curl is missing"; exit 1; }
if [ ! -x "$bindir/minio" ]; then
  log "building MinIO into $bindir (once; about six minutes)"
  mkdir -p "$bindir"
  (cd / && GOBIN="$bindir" GOFLAGS= go install github.com/minio/minio@latest) >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$state/data"
port=$(free_port)
console=$(free_port)
log "starting MinIO on 127.0.0.1:$port (data in $state/data)"
MINIO_ROOT_USER=$user MINIO_ROOT_PASSWORD=$password MINIO_BROWSER=off MINIO_UPDATE=off \
  setsid "$bindir/minio" server --quiet --address "127.0.0.1:$port" --console-address "127.0.0.1:$console" \
  "$state/data" >"$state/server.log" 2>&1 </dev/null &
echo $! >"$state/pid"
echo "$port" >"$state/port"
for _ in $(seq 1 120); do
  if answers "$port"; then echo "http://$user:$password@127.0.0.1:$port"; exit 0; fi
  kill -0 "$(cat "$state/pid")" 2>/dev/null || break
  sleep 0.25
done
log "MinIO does not answer; see $state/server.log"
tail -n 20 "$state/server.log" >&2 || true
exit 1
