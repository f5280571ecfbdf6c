#!/usr/bin/env bash
# Client check-ins per second — "newest patch for my kernel on my tier",
# GET /v1/client/patch with a machine token — on one node whose catalog has
# 10,000 patches over 100 tiers, for the embedded store and for PostgreSQL.
#
#   bench/checkin.sh [sqlite|postgres|both] [DURATION] [CONNECTIONS]
#
# Needs wrk (apt-get install -y wrk); PostgreSQL comes from scripts/postgres.sh.
set -euo pipefail
which=${1:-both}
dur=${2:-10s}
conns=${3:-32}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }

work=$(mktemp -d /tmp/patchmesh-checkin.XXXXXX)
pid=
dbname=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$dbname" ] && psql "$admin_dsn" -qc "DROP DATABASE IF EXISTS $dbname WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$work/patchmesh" ./cmd/patchmesh
go build -o "$work/seed" ./bench/seed
pm="$work/patchmesh"
password="bench-password-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(printf '%s' "$password" | "$pm" admin hash-password --password-stdin --cost 10)

run_one() { # $1 = sqlite|postgres
  local kind=$1 port store_yaml blobs_yaml
  port=$(free_port)
  rm -rf "$work/data"
  if [ "$kind" = postgres ]; then
    admin_dsn=$(scripts/postgres.sh)
    dbname="patchmesh_bench_$$"
    psql "$admin_dsn" -qc "CREATE DATABASE $dbname" >/dev/null
    store_yaml="store: {driver: postgres, dsn: '${admin_dsn/\/postgres\?/\/$dbname?}', max_conns: 16}"
  else
    store_yaml="store: {driver: sqlite}"
  fi
  cat > "$work/patchmesh.yaml" <<YAML
node: {name: bench, data_dir: $work/data}
server: {listen: 127.0.0.1:$port}
auth: {admins: [{name: bench, password_hash: '$hash'}]}
log: {level: warn}
$store_yaml
YAML
  "$pm" serve --config "$work/patchmesh.yaml" 2>"$work/serve-$kind.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done
  local t0=$SECONDS
  eval "$(printf '%s' "$password" | "$work/seed" -server "http://127.0.0.1:$port" -user bench -patches 10000 -tiers 100)"
  echo "$kind: seeded 10,000 patches over 100 tiers in $((SECONDS - t0)) s"
  # The answer must be a real patch before we time it.
  curl -fs -H "Authorization: Bearer $MACHINE_TOKEN" "http://127.0.0.1:$port/v1/client/patch?kernel=$KERNEL&arch=$ARCH" | grep -q '"digest"'
  echo "$kind: wrk -t2 -c$conns -d$dur"
  wrk -t2 -c"$conns" -d"$dur" --latency -H "Authorization: Bearer $MACHINE_TOKEN" \
    "http://127.0.0.1:$port/v1/client/patch?kernel=$KERNEL&arch=$ARCH" | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx'
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  if [ "$kind" = postgres ]; then psql "$admin_dsn" -qc "DROP DATABASE $dbname WITH (FORCE)" >/dev/null; dbname=; fi
}

case $which in
  sqlite|postgres) run_one "$which" ;;
  both) run_one sqlite; run_one postgres ;;
  *) echo "usage: bench/checkin.sh [sqlite|postgres|both] [DURATION] [CONNECTIONS]" >&2; exit 2 ;;
esac
