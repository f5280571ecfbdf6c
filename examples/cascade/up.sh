#!/usr/bin/env bash
# Start a seven-node patchmesh cascade on this machine: a hub, two regional
# relays and four edges, each its own process with its own embedded store,
# then upload a sample patch at the hub and time its arrival at every edge.
#
#   examples/cascade/up.sh [WORK_DIR]      (default ./cascade-data)
#   examples/cascade/down.sh [WORK_DIR]    stops them
#
# Needs bin/patchmesh (make build), or PATCHMESH_BIN; curl and jq. Run again
# on the same work dir: the nodes come back on their data and a new sample
# patch goes out.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BIN=${PATCHMESH_BIN:-$root/bin/patchmesh}
WORK=${1:-${CASCADE_DIR:-./cascade-data}}
PORT=${CASCADE_PORT:-8400}
# The demo admin of every node. Loopback only; never reuse it anywhere else.
PASSWORD=${CASCADE_PASSWORD:-cascade-demo-password}
TIER=edge

# name address role, upstreams first: every upstream is up before its
# downstreams ask it for a sync token. upstream_of says who feeds whom.
NODES=(
  "hub      127.0.0.1 hub"
  "region-a 127.0.0.2 relay"
  "region-b 127.0.0.3 relay"
  "edge-a1  127.0.0.4 edge"
  "edge-a2  127.0.0.5 edge"
  "edge-b1  127.0.0.6 edge"
  "edge-b2  127.0.0.7 edge"
)

die() { echo "up.sh: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "no patchmesh binary at $BIN: run 'make build' in $root, or set PATCHMESH_BIN"
for tool in curl jq; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
# A node reads PATCHMESH_* settings from the environment; the demo's come
# from its config files only.
for v in $(env | sed -n 's/^\(PATCHMESH_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

declare -A ADDR ROLE
NAMES=()
for s in "${NODES[@]}"; do
  read -r name addr role <<<"$s"
  NAMES+=("$name") ADDR[$name]=$addr ROLE[$name]=$role
done
url_of() { echo "http://${ADDR[$1]}:$PORT"; }
upstream_of() {
  case "$1" in
    region-*) echo hub ;;
    edge-a*) echo region-a ;;
    edge-b*) echo region-b ;;
  esac
}

# admin NODE ARGS...: the admin tool, logged in to NODE with its own
# config dir, so that seven logins do not overwrite one another.
admin() {
  local name=$1; shift
  PATCHMESH_CONFIG_DIR="$WORK/$name/admin" "$BIN" admin --server "$(url_of "$name")" "$@"
}

login() {
  printf '%s\n' "$PASSWORD" | admin "$1" login --user admin --password-stdin >/dev/null
}

# alive PID: the process exists and has not exited (an orphan that exited
# stays a zombie until init reaps it).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

running() {
  local pidfile="$WORK/$1/node.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  alive "$pid" && grep -q patchmesh "/proc/$pid/cmdline" 2>/dev/null
}

start() {
  local name=$1 dir="$WORK/$1" url i
  url=$(url_of "$name")
  if running "$name"; then
    echo "  $name already running"
    return
  fi
  nohup "$BIN" serve --config "$dir/config.yaml" >>"$dir/node.log" 2>&1 &
  echo $! >"$dir/node.pid"
  for i in $(seq 100); do
    curl -fsS "$url/debug/info" >/dev/null 2>&1 && { printf '  %-9s %s  (log %s)\n' "$name" "$url" "$dir/node.log"; return; }
    alive "$(cat "$dir/node.pid")" || die "$name exited; see $dir/node.log"
    sleep 0.1
  done
  die "$name did not answer on $url within 10s; see $dir/node.log"
}

# write_config NAME ROLE: the node's config; a downstream's sync token is in
# a file of its own, as a config file is often readable by more people.
write_config() {
  local name=$1 role=$2 dir="$WORK/$1" addr=${ADDR[$1]}
  mkdir -p "$dir"
  {
    cat <<YAML
# Written by examples/cascade/up.sh. Every option: examples/patchmesh.yaml.
node:
  name: $name
  role: $role
  data_dir: $dir/data
server:
  listen: $addr:$PORT
  # Stop quickly: a demo has no long downloads to let finish.
  shutdown_timeout: 5s
auth:
  admins:
    - name: admin
      password_hash: '$HASH'
YAML
    if [ "$role" != hub ]; then
      cat <<YAML
sync:
  # The hub's public key: only records it signed are accepted.
  trust: ['$HUB_KEY']
  # Pause between retries while an upstream is down: 0.5s doubling to 10s.
  retry_min: 500ms
  retry_max: 10s
  links:
    - tier: $TIER
      upstreams:
        - url: $(url_of "$(upstream_of "$name")")
          token_file: $dir/sync.token
          # Loopback only. Anywhere else use https: over http the sync
          # token and the blobs cross the network in clear.
          allow_http: true
YAML
    fi
  } >"$dir/config.yaml"
  chmod 600 "$dir/config.yaml"
}

if [ ! -f "$WORK/hub/config.yaml" ]; then
  echo "Setting up a cascade in $WORK"
  HASH=$(printf '%s\n' "$PASSWORD" | "$BIN" admin hash-password --password-stdin)
  write_config hub hub
  start hub
  login hub
  # The hub made its signing key on first start. In production take the
  # public key from the hub's console or `patchmesh admin hub-key` and
  # compare it out of band; here the hub is on loopback.
  HUB_KEY=$(curl -fsS "$(url_of hub)/v1/sync/hub-key" | jq -r .key)
  echo "  hub key   $HUB_KEY"
  for name in "${NAMES[@]:1}"; do
    up=$(upstream_of "$name")
    write_config "$name" "${ROLE[$name]}"
    # The upstream issues the token for the one tier the link pulls.
    admin "$up" sync-tokens add "$TIER" "$name" --output json | jq -r .token >"$WORK/$name/sync.token"
    chmod 600 "$WORK/$name/sync.token"
    start "$name"
    login "$name"
  done
  # Machines use only nodes the hub admitted: each node made its identity
  # key on first start, and the hub signs an admission of it (on every
  # tier) that reaches every node by sync. In production read the key on
  # the node's own machine (patchmesh node-key) and compare it out of band.
  for name in "${NAMES[@]}"; do
    key=$("$BIN" node-key --key "$WORK/$name/data/node.key" --output json | jq -r .key)
    admin hub nodes admit "$name" --key "$key" --url "$(url_of "$name")" >/dev/null
    printf '  admitted  %-9s %s\n' "$name" "$key"
  done
else
  echo "Starting the cascade in $WORK"
  for name in "${NAMES[@]}"; do
    start "$name"
  done
fi

# A sample patch: 1 MiB of random bytes stands in for a live-patch module.
sample="$WORK/sample-$(date +%Y%m%d%H%M%S).ko"
head -c 1048576 /dev/urandom >"$sample"
version="$(date +%Y%m%d).$(date +%H%M%S)"
digest="sha256:$(sha256sum "$sample" | cut -d' ' -f1)"
# now_ms is the wall clock in milliseconds, without a fork (bash 5).
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
# await NAME: poll one edge's patch list until the patch is there; one
# poller per edge, all at once, so that each time is that edge's own.
# curl rather than the admin tool: a lighter poll measures closer.
await() {
  local name=$1 ms url deadline=$((SECONDS + 60))
  url=$(url_of "$name")
  until curl -fsS -H "Authorization: Macaroon ${MAC[$name]}" "$url/v1/admin/patches?tier=$TIER" 2>/dev/null |
    grep -q "\"$digest\""; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "  $name: not there after 60s; see $WORK/$name/node.log and its 'admin sync status'" >&2
      return 1
    fi
    sleep 0.02
  done
  ms=$(( $(now_ms) - t0 ))
  printf '  %-8s %s  arrived after %d.%03ds (via %s)\n' "$name" "$url" \
    $((ms / 1000)) $((ms % 1000)) "$(upstream_of "$name")"
}
# Log in to every edge before the clock starts: bcrypt takes its time.
declare -A MAC
for name in "${NAMES[@]}"; do
  [ "${ROLE[$name]}" = edge ] || continue
  MAC[$name]=$(curl -fsS -u "admin:$PASSWORD" -X POST "$(url_of "$name")/v1/admin/login" | jq -r .macaroon)
done
# The pollers start first, so that each edge's time is its own, counted
# from the moment the upload starts.
echo "Uploading $(basename "$sample") at the hub as version $version"
echo "  $digest"
echo "Waiting for it at every edge (tier $TIER):"
t0=$(now_ms)
pids=()
for name in "${NAMES[@]}"; do
  [ "${ROLE[$name]}" = edge ] || continue
  await "$name" &
  pids+=($!)
done
got=$(admin hub patches upload "$sample" --kernel 5.15.0-107.117-generic --arch x86_64 \
  --version "$version" --output json | jq -r .digest) || { kill "${pids[@]}" 2>/dev/null; die "upload failed"; }
[ "$got" = "$digest" ] || { kill "${pids[@]}" 2>/dev/null; die "the hub stored $got, want $digest"; }
failed=0
for p in "${pids[@]}"; do
  wait "$p" || failed=1
done
[ $failed = 0 ] || die "the patch did not reach every edge"

cat <<EOF2

Every edge has it. Look around, e.g.:
  PATCHMESH_CONFIG_DIR=$WORK/edge-a1/admin $BIN admin --server $(url_of edge-a1) sync status
  PATCHMESH_CONFIG_DIR=$WORK/hub/admin $BIN admin --server $(url_of hub) patches list
Admin password on every node: $PASSWORD
Stop everything: $here/down.sh $WORK
EOF2
