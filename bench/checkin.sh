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
# profile's top; MEMPROF=1 runs it with --memprofile and prints the top of
# the heap live as it stopped. DIRECT=0 registers the machines through the
# API instead of straight into the store (bench/seed -direct). VARIANTS
# times several settings of the node in one run (see run_one).
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

# start_node starts the node (with --cpuprofile/--memprofile as asked,
# into files named after $1) and waits until it answers; the node's extra
# environment comes from the rest of the arguments (KEY=VALUE).
start_node() {
  local label=$1; shift
  local prof=()
  [ "${PPROF:-}" = 1 ] && prof+=(--cpuprofile "$work/cpu-$label.prof")
  [ "${MEMPROF:-}" = 1 ] && prof+=(--memprofile "$work/mem-$label.prof")
  env "$@" "$pm" serve --config "$work/patchmesh.yaml" "${prof[@]}" 2>>"$work/serve-$label.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_node() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
node_rss() { grep -E 'VmHWM|VmRSS|RssAnon|RssFile' /proc/"$pid"/status | tr -s ' \t' ' '; }

run_one() { # $1 = sqlite|postgres
  local kind=$1 store_yaml ng_port direct
  port=$(free_port)
  rm -rf "$work/data" "$work/www"
  if [ "$kind" = postgres ]; then
    admin_dsn=$(scripts/postgres.sh)
    dbname="${DBNAME:-patchmesh_bench_$$}"
    psql "$admin_dsn" -qc "CREATE DATABASE $dbname" >/dev/null
    local dsn="${admin_dsn/\/postgres\?/\/$dbname?}"
    store_yaml="store: {driver: postgres, dsn: '$dsn', max_conns: 16}"
    direct="postgres:$dsn"
  else
    store_yaml="store: {driver: sqlite}"
    direct="sqlite:$work/data/patchmesh.db"
  fi
  # DIRECT=0 registers every machine through the API, one request each.
  [ "${DIRECT:-1}" = 1 ] || direct=
  cat > "$work/patchmesh.yaml" <<YAML
node: {name: bench, data_dir: $work/data}
server: {listen: 127.0.0.1:$port}
auth: {admins: [{name: bench, password_hash: '$hash'}]}
log: {level: info}
$store_yaml
YAML
  "$pm" serve --config "$work/patchmesh.yaml" 2>"$work/serve-seed.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done
  local t0=$SECONDS
  # Through a file, so that a failing seed stops the script.
  printf '%s' "$password" | "$work/seed" -server "http://127.0.0.1:$port" -user bench -patches 10000 -tiers 100 \
    -machines "$machines" -tokens "$work/tokens.txt" ${direct:+-direct "$direct"} > "$work/seed.env"
  . "$work/seed.env"
  echo "$kind: seeded 10,000 patches over 100 tiers and $machines machines in $((SECONDS - t0)) s${direct:+ (machines after the first straight into the store)}"
  stop_node
  local url="http://127.0.0.1:$port/v1/client/patch?kernel=$KERNEL&arch=$ARCH"

  # VARIANTS, if set, is a space-separated list of KEY=VALUE settings of
  # the node's environment (say PATCHMESH_STORE_SQLITE_MMAP_SIZE=0): each
  # round then restarts the node once per variant and times each after its
  # own warm-up, against an nginx round of its own. Unset: one variant,
  # the defaults, and one node for every round.
  local variants=(${VARIANTS:-default})
  local each_round=0
  [ -n "${VARIANTS:-}" ] && each_round=1

  # The answer must be a real patch before we time it; nginx serves it.
  start_node "$kind"
  local lines0 v label
  lines0=$(wc -l < "$work/serve-$kind.log")
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

  # Restarted cold (empty token cache and offer index), then WARMUP (20s)
  # of uncounted load, enough for about one pass over 100,000 tokens: the
  # rounds then meet the node as it runs once its machines have checked in
  # (a fleet checks in every few minutes).
  warm_up() {
    local w
    w=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"${WARMUP:-20s}" -s "$work/tokens.lua" "$url" | rps)
    echo "$kind $1: warm-up from a cold node, ${WARMUP:-20s}: $w/s"
  }
  if [ "$each_round" = 0 ]; then warm_up default; else stop_node; fi
  echo "$kind: wrk -t2 -c$conns -d$dur, $rounds alternating rounds, tokens of $machines machines; variants: ${variants[*]}; load: $(uptime)"
  declare -A sum_pm=() sum_ng=() hwm=() anon=() file=()
  local ng pmr
  for r in $(seq 1 "$rounds"); do
    for v in "${variants[@]}"; do
      label="$kind-${v##*=}"
      [ "$each_round" = 1 ] && { start_node "$label" ${VARIANTS:+"$v"}; warm_up "$v"; }
      # The same Lua script for nginx (which ignores the header), so that wrk
      # spends as much on each side.
      ng=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"$dur" -s "$work/tokens.lua" "http://127.0.0.1:$ng_port/patch.json" | rps)
      pmr=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"$dur" -s "$work/tokens.lua" "$url" | rps)
      echo "$kind round $r $v: nginx static $ng/s, patchmesh $pmr/s; load $(uptime | sed 's/.*average: //')"
      sum_pm[$v]=$(( ${sum_pm[$v]:-0} + pmr )); sum_ng[$v]=$(( ${sum_ng[$v]:-0} + ng ))
      if [ "$each_round" = 1 ]; then
        echo "$kind round $r $v: node $(node_rss | tr '\n' ' ')"
        local st; st=$(node_rss)
        hwm[$v]="${hwm[$v]:-} $(awk '/VmHWM/ {print $2}' <<<"$st")"
        anon[$v]="${anon[$v]:-} $(awk '/RssAnon/ {print $2}' <<<"$st")"
        file[$v]="${file[$v]:-} $(awk '/RssFile/ {print $2}' <<<"$st")"
        stop_node
      fi
    done
  done
  for v in "${variants[@]}"; do
    python3 -c "print('$kind $v: ratio patchmesh/nginx %.3f (mean nginx %.0f/s, patchmesh %.0f/s)' % (${sum_pm[$v]}/${sum_ng[$v]}, ${sum_ng[$v]}/$rounds, ${sum_pm[$v]}/$rounds))"
    [ "$each_round" = 1 ] && echo "$kind $v: node kB per round, VmHWM:${hwm[$v]}, RssAnon:${anon[$v]}, RssFile:${file[$v]}"
  done
  if [ "$each_round" = 0 ]; then
    TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"$dur" --latency -s "$work/tokens.lua" "$url" | grep -E 'Requests/sec|50%|99%'
    node_rss | sed "s/^/$kind: node /"
    echo "$kind: log lines written under load: $(( $(wc -l < "$work/serve-$kind.log") - lines0 ))"
    stop_node
  fi
  kill "$ngpid"; wait "$ngpid" 2>/dev/null || true; ngpid=
  for v in "${variants[@]}"; do
    label="$kind"; [ "$each_round" = 1 ] && label="$kind-${v##*=}"
    if [ "${PPROF:-}" = 1 ]; then
      echo "$label: CPU profile of the node under load (the last run), top by cumulative time:"
      go tool pprof -top -cum -nodecount=40 "$pm" "$work/cpu-$label.prof" 2>/dev/null | sed -n 5,48p
    fi
    if [ "${MEMPROF:-}" = 1 ]; then
      echo "$label: heap live as the node stopped (the last run), top by in-use bytes:"
      go tool pprof -top -sample_index=inuse_space -nodecount=25 "$pm" "$work/mem-$label.prof" 2>/dev/null | sed -n 4,32p
    fi
  done
  if [ "$kind" = postgres ]; then psql "$admin_dsn" -qc "DROP DATABASE $dbname WITH (FORCE)" >/dev/null; dbname=; fi
}

case $which in
  sqlite|postgres) run_one "$which" ;;
  both) run_one sqlite; run_one postgres ;;
  *) echo "usage: bench/checkin.sh [sqlite|postgres|both] [DURATION] [CONNECTIONS] [MACHINES] [ROUNDS]" >&2; exit 2 ;;
esac
