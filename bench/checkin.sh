#!/usr/bin/env bash
# Client check-ins per second — "newest patch for my kernel on my tier",
# GET /v1/client/patch with a machine token — on one node whose catalog has
# 10,000 patches over 100 tiers and MACHINES registered machines, for the
# embedded store and for PostgreSQL, against nginx serving the same JSON
# answer as a static file, in alternating wrk rounds.
#
#   bench/checkin.sh [sqlite|postgres|both] [DURATION] [CONNECTIONS] [MACHINES] [ROUNDS]
#
# The load rotates over every registered machine's token (a wrk Lua
# script), so that token checks see the whole fleet. After the rounds it
# prints the node's peak RSS (VmHWM) and how many log lines it wrote under
# load. PPROF=1 runs the node under load with --cpuprofile and prints the
# profile's top.
#
# Needs wrk and nginx-light (apt-get install -y wrk nginx-light);
# PostgreSQL comes from scripts/postgres.sh.
set -euo pipefail
which=${1:-both}
dur=${2:-10s}
conns=${3:-32}
machines=${4:-100000}
rounds=${5:-3}
cd "$(dirname "$0")/.."
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "bench: $t is missing (apt-get install -y wrk nginx-light curl)" >&2; exit 1; }; done

work=$(mktemp -d /tmp/patchmesh-checkin.XXXXXX)
chmod 755 "$work" # nginx's workers read the answer file
pid=
ngpid=
dbname=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$ngpid" ] && kill "$ngpid" 2>/dev/null && wait "$ngpid" 2>/dev/null || true
  [ -n "$dbname" ] && psql "$admin_dsn" -qc "DROP DATABASE IF EXISTS $dbname WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PATCHMESH_BIN runs another build of the node (say, the commit before a
# change) under the same script and seed.
pm=${PATCHMESH_BIN:-$work/patchmesh}
[ -n "${PATCHMESH_BIN:-}" ] || go build -o "$work/patchmesh" ./cmd/patchmesh
go build -o "$work/seed" ./bench/seed
password="bench-password-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(printf '%s' "$password" | "$pm" admin hash-password --password-stdin --cost 10)

# Each request carries the next machine's token, starting at a random one
# per thread.
cat > "$work/tokens.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = "Bearer " .. line end
local i = math.random(#tokens)
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", nil, { ["Authorization"] = tokens[i] })
end
LUA

# wrk prints "Requests/sec: 12345.67"; any non-2xx answer voids the run.
rps() { awk '/Non-2xx/ { print "bench: non-2xx answers: " $0 > "/dev/stderr"; exit 1 } /Requests\/sec/ { printf "%.0f", $2 }'; }

run_one() { # $1 = sqlite|postgres
  local kind=$1 port store_yaml ng_port
  port=$(free_port)
  rm -rf "$work/data" "$work/www"
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
log: {level: info}
$store_yaml
YAML
  "$pm" serve --config "$work/patchmesh.yaml" 2>"$work/serve-$kind.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done
  local t0=$SECONDS
  eval "$(printf '%s' "$password" | "$work/seed" -server "http://127.0.0.1:$port" -user bench -patches 10000 -tiers 100 \
    -machines "$machines" -tokens "$work/tokens.txt")"
  echo "$kind: seeded 10,000 patches over 100 tiers and $machines machines in $((SECONDS - t0)) s"
  # Restart: the load then meets a cold node (empty token cache and offer
  # index), and with PPROF=1 a profile of the load alone.
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local prof=()
  [ "${PPROF:-}" = 1 ] && prof=(--cpuprofile "$work/cpu-$kind.prof")
  "$pm" serve --config "$work/patchmesh.yaml" "${prof[@]}" 2>>"$work/serve-$kind.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done
  local lines0
  lines0=$(wc -l < "$work/serve-$kind.log")
  local url="http://127.0.0.1:$port/v1/client/patch?kernel=$KERNEL&arch=$ARCH"
  # The answer must be a real patch before we time it; nginx serves it.
  mkdir -p "$work/www"; chmod 755 "$work/www"
  curl -fs -H "Authorization: Bearer $MACHINE_TOKEN" "$url" > "$work/www/patch.json"
  grep -q '"digest"' "$work/www/patch.json"
  chmod 644 "$work/www/patch.json"
  ng_port=$(free_port)
  cat > "$work/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http { access_log off; sendfile on; tcp_nopush on; default_type application/json;
  server { listen 127.0.0.1:$ng_port; root $work/www; } }
CONF
  nginx -c "$work/nginx.conf" -p "$work" &
  ngpid=$!
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$ng_port/patch.json" && break; sleep 0.1; done

  # First WARMUP (20s) of load from a cold node, uncounted, enough for
  # about one pass over 100,000 tokens: the rounds then meet the node as
  # it runs once its machines have checked in (a fleet checks in every few
  # minutes).
  local warm
  warm=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"${WARMUP:-20s}" -s "$work/tokens.lua" "$url" | rps)
  echo "$kind: warm-up from a cold node, ${WARMUP:-20s}: $warm/s"
  echo "$kind: wrk -t2 -c$conns -d$dur, $rounds alternating rounds, tokens of $machines machines"
  local sum_pm=0 sum_ng=0 ng pmr
  for r in $(seq 1 "$rounds"); do
    # The same Lua script for nginx (which ignores the header), so that wrk
    # spends as much on each side.
    ng=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"$dur" -s "$work/tokens.lua" "http://127.0.0.1:$ng_port/patch.json" | rps)
    pmr=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"$dur" -s "$work/tokens.lua" "$url" | rps)
    echo "$kind round $r: nginx static $ng/s, patchmesh $pmr/s"
    sum_pm=$((sum_pm + pmr)); sum_ng=$((sum_ng + ng))
  done
  python3 -c "print('$kind: ratio patchmesh/nginx %.3f (mean nginx %.0f/s, patchmesh %.0f/s)' % ($sum_pm/$sum_ng, $sum_ng/$rounds, $sum_pm/$rounds))"
  TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"$dur" --latency -s "$work/tokens.lua" "$url" | grep -E 'Requests/sec|50%|99%'
  grep -E 'VmHWM|VmRSS|RssAnon|RssFile' /proc/"$pid"/status | tr -s ' \t' ' ' | sed "s/^/$kind: node /"
  echo "$kind: log lines written under load: $(( $(wc -l < "$work/serve-$kind.log") - lines0 ))"
  kill "$ngpid"; wait "$ngpid" 2>/dev/null || true; ngpid=
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  if [ "${PPROF:-}" = 1 ]; then
    echo "$kind: CPU profile of the node under load (all rounds), top by cumulative time:"
    go tool pprof -top -cum -nodecount=40 "$pm" "$work/cpu-$kind.prof" 2>/dev/null | sed -n 5,48p
  fi
  if [ "$kind" = postgres ]; then psql "$admin_dsn" -qc "DROP DATABASE $dbname WITH (FORCE)" >/dev/null; dbname=; fi
}

case $which in
  sqlite|postgres) run_one "$which" ;;
  both) run_one sqlite; run_one postgres ;;
  *) echo "usage: bench/checkin.sh [sqlite|postgres|both] [DURATION] [CONNECTIONS] [MACHINES] [ROUNDS]" >&2; exit 2 ;;
esac
