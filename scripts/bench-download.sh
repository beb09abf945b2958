#!/usr/bin/env bash
# Gateway CPU per large download: the body path (read buffers, frames) rather than the
# per-request path the other harnesses measure.
#
#   scripts/bench-download.sh BIN [h1|h2] [DOWNLOADS] [SIZE_MB]
#
# nginx serves one file of SIZE_MB (default 10) random bytes; BIN proxies it behind TLS with an
# HS256 route (bench-common.sh); h2load fetches it DOWNLOADS times (default 100) over 4
# connections, one stream each. Prints h2load's summary and the gateway's CPU (utime + stime
# from /proc) per download. Compare two binaries by alternating runs.
# Needs: nginx, h2load (nghttp2-client), openssl, python3.
set -euo pipefail
BIN=$(realpath "$1"); PROTO=${2:-h2}; N=${3:-100}; MB=${4:-10}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
SECRET=download-bench-secret-0123456789abcdef0123456789

. "$(dirname "$0")/bench-common.sh"
UP=$(port)
make_cert
TOKEN=$(hs256_token)
mkdir -p "$W/www"
head -c $((MB * 1024 * 1024)) /dev/urandom > "$W/www/big"
cat > "$W/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W;
  uwsgi_temp_path $W; scgi_temp_path $W; sendfile on;
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000; root $W/www; } }
NGINX
nginx -c "$W/nginx.conf" -e "$W/nginx.err" &
GW=$(port)
gateway_config "$GW" "$W/store/revocations.log" "upstream = \"http://127.0.0.1:$UP\""
start_gateway "$BIN"
extra="-m 1"; [ "$PROTO" = h1 ] && extra="--h1 -m 1"
c0=$(awk '{print $14+$15}' /proc/$GP/stat)
h2load $extra -n "$N" -c 4 -t1 -H "authorization: Bearer $TOKEN" "https://127.0.0.1:$GW/big" \
  | grep -E '^(finished|status codes)'
c1=$(awk '{print $14+$15}' /proc/$GP/stat)
python3 -c "import sys; print(f'{sys.argv[1]}: {(int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[5]) * 1000 / int(sys.argv[4]):.1f} ms of gateway CPU per {sys.argv[6]} MiB download')" \
  "$PROTO" "$c0" "$c1" "$N" "$(getconf CLK_TCK)" "$MB"
