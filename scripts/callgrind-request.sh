#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable on a busy machine (it
# counts instructions, not seconds), so two binaries can be compared while other work runs.
#
#   scripts/callgrind-request.sh BIN [h1|h2] [OUT_DIR]
#
# Starts nginx as the upstream and BIN under `valgrind --tool=callgrind` with an HS256 route
# behind TLS, sends 1000 and then 5000 requests with one token (h2load; `-m 10` streams per
# connection for h2), and prints (I(5000) - I(1000)) / 4000: start-up cancels out. The two
# profiles stay in OUT_DIR for callgrind_annotate.
#
# Caveats: valgrind hides SHA-NI from the CPU-feature probe, so the verified-token cache key
# (SHA-256 of the token, about 10k instructions in software) is far cheaper in a real run; and
# glibc copies of 4 KiB or more use `rep movsb`, which callgrind counts per byte.
# Needs: valgrind, nginx, h2load (nghttp2-client), openssl, python3.
set -euo pipefail
BIN=$(realpath "$1"); PROTO=${2:-h1}; OUT=${3:-$(mktemp -d)}
mkdir -p "$OUT"; W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
SECRET=callgrind-bench-secret-0123456789abcdef0123456789

. "$(dirname "$0")/bench-common.sh"
UP=$(port)
make_cert
start_nginx "$UP"
TOKEN=$(hs256_token)

run() { # N OUTFILE
  local gw; gw=$(port)
  gateway_config "$gw" "$W/store-$1/revocations.log" "upstream = \"http://127.0.0.1:$UP\""
  valgrind --tool=callgrind --callgrind-out-file="$2" "$BIN" run --config "$W/gw.toml" \
    > "$W/gw.log" 2>&1 &
  local vp=$!
  for _ in $(seq 1 600); do grep -q listening "$W/gw.log" && break; sleep 0.2; done
  local extra="--h1 -m 1"; [ "$PROTO" = h2 ] && extra="-m 10"
  h2load $extra -n "$1" -c 4 -H "authorization: Bearer $TOKEN" "https://127.0.0.1:$gw/x" \
    | grep -E '^status codes' >&2
  kill -INT $vp; wait $vp || true
}
run 1000 "$OUT/cg.1000"; run 5000 "$OUT/cg.5000"
python3 - "$OUT" "$PROTO" <<'EOF'
import re, sys
total = lambda f: int(re.search(r"summary: (\d+)", open(f).read()).group(1))
d = sys.argv[1]
print(f"{sys.argv[2]}: {(total(d + '/cg.5000') - total(d + '/cg.1000')) / 4000:.0f} instructions per request (profiles in {d})")
EOF
