#!/usr/bin/env bash
# Patch upload and download throughput through a node on each blob driver
# — fs, s3 (a real MinIO) and swift (a real Swift all-in-one) — and nginx
# serving the same file, in one run, alternating, so the ratios hold even
# though the machine's speed drifts; then the node's RSS while 50 clients
# download from S3 at once.
#
#   bench/objstore.sh [SIZE_MIB] [ROUNDS] [DURATION]
#
# Needs wrk, nginx-light and curl (apt-get install -y nginx-light wrk curl);
# starts MinIO and Swift with scripts/minio.sh and scripts/swift.sh in a
# directory of its own and stops them at the end.
set -euo pipefail
size_mib=${1:-256}
rounds=${2:-3}
dur=${3:-6s}
cd "$(dirname "$0")/.."

for t in nginx wrk curl; do command -v $t >/dev/null || { echo "bench: $t is missing (apt-get install -y nginx-light wrk curl)" >&2; exit 1; }; done

work=$(mktemp -d /tmp/patchmesh-objbench.XXXXXX)
chmod 755 "$work"
export PATCHMESH_MINIO_DIR="$work/minio" PATCHMESH_SWIFT_DIR="$work/swift"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/minio.sh stop; scripts/swift.sh stop
  rm -rf "$work"
}
trap cleanup EXIT

s3=$(scripts/minio.sh)
swift=$(scripts/swift.sh)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

go build -o "$work/patchmesh" ./cmd/patchmesh
pm="$work/patchmesh"
mkdir -p "$work/www"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/www/patch.bin"
chmod 755 "$work/www"; chmod 644 "$work/www/patch.bin"
digest="sha256:$(sha256sum "$work/www/patch.bin" | cut -d' ' -f1)"

# A bucket and a container of our own.
s3_user=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).username)' "$s3")
s3_secret=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).password)' "$s3")
s3_endpoint=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.scheme+"://"+p.hostname+":"+str(p.port))' "$s3")
PATCHMESH_TEST_S3="$s3" PATCHMESH_TEST_SWIFT="$swift" go run ./bench/objstore-setup patchmesh-bench >&2

password="bench-password-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(printf '%s' "$password" | "$pm" admin hash-password --password-stdin --cost 10)
declare -A base machine pidof
start_node() { # name, blobs yaml
  local name=$1 blobs=$2 port
  port=$(free_port)
  cat > "$work/$name.yaml" <<YAML
node: {name: bench-$name, data_dir: $work/data-$name}
server: {listen: 127.0.0.1:$port}
auth: {admins: [{name: bench, password_hash: '$hash'}]}
log: {level: warn}
blobs: $blobs
YAML
  "$pm" serve --config "$work/$name.yaml" 2>"$work/$name.log" &
  pids+=($!); pidof[$name]=$!
  base[$name]="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fs "${base[$name]}/debug/info" >/dev/null 2>&1 && break; sleep 0.1; done
  local mac auth
  mac=$(curl -fs -u "bench:$password" -X POST "${base[$name]}/v1/admin/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["macaroon"])')
  # Upload throughput: curl's own measure of the request body sent.
  up=$(curl -fs -o /dev/null -w '%{speed_upload}' -H "Authorization: Macaroon $mac" -X POST --data-binary @"$work/www/patch.bin" \
    "${base[$name]}/v1/admin/patches?digest=$digest&kernel=5.15.0-107.117-generic&arch=x86_64&version=107.1")
  echo "upload $name: $(python3 -c "print('%.0f' % ($up/1048576))") MiB/s"
  auth=$(curl -fs -H "Authorization: Macaroon $mac" -H 'Content-Type: application/json' -d '{"tier":"edge","name":"bench"}' \
    "${base[$name]}/v1/admin/auth-tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  machine[$name]=$(curl -fs -H "Authorization: Bearer $auth" -H 'Content-Type: application/json' \
    -d '{"machine_id":"bench0000000000000000000000000001","kernel":"5.15.0-107.117-generic","arch":"x86_64","client_version":"bench"}' \
    "${base[$name]}/v1/client/register" | python3 -c 'import json,sys; print(json.load(sys.stdin)["machine_token"])')
  got=$(curl -fs -H "Authorization: Bearer ${machine[$name]}" "${base[$name]}/v1/blobs/$digest" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$digest" ] || { echo "bench: $name served different bytes" >&2; exit 1; }
}
swift_auth=${swift%%\?*}
start_node fs "{driver: fs}"
start_node s3 "{driver: s3, s3_bucket: patchmesh-bench, s3_endpoint: '$s3_endpoint', s3_secure: false, s3_path_style: true, s3_region: us-east-1, s3_access_key: '$s3_user', s3_secret_key: '$s3_secret'}"
start_node swift "{driver: swift, swift_auth_url: '$swift_auth', swift_user: 'test:tester', swift_key: testing, swift_container: patchmesh-bench}"

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

rate() {
  awk '/Non-2xx/ { print "bench: non-2xx answers: " $0 > "/dev/stderr"; exit 1 }
    /Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
    if (u=="GB") n*=1024; else if (u=="KB") n/=1024; printf "%.0f", n }'
}
echo "file ${size_mib} MiB, wrk -t2 -c4 -d$dur, $rounds alternating rounds"
declare -A sum=([nginx]=0 [fs]=0 [s3]=0 [swift]=0)
for r in $(seq 1 "$rounds"); do
  line="round $r:"
  v=$(wrk -t2 -c4 -d"$dur" "http://127.0.0.1:$ng_port/patch.bin" | rate); sum[nginx]=$((sum[nginx] + v)); line+=" nginx $v"
  for n in fs s3 swift; do
    v=$(wrk -t2 -c4 -d"$dur" -H "Authorization: Bearer ${machine[$n]}" "${base[$n]}/v1/blobs/$digest" | rate)
    sum[$n]=$((sum[$n] + v)); line+=" $n $v"
  done
  echo "$line MB/s"
done
python3 -c "
s={'nginx':${sum[nginx]},'fs':${sum[fs]},'s3':${sum[s3]},'swift':${sum[swift]}}
print('mean MB/s: ' + ', '.join('%s %.0f' % (k, v/$rounds) for k, v in s.items()))
print('ratio s3/fs %.3f, swift/fs %.3f, fs/nginx %.3f' % (s['s3']/s['fs'], s['swift']/s['fs'], s['fs']/s['nginx']))"

# RSS of the s3 node while 50 clients download at once.
rss() { awk '/VmRSS/ {print $2}' /proc/"${pidof[s3]}"/status; }
echo "s3 node RSS idle: $(( $(rss) / 1024 )) MiB"
wrk -t2 -c50 -d10s -H "Authorization: Bearer ${machine[s3]}" "${base[s3]}/v1/blobs/$digest" > "$work/wrk50.txt" &
wpid=$!
peak=0
while kill -0 $wpid 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.2; done
wait $wpid
echo "s3 node RSS peak with 50 concurrent downloads: $((peak / 1024)) MiB ($(rate < "$work/wrk50.txt") MB/s total)"
