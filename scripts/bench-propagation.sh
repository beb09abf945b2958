#!/usr/bin/env bash
# Revocation propagation in cluster mode: how long after instance A answers 201 to a revoke
# does instance C refuse the token? Three release gateways and one redis-server, all on this
# machine, on free loopback ports; COUNT revokes (1000 by default), each with a fresh token,
# each polled on C until it answers 401; prints p50/p90/p99/max (examples/bench_propagation.rs
# does the timing).
#
#   scripts/bench-propagation.sh
#   COUNT=5000 scripts/bench-propagation.sh
#   WORKERS=1 scripts/bench-propagation.sh     # [listen] workers per gateway (default: per core)
#
# Needs redis-server, curl, python3 (apt-get install -y redis-server curl python3). Builds
# target/release/portcullis and the example (a no-op when they are up to date).
#
# The gateways' route points at a closed local port, so a token C still accepts gets 502
# (authenticated, upstream down) and a revoked one 401: the polls measure the gateway, not
# an upstream.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-1000}
WORKERS=${WORKERS:-0}
BIN=target/release/portcullis
DRIVER=target/release/examples/bench_propagation
ADMIN_TOKEN="bench-propagation-admin-token-0123456789"
SECRET="bench-propagation-secret-0123456789abcdef"

for tool in redis-server curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y redis-server curl python3" >&2; exit 1; }
done
cargo build --release --bin portcullis --example bench_propagation

work=$(mktemp -d "$PWD/target/bench-propagation.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [[ $(python3 -c "import socket; s = socket.create_connection(('127.0.0.1', $redis_port)); s.sendall(b'PING\r\n'); print(s.recv(7).decode().strip())" 2>/dev/null) == "+PONG" ]] && break
  sleep 0.05
done

declare -A proxy admin
for gw in a b c; do
  proxy[$gw]=$(free_port)
  admin[$gw]=$(free_port)
  cat >"$work/$gw.toml" <<TOML
[listen]
addr = "127.0.0.1:${proxy[$gw]}"
workers = $WORKERS

[[jwt.keys]]
kid = "k"
alg = "HS256"
secret = "$SECRET"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "jwt"

[admin]
addr = "127.0.0.1:${admin[$gw]}"
token = "$ADMIN_TOKEN"

[revocation]
store = "redis://127.0.0.1:$redis_port/0"

[log]
level = "warn"
TOML
  "$BIN" run --config "$work/$gw.toml" >"$work/$gw.log" 2>&1 &
  pids+=($!)
done
for gw in a b c; do
  for _ in $(seq 100); do
    curl -fsS -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:${admin[$gw]}/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:${admin[$gw]}/readyz" >/dev/null \
    || { echo "gateway $gw never became ready:" >&2; cat "$work/$gw.log" >&2; exit 1; }
done

echo "# redis-server $(redis-server --version | awk '{print $3}') and three gateways (workers=$WORKERS, 0 = one per core) on $(nproc) cpus, shared with the driver"
"$DRIVER" --admin-a "127.0.0.1:${admin[a]}" --proxy-c "127.0.0.1:${proxy[c]}" \
  --admin-token "$ADMIN_TOKEN" --secret "$SECRET" --count "$COUNT"
count=$(curl -fsS -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:${admin[b]}/revocations/count")
echo "instance B holds $count"
