#!/usr/bin/env bash
# One target against two: what a route with `upstreams = [..]` (round robin) costs in throughput
# and gateway CPU per request, next to the same route with `upstream = ..` (issue 16: within 5%).
# peers.py cannot express a second target, hence this harness.
#
#   scripts/bench-targets.sh BIN [h1|h2] [ROUNDS] [SECONDS]
#
# One nginx listens on two ports (the two targets; the one-target route uses the first). The
# gateway terminates TLS with an HS256 route, one token (all cache hits, as h2load can send only
# one). Load: h2load, 32 connections (`--h1` for h1; `-m 10` streams each for h2). Rounds
# alternate one/two targets; each prints requests/s and the gateway's CPU per request (utime +
# stime from /proc over the run), and the end prints the medians and their ratios.
# Needs: nginx, h2load (nghttp2-client), openssl, python3.
set -euo pipefail
BIN=$(realpath "$1"); PROTO=${2:-h1}; ROUNDS=${3:-3}; SECS=${4:-8}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
SECRET=bench-targets-secret-0123456789abcdef0123456789ab

. "$(dirname "$0")/bench-common.sh"
UP1=$(port); UP2=$(port)
make_cert
start_nginx "$UP1" "$UP2"
TOKEN=$(hs256_token)


run() { # one|two -> prints "rps cpu_us"
  local gw targets; gw=$(port)
  if [ "$1" = one ]; then targets="upstream = \"http://127.0.0.1:$UP1\""
  else targets="upstreams = [\"http://127.0.0.1:$UP1\", \"http://127.0.0.1:$UP2\"]"; fi
  gateway_config "$gw" "$W/store-$1-$RANDOM/revocations.log" "$targets"
  "$BIN" run --config "$W/gw.toml" > "$W/gw.log" 2>&1 &
  local gp=$!
  for _ in $(seq 1 100); do grep -q listening "$W/gw.log" && break; sleep 0.1; done
  local extra="--h1"; [ "$PROTO" = h2 ] && extra="-m 10"
  # Warm-up: connections made and the token verified once.
  h2load $extra -n 2000 -c 32 -H "authorization: Bearer $TOKEN" "https://127.0.0.1:$gw/x" >/dev/null
  local t0; t0=$(awk '{print $14+$15}' /proc/$gp/stat)
  local out; out=$(h2load $extra -D "$SECS" -c 32 -t 1 -H "authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$gw/x")
  local t1; t1=$(awk '{print $14+$15}' /proc/$gp/stat)
  kill -INT $gp; wait $gp || true
  python3 - "$out" "$t0" "$t1" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
out, t0, t1, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
done = int(re.search(r"(\d+) succeeded", out).group(1))
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
print(f"{rps:.0f} {(t1 - t0) / hz / max(done, 1) * 1e6:.1f}")
EOF
}

one=(); two=()
for i in $(seq 1 "$ROUNDS"); do
  a=$(run one); b=$(run two)
  echo "round $i: one target ${a% *} req/s ${a#* } us/req; two targets ${b% *} req/s ${b#* } us/req"
  one+=("$a"); two+=("$b")
done
python3 - "$PROTO" "${one[@]}" -- "${two[@]}" <<'EOF'
import statistics, sys
proto, rest = sys.argv[1], sys.argv[2:]
cut = rest.index("--")
one = [tuple(map(float, r.split())) for r in rest[:cut]]
two = [tuple(map(float, r.split())) for r in rest[cut + 1:]]
med = lambda rows, k: statistics.median(r[k] for r in rows)
print(f"{proto}: two targets / one: throughput x{med(two, 0) / med(one, 0):.2f}, "
      f"CPU per request x{med(two, 1) / med(one, 1):.2f} (medians of {len(one)} rounds)")
EOF
