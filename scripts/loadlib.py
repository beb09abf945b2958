"""Shared pieces of the load scripts (bench-flood.py, soak.py): a work folder with a TLS
certificate, an nginx upstream, a gateway config, HS256 tokens, and wrk runs parsed.

Everything binds to 127.0.0.1 only; every run is bounded in time.
"""
import base64, hashlib, hmac, json, os, shutil, signal, socket, subprocess, tempfile, time

SECRET = "load-test-secret-0123456789abcdef0123456789abcdef"
ADMIN_TOKEN = "load-test-admin-token-0123456789"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub: str, jti: str, secret: str = SECRET, ttl: int = 7200) -> str:
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "hs256"}
    claims = {"sub": sub, "jti": jti, "iat": now, "exp": now + ttl}
    si = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), si.encode(), hashlib.sha256).digest()
    return si + "." + b64(sig)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc, timeout: float = 20.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


class Bench:
    """A work folder with nginx on `up_port` and a gateway config; `start_gateway` runs it."""

    def __init__(self, gateway: str, extra_config: str = ""):
        for tool in ("openssl", "wrk", "nginx"):
            if not shutil.which(tool):
                raise SystemExit(f"missing {tool}: apt-get install -y wrk nginx openssl")
        self.gateway = os.path.abspath(gateway)
        self.work = tempfile.mkdtemp(prefix="portcullis-load-")
        self.procs = []
        self.up_port, self.gw_port, self.admin_port = free_port(), free_port(), free_port()
        w = self.work
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{w}/tls.key",
                        "-out", f"{w}/tls.crt", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        open(f"{w}/nginx.conf", "w").write(f"""worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {w}/b; proxy_temp_path {w}/p; fastcgi_temp_path {w}/f; uwsgi_temp_path {w}/u; scgi_temp_path {w}/s;
  client_max_body_size 64m;
  server {{
    listen 127.0.0.1:{self.up_port} backlog=4096;
    keepalive_requests 10000000;
    location / {{ default_type text/plain; return 200 "user=$http_x_user_id\\n"; }}
  }}
}}
""")
        self.config_path = f"{w}/gateway.toml"
        self.write_config(extra_config)
        self.start(["nginx", "-c", f"{w}/nginx.conf"], self.up_port, "nginx.log")

    def write_config(self, extra: str = ""):
        open(self.config_path, "w").write(f"""[listen]
addr = "127.0.0.1:{self.gw_port}"
tls_cert = "tls.crt"
tls_key = "tls.key"
header_read_timeout = "5s"

[[jwt.keys]]
kid = "hs256"
alg = "HS256"
secret = "{SECRET}"

[admin]
addr = "127.0.0.1:{self.admin_port}"
token = "{ADMIN_TOKEN}"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:{self.up_port}"
auth = "jwt"
{extra}
""")

    def start(self, cmd, port, log):
        p = subprocess.Popen(cmd, stdout=open(f"{self.work}/{log}", "w"), stderr=subprocess.STDOUT,
                             cwd=self.work, start_new_session=True)
        self.procs.append(p)
        wait_port(port, p)
        return p

    def start_gateway(self):
        self.gw = self.start([self.gateway, "run", "--config", self.config_path], self.gw_port, "gateway.log")
        return self.gw

    def rss_kib(self) -> int:
        for line in open(f"/proc/{self.gw.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def token_file(self, name: str, tokens) -> str:
        path = f"{self.work}/{name}.txt"
        open(path, "w").write("\n".join(tokens) + "\n")
        return path

    def wrk(self, token_file: str, seconds: int, conns: int, path: str = "/", script_extra: str = "",
            rate_delay_ms: int = 0):
        """Run wrk with tokens from `token_file`, round robin; returns parsed figures."""
        # One script file per call: concurrent runs (the soak runs three at once) must never
        # read a file another run is rewriting, or wrk starts with a half-written script and
        # sends requests without a token.
        fd, lua = tempfile.mkstemp(prefix=f"wrk-{os.path.basename(token_file)}-", suffix=".lua", dir=self.work)
        os.close(fd)
        delay = f"function delay() return {rate_delay_ms} end" if rate_delay_ms else ""
        open(lua, "w").write(f"""
local tokens = {{}}
for line in io.lines("{token_file}") do tokens[#tokens + 1] = "Bearer " .. line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, "{path}", {{["authorization"] = tokens[i]}})
end
{delay}
{script_extra}
""")
        out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", lua,
                              f"https://127.0.0.1:{self.gw_port}/"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        return parse_wrk(out)

    def close(self, keep: bool = False):
        """Stop everything; with `keep`, leave the work folder (logs, configs) for diagnosis."""
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        if keep:
            print(f"# work folder kept for diagnosis: {self.work} (gateway.log, nginx.err)")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def parse_wrk(out: str) -> dict:
    m = {"rps": 0.0, "reqs": 0, "non2xx": 0, "errors": 0, "p50_us": 0.0, "p99_us": 0.0}
    for line in out.splitlines():
        s = line.split()
        if line.startswith("Requests/sec:"):
            m["rps"] = float(s[1])
        elif "Non-2xx" in line:
            m["non2xx"] = int(s[-1])
        elif "Socket errors" in line:
            m["errors"] = sum(int(x.rstrip(",")) for x in s if x.rstrip(",").isdigit())
        elif "requests in" in line:
            m["reqs"] = int(s[0])
        elif len(s) == 2 and s[0] in ("50%", "99%"):
            v = s[1]
            if v.endswith("us"):
                us = float(v[:-2])
            elif v.endswith("ms"):
                us = float(v[:-2]) * 1e3
            elif v.endswith("s"):
                us = float(v[:-1]) * 1e6
            else:
                us = float(v)
            m["p50_us" if s[0] == "50%" else "p99_us"] = us
    return m
