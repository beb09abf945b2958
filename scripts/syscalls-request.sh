#!/usr/bin/env bash
# System calls and context switches per proxied request, and CPU per request, of the gateway
# alone: the kernel third of a request's cost, counted rather than sampled.
#
#   scripts/syscalls-request.sh BIN [h1|h2] [REQUESTS]
#
# Starts nginx as the upstream and BIN with an HS256 route behind TLS (bench-common.sh), warms
# up with 20000 requests, then sends REQUESTS (default 200000) with one token over 32
# connections (h2load; `-m 10` streams per connection for h2) and prints, per request: the
# gateway's voluntary and involuntary context switches (/proc), its CPU time, and its system
# calls (`perf stat -e raw_syscalls:sys_enter`). Then `strace -c` over 20000 more requests
# names the calls (strace slows the gateway: read its counts, not its times).
# Needs: nginx, h2load (nghttp2-client), openssl, python3, perf (linux-perf), strace.
set -euo pipefail
BIN=$(realpath "$1"); PROTO=${2:-h2}; N=${3:-200000}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
SECRET=syscalls-bench-secret-0123456789abcdef0123456789

. "$(dirname "$0")/bench-common.sh"
UP=$(port)
make_cert
start_nginx "$UP"
TOKEN=$(hs256_token)
GW=$(port)
gateway_config "$GW" "$W/store/revocations.log" "upstream = \"http://127.0.0.1:$UP\""
start_gateway "$BIN"
extra="--h1 -m 1"; [ "$PROTO" = h2 ] && extra="-m 10"
load() { h2load $extra -n "$1" -c 32 -t1 -H "authorization: Bearer $TOKEN" "https://127.0.0.1:$GW/x"; }
load 20000 > /dev/null

switches() { cat /proc/$GP/task/*/status | awk '/^voluntary/{v+=$2} /^nonvoluntary/{n+=$2} END{print v, n}'; }
cpu_ticks() { awk '{print $14+$15}' /proc/$GP/stat; }
read -r v0 n0 < <(switches); c0=$(cpu_ticks)
perf stat -e raw_syscalls:sys_enter -p $GP -o "$W/pstat" -- sleep 1000 2>/dev/null &
PS=$!
sleep 0.3
load "$N" | grep -E '^(finished|status codes)'
pkill -P $PS sleep; wait $PS || true
read -r v1 n1 < <(switches); c1=$(cpu_ticks)
calls=$(awk '/raw_syscalls/{gsub(",","",$1); print $1}' "$W/pstat")
python3 - "$N" "$v0" "$v1" "$n0" "$n1" "$c0" "$c1" "$calls" "$(getconf CLK_TCK)" <<'PY'
import sys
n, v0, v1, n0, n1, c0, c1, calls, clk = map(int, sys.argv[1:])
print(f"per request: {calls / n:.2f} system calls, {(v1 - v0) / n:.3f} voluntary and "
      f"{(n1 - n0) / n:.3f} involuntary context switches, {(c1 - c0) / clk * 1e6 / n:.2f} us CPU")
PY
strace -f -c -p $GP -o "$W/strace.out" 2>/dev/null & SP=$!
sleep 0.5
load 20000 > /dev/null
kill -TERM $SP; wait $SP || true
head -12 "$W/strace.out"
