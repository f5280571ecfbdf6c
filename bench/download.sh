#!/usr/bin/env bash
# Patch download throughput: patchmesh's filesystem driver against nginx
# serving the same file, same load generator (wrk), same run, alternating
# A and B so that the machine's drift hits both alike.
#
#   bench/download.sh [SIZE_MIB] [ROUNDS] [DURATION] [CONNECTIONS]
#
# Prints each round's transfer rate and requests per second, the ratio
# patchmesh / nginx, and the node's peak RSS (VmHWM). PATCHMESH_BIN runs
# another build of the node; PPROF=1 runs it with --cpuprofile and prints
# the profile's top (PROFILE_OUT=file keeps the profile). It also prints the
# node's CPU time per download over the patchmesh rounds; STRACE=1 counts
# its system calls per download.
# Needs nginx-light and wrk (apt-get install -y nginx-light wrk).
set -euo pipefail
size_mib=${1:-256}
rounds=${2:-3}
dur=${3:-6s}
conns=${4:-4}
cd "$(dirname "$0")/.."

for t in nginx wrk curl; do command -v $t >/dev/null || { echo "bench: $t is missing (apt-get install -y nginx-light wrk curl)" >&2; exit 1; }; done

work=$(mktemp -d /tmp/patchmesh-bench.XXXXXX)
# nginx's workers run as an unprivileged user: they must be able to read it.
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pm=${PATCHMESH_BIN:-$work/patchmesh}
[ -n "${PATCHMESH_BIN:-}" ] || go build -o "$work/patchmesh" ./cmd/patchmesh

# The patch file: random bytes, so nothing compresses or dedups.
mkdir -p "$work/www"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/www/patch.bin"
chmod 755 "$work/www"; chmod 644 "$work/www/patch.bin"
digest="sha256:$(sha256sum "$work/www/patch.bin" | cut -d' ' -f1)"

# patchmesh node with a known admin password.
pm_port=$(free_port)
password="bench-password-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(printf '%s' "$password" | "$pm" admin hash-password --password-stdin --cost 10)
cat > "$work/patchmesh.yaml" <<YAML
node: {name: bench, data_dir: $work/data}
server: {listen: 127.0.0.1:$pm_port}
auth: {admins: [{name: bench, password_hash: '$hash'}]}
log: {level: info}
YAML
prof=()
[ "${PPROF:-}" = 1 ] && prof=(--cpuprofile "$work/cpu.prof")
"$pm" serve --config "$work/patchmesh.yaml" "${prof[@]}" 2>"$work/serve.log" &
pmpid=$!
pids+=($pmpid)
base="http://127.0.0.1:$pm_port"
for _ in $(seq 1 100); do curl -fs "$base/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done

mac=$(curl -fs -u "bench:$password" -X POST "$base/v1/admin/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["macaroon"])')
curl -fs -H "Authorization: Macaroon $mac" -X POST -T "$work/www/patch.bin" \
  "$base/v1/admin/patches?digest=$digest&kernel=5.15.0-107.117-generic&arch=x86_64&version=107.1" >/dev/null
auth=$(curl -fs -H "Authorization: Macaroon $mac" -H 'Content-Type: application/json' -d '{"tier":"edge","name":"bench"}' \
  "$base/v1/admin/auth-tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
machine=$(curl -fs -H "Authorization: Bearer $auth" -H 'Content-Type: application/json' \
  -d '{"machine_id":"bench0000000000000000000000000001","kernel":"5.15.0-107.117-generic","arch":"x86_64","client_version":"bench"}' \
  "$base/v1/client/register" | python3 -c 'import json,sys; print(json.load(sys.stdin)["machine_token"])')

# nginx serving the same file.
ng_port=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http { access_log off; sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:$ng_port; root $work/www; } }
CONF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$ng_port/patch.bin" && break; sleep 0.1; done

# Both must serve the same bytes before we time them.
got=$(curl -fs -H "Authorization: Bearer $machine" "$base/v1/blobs/$digest" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$digest" ] || { echo "bench: patchmesh served different bytes" >&2; exit 1; }
got=$(curl -fs "http://127.0.0.1:$ng_port/patch.bin" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$digest" ] || { echo "bench: nginx served different bytes" >&2; exit 1; }

rate() { # wrk prints "Transfer/sec: 1.21GB"; normalise to MB/s. Any non-2xx answer voids the run.
  awk '/Non-2xx/ { print "bench: non-2xx answers: " $0 > "/dev/stderr"; bad=1 }
    /Requests\/sec/ { r=$2 }
    /Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
    if (u=="GB") n*=1024; else if (u=="KB") n/=1024; m=n }
    END { if (bad) print "failed"; else printf "%.0f %.0f\n", m, r }'
}
echo "file ${size_mib} MiB, wrk -t2 -c$conns -d$dur, $rounds alternating rounds"
# The node's own CPU time (user + system, clock ticks) over the patchmesh
# rounds, per download served: less noisy than the rates on a shared
# machine, and sendfile's copying is in it.
node_ticks() { awk '{ print $14 + $15 }' /proc/"$pmpid"/stat; }
cpu_ticks=0; served=0
sum_pm=0; sum_ng=0
for r in $(seq 1 "$rounds"); do
  read -r ng ngr < <(wrk -t2 -c"$conns" -d"$dur" "http://127.0.0.1:$ng_port/patch.bin" | rate)
  c0=$(node_ticks)
  out=$(wrk -t2 -c"$conns" -d"$dur" -H "Authorization: Bearer $machine" "$base/v1/blobs/$digest")
  cpu_ticks=$((cpu_ticks + $(node_ticks) - c0))
  served=$((served + $(awk '/requests in/ { print $1 }' <<<"$out")))
  read -r pmr pmrr < <(rate <<<"$out")
  for v in "$ng" "$pmr"; do [[ $v =~ ^[0-9]+$ ]] || { echo "bench: a round failed (non-2xx answers?)" >&2; exit 1; }; done
  echo "round $r: nginx ${ng} MB/s (${ngr}/s), patchmesh ${pmr} MB/s (${pmrr}/s)"
  sum_pm=$((sum_pm + pmr)); sum_ng=$((sum_ng + ng))
done
python3 -c "print('ratio patchmesh/nginx: %.3f (mean nginx %.0f MB/s, mean patchmesh %.0f MB/s)' % ($sum_pm/$sum_ng, $sum_ng/$rounds, $sum_pm/$rounds))"
python3 -c "print('node CPU per download: %.1f µs (%d downloads in the patchmesh rounds)' % ($cpu_ticks * 1e6 / $(getconf CLK_TCK) / max($served, 1), $served))"
grep -E 'VmHWM|VmRSS|RssAnon|RssFile' /proc/"$pmpid"/status | tr -s ' \t' ' ' | sed 's/^/node /'
echo "log lines written: $(wc -l < "$work/serve.log")"
# STRACE=1 counts the node's system calls over a few seconds of
# downloads on one keep-alive connection, per download (strace slows the
# node down: the rates of this part mean nothing, the counts do).
if [ "${STRACE:-}" = 1 ]; then
  strace -f -c -o "$work/strace.txt" -p "$pmpid" 2>/dev/null &
  spid=$!
  sleep 1
  out=$(wrk -t1 -c1 -d3s -H "Authorization: Bearer $machine" "$base/v1/blobs/$digest")
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  echo "system calls per download (strace -c, one connection, $n downloads):"
  awk -v n="$n" '$NF != "total" && $NF != "syscall" && $4 ~ /^[0-9]+$/ { printf "  %-18s %6.2f\n", $NF, $4 / n; t += $4 }
    END { printf "  %-18s %6.2f\n", "all", t / n }' "$work/strace.txt"
fi
if [ "${PPROF:-}" = 1 ]; then
  kill "$pmpid"; wait "$pmpid" 2>/dev/null || true
  echo "CPU profile of the node (whole run), top by cumulative time:"
  go tool pprof -top -cum -nodecount=40 "$pm" "$work/cpu.prof" 2>/dev/null | sed -n 5,48p
  # PROFILE_OUT keeps the profile for a closer look (go tool pprof).
  if [ -n "${PROFILE_OUT:-}" ]; then cp "$work/cpu.prof" "$PROFILE_OUT"; fi
fi
