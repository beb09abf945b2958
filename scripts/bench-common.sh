# Shared by the request-path harnesses (callgrind-request.sh, bench-targets.sh): source it after
# setting W (a scratch directory) and SECRET (the HS256 secret of the gateway's key).
#
#   port                  a free loopback port
#   make_cert             a self-signed certificate for localhost: $W/tls.crt, $W/tls.key
#   start_nginx PORT...   one nginx worker answering "ok" on each port, in the background
#   hs256_token           an HS256 token (kid hs256, sub user-1, valid a day) signed with SECRET
#   start_gateway BIN     BIN run with $W/gw.toml in the background (log $W/gw.log) until it
#                         listens; its pid in GP
#   gateway_config PORT STORE TARGETS
#                         $W/gw.toml: TLS on PORT, the store file STORE, one HS256 key, one
#                         route on / with the line TARGETS (`upstream = ..` or `upstreams = [..]`)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

make_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/tls.key" -out "$W/tls.crt" -days 2 \
    -subj /CN=localhost 2>/dev/null
}

start_nginx() {
  local listens="" p
  for p in "$@"; do listens="$listens listen 127.0.0.1:$p;"; done
  cat > "$W/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W;
  uwsgi_temp_path $W; scgi_temp_path $W;
  server { $listens keepalive_requests 1000000; location / { return 200 "ok\n"; } } }
EOF
  nginx -c "$W/nginx.conf" -e "$W/nginx.err" &
}

hs256_token() {
  python3 - "$SECRET" <<'EOF'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "hs256"}).encode())
p = b(json.dumps({"sub": "user-1", "exp": int(time.time()) + 86400}).encode())
print(h + "." + p + "." + b(hmac.new(sys.argv[1].encode(), (h + "." + p).encode(), hashlib.sha256).digest()))
EOF
}

gateway_config() {
  cat > "$W/gw.toml" <<EOF
[listen]
addr = "127.0.0.1:$1"
tls_cert = "$W/tls.crt"
tls_key = "$W/tls.key"
[revocation]
store = "$2"
[[jwt.keys]]
kid = "hs256"
alg = "HS256"
secret = "$SECRET"
[identity]
user_header = "x-user-id"
[[routes]]
prefix = "/"
$3
auth = "jwt"
EOF
}

start_gateway() {
  "$1" run --config "$W/gw.toml" > "$W/gw.log" 2>&1 &
  GP=$!
  for _ in $(seq 1 100); do grep -q listening "$W/gw.log" && break; sleep 0.1; done
}
