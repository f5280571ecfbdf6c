#!/usr/bin/env bash
# Stop the cascade that up.sh started: SIGTERM to every node, edges first so
# that no upstream waits on a downstream's long poll, then wait for each to
# drain.
#
#   examples/cascade/down.sh [WORK_DIR] [--clean]
#
# --clean also removes the work dir (every node's data).
set -euo pipefail

WORK=${CASCADE_DIR:-./cascade-data}
clean=false
for a in "$@"; do
  case "$a" in
    --clean) clean=true ;;
    -*) echo "usage: down.sh [WORK_DIR] [--clean]" >&2; exit 2 ;;
    *) WORK=$a ;;
  esac
done
[ -d "$WORK" ] || { echo "down.sh: no work dir $WORK" >&2; exit 1; }

# alive PID: the process exists and has not exited. An exited process
# whose parent is gone stays a zombie until init reaps it, which some
# container inits do only now and then.
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

for name in edge-a1 edge-a2 edge-b1 edge-b2 region-a region-b hub; do
  pidfile="$WORK/$name/node.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # Only a live patchmesh: a stale pid file may name a reused pid.
  if alive "$pid" && grep -q patchmesh "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 300); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      echo "  $name (pid $pid) still running after 30s; left alone" >&2
      continue
    fi
    echo "  $name stopped"
  fi
  rm -f "$pidfile"
done

if $clean; then
  rm -rf "$WORK"
  echo "  removed $WORK"
fi
