#!/usr/bin/env bash
# Makes sure an OpenStack Swift all-in-one (Debian's own Swift packages: proxy
# with tempauth, account, container and object servers, one replica, and a
# memcached for tempauth's tokens) is running on 127.0.0.1, and prints on
# stdout what the tests need, as one URL for PATCHMESH_TEST_SWIFT:
#
#   http://127.0.0.1:PORT/auth/v1.0?user=test:tester&key=testing
#
# Everything else goes to stderr. `scripts/swift.sh stop` stops the servers it
# started. The tests make a container of their own per test and remove it, so
# a later run may reuse servers left running.
#
# Missing packages are installed with apt-get (about three minutes the first
# time). Object metadata lives in user xattrs, so the data dir must accept
# them (ext4 and tmpfs do; ramfs does not): set PATCHMESH_SWIFT_DIR elsewhere
# if the default's filesystem refuses.
set -euo pipefail

log() { echo "swift.sh: $*" >&2; }

state="${PATCHMESH_SWIFT_DIR:-${TMPDIR:-/tmp}/patchmesh-swift}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

auth_ok() {
  curl -fsS -o /dev/null --max-time 3 -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
    "http://127.0.0.1:$1/auth/v1.0" 2>/dev/null
}

stop() {
  [ -d "$state/run" ] || { rm -rf "$state"; return 0; }
  for f in "$state"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$state"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  log "stopped"
  rm -rf "$state"
}

if [ "${1:-start}" = stop ]; then stop; exit 0; fi

url() { echo "http://127.0.0.1:$1/auth/v1.0?user=test:tester&key=testing"; }

if [ -f "$state/run/proxy.port" ] && auth_ok "$(cat "$state/run/proxy.port")"; then
  url "$(cat "$state/run/proxy.port")"; exit 0
fi
stop

if ! command -v swift-proxy-server >/dev/null || ! command -v swift-object-server >/dev/null ||
   ! command -v swift-container-server >/dev/null || ! command -v swift-account-server >/dev/null ||
   ! command -v memcached >/dev/null || ! command -v curl >/dev/null || ! command -v setfattr >/dev/null; then
  log "installing Swift, memcached, attr and curl with apt-get"
  as_root apt-get update -qq >&2 || { log "cannot run apt-get (need root or sudo)"; exit 1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    swift-proxy swift-object swift-container swift-account memcached attr curl >&2
  # Where systemd runs, the packages enable system-wide services; the tests
  # run servers of their own.
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now memcached 'swift-*' >&2 2>/dev/null || true
  fi
fi
# Every Swift server reads /etc/swift/swift.conf (the hash path prefix and
# suffix) whatever swift_dir says. The package ships it as a .dpkg-new where
# it did not install one.
if [ ! -f /etc/swift/swift.conf ]; then
  log "writing /etc/swift/swift.conf"
  suffix=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  as_root sh -c "printf '[swift-hash]\nswift_hash_path_suffix = %s\nswift_hash_path_prefix = \n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' '$suffix' > /etc/swift/swift.conf"
fi

mkdir -p "$state/etc" "$state/srv/d1" "$state/run" "$state/cache"
if ! setfattr -n user.patchmesh -v 1 "$state/srv/d1" 2>/dev/null; then
  log "$state does not keep user xattrs; set PATCHMESH_SWIFT_DIR to a dir on ext4 or tmpfs"
  exit 1
fi

free_ports() { python3 -c 'import socket
socks=[socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'; }
read -r proxy account container object mc < <(free_ports)
me=$(id -un)

# The three rings in one python run: swift-ring-builder costs seconds a call.
# Swift's own interpreter, not whatever python3 comes first on PATH.
py=$(head -n1 "$(command -v swift-proxy-server)" | sed "s/^#! *//")
"$py" - "$state/etc" "$account" "$container" "$object" <<'PY' >&2
import sys
from swift.common.ring import RingBuilder
d = sys.argv[1]
for name, port in (("account", sys.argv[2]), ("container", sys.argv[3]), ("object", sys.argv[4])):
    b = RingBuilder(10, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "replication_ip": "127.0.0.1", "replication_port": int(port),
               "device": "d1", "weight": 100, "meta": ""})
    b.rebalance()
    b.get_ring().save(f"{d}/{name}.ring.gz")
PY

common() {
  cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = $me
swift_dir = $state/etc
devices = $state/srv
mount_check = false
log_level = WARNING
CONF
}
for kind in account container object; do
  port=${!kind}
  { common "$port"; printf '\n[pipeline:main]\npipeline = healthcheck %s-server\n\n[filter:healthcheck]\nuse = egg:swift#healthcheck\n\n[app:%s-server]\nuse = egg:swift#%s\n\n[%s-replicator]\n\n[%s-updater]\n\n[%s-auditor]\n' \
      "$kind" "$kind" "$kind" "$kind" "$kind" "$kind"; } >"$state/etc/$kind-server.conf"
done
{ common "$proxy"; cat <<CONF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$mc

[filter:healthcheck]
use = egg:swift#healthcheck
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
CONF
} >"$state/etc/proxy-server.conf"

log "starting memcached and Swift (proxy on 127.0.0.1:$proxy)"
setsid memcached -u "$me" -l 127.0.0.1 -p "$mc" -U 0 -m 64 >"$state/run/memcached.log" 2>&1 </dev/null &
echo $! >"$state/run/memcached.pid"
for kind in account container object proxy; do
  setsid "swift-$kind-server" "$state/etc/$kind-server.conf" -v >"$state/run/$kind.log" 2>&1 </dev/null &
  echo $! >"$state/run/$kind.pid"
done
echo "$proxy" >"$state/run/proxy.port"

for _ in $(seq 1 240); do
  ok=1
  for p in "$account" "$container" "$object" "$proxy"; do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$p/healthcheck" 2>/dev/null || { ok=0; break; }
  done
  if [ $ok = 1 ] && auth_ok "$proxy"; then url "$proxy"; exit 0; fi
  sleep 0.25
done
log "Swift does not answer; logs in $state/run"
tail -n 5 "$state"/run/*.log >&2 || true
exit 1
