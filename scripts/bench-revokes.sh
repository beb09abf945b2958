#!/usr/bin/env bash
# Revokes per second through the admin API, each one fsynced before its 201: one client,
# then 8 and 32 concurrent clients (group commit shares one write + fsync among them).
#
# Starts its own release gateway on free loopback ports with a fresh store under target/
# (a real disk, unlike a tmpfs /tmp), drives it with wrk POSTing unique jtis, prints
# revokes/s, checks the store holds every acknowledged revocation, and cleans up.
#
#   scripts/bench-revokes.sh            # 5 s per run
#   RUN_SECONDS=10 scripts/bench-revokes.sh
#
# Needs wrk, curl, python3 (apt-get install -y wrk curl python3). Builds
# target/release/portcullis if it is missing (BUILD=1 forces a rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_SECONDS=${RUN_SECONDS:-5}
CLIENTS=${CLIENTS:-"1 8 32"}
BIN=target/release/portcullis
ADMIN_TOKEN="bench-revokes-admin-token-0123456789"

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk curl python3" >&2; exit 1; }
done
if [[ ! -x $BIN || ${BUILD:-0} == 1 ]]; then
  cargo build --release --bin portcullis
fi

work=$(mktemp -d "$PWD/target/bench-revokes.XXXXXX")
gateway_pid=
cleanup() {
  if [[ -n $gateway_pid ]]; then
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
proxy_port=$(free_port)
admin_port=$(free_port)
cat >"$work/config.toml" <<TOML
[listen]
addr = "127.0.0.1:$proxy_port"

[[jwt.keys]]
kid = "k"
alg = "HS256"
secret = "bench-revokes-secret-0123456789abcdef"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "jwt"

[admin]
addr = "127.0.0.1:$admin_port"
token = "$ADMIN_TOKEN"

[revocation]
store = "$work/revocations.log"

[log]
level = "warn"
TOML

"$BIN" run --config "$work/config.toml" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
admin="http://127.0.0.1:$admin_port"
for _ in $(seq 100); do
  curl -fsS "$admin/healthz" >/dev/null 2>&1 && break
  kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$admin/healthz" >/dev/null

# Every request revokes a new jti: "<run>-<wrk thread>-<counter>".
cat >"$work/revoke.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local counter = 0
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("ADMIN_TOKEN"),
  ["Content-Type"] = "application/json",
}
request = function()
  counter = counter + 1
  local body = '{"jti": "' .. os.getenv("RUN") .. "-" .. id .. "-" .. counter .. '"}'
  return wrk.format("POST", "/revocations", headers, body)
end
LUA

echo "# revokes through the admin API, each fsynced before its 201; ${RUN_SECONDS}s per run,"
echo "# store $work/revocations.log, $(nproc) cpus shared with wrk"
total=0
for c in $CLIENTS; do
  threads=$(( c < 2 ? 1 : 2 ))
  out=$(ADMIN_TOKEN=$ADMIN_TOKEN RUN="c$c" wrk -t"$threads" -c"$c" -d"${RUN_SECONDS}s" --latency \
        -s "$work/revoke.lua" "$admin/revocations")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  printf "%2d client(s): %8.0f revokes/s  (p50 %s, p99 %s, %s requests, non-2xx %s)\n" \
    "$c" "$rps" "$p50" "$p99" "$reqs" "${non2xx:-0}"
  total=$(( total + reqs ))
done

# Every acknowledged revoke is in the dictionary (a few more may have completed after wrk
# stopped counting) and on disk: 8-byte header + 37 bytes per record.
count=$(curl -fsS -H "Authorization: Bearer $ADMIN_TOKEN" "$admin/revocations/count")
size=$(stat -c %s "$work/revocations.log")
echo "store: $count, $(( (size - 8) / 37 )) records on disk, wrk counted $total"
