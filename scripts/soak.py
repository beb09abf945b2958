#!/usr/bin/env python3
"""Soak test (issue 7): mixed load for a while with a config reload every 30 s; reports
errors, the gateway's resident memory over time, and latency.

  python3 scripts/soak.py --gateway target/release/portcullis [--minutes 10] [--reload-every 30]

The mix, all at once:
- valid tokens (must all get 200),
- forged and revoked tokens (must all get 401),
- 1 MiB request bodies (POST, valid token),
- slow clients that trickle their request head and are cut by header_read_timeout,
while SIGHUP reloads the config every `--reload-every` seconds. RSS is sampled every 10 s;
"no growth once warm" means the last sample is within 10% of the one taken after the first
minute. Loopback only; bounded in time.
"""
import argparse, json, os, signal, socket, ssl, statistics, sys, threading, time, urllib.request

from loadlib import ADMIN_TOKEN, Bench, mint


def revoke(b: Bench, jti: str):
    req = urllib.request.Request(f"http://127.0.0.1:{b.admin_port}/revocations", method="POST",
                                 data=json.dumps({"jti": jti}).encode(),
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201, r.status


def slow_clients(port: int, stop: threading.Event, cut: list):
    """Open connections that send one header byte per second; count those the gateway cuts."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while not stop.is_set():
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 5), server_hostname="localhost")
            s.settimeout(1.5)
            started = time.time()
            for ch in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 60:
                if stop.is_set():
                    break
                s.send(bytes([ch]))
                try:
                    s.recv(1)  # any answer (408, or end of stream) means the gateway cut us
                    cut.append(time.time() - started)
                    break
                except socket.timeout:
                    continue
            s.close()
        except OSError:
            time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--reload-every", type=int, default=30)
    args = ap.parse_args()
    b = Bench(args.gateway, extra_config="\n[[routes]]\nprefix = \"/upload\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"jwt\"\nmax_body_bytes = 4194304\n")
    # /upload goes to nginx too (rewrite the placeholder upstream).
    text = open(b.config_path).read().replace("http://127.0.0.1:1\"", f"http://127.0.0.1:{b.up_port}\"")
    open(b.config_path, "w").write(text)
    try:
        gw = b.start_gateway()
        valid = b.token_file("valid", [mint(f"user{i}", f"v-{i}") for i in range(500)])
        bad_tokens = [mint(f"user{i}", f"x-{i}", secret="forged-secret-0123456789abcdef") for i in range(250)]
        revoked_tokens = [mint(f"user{i}", f"r-{i}") for i in range(250)]
        for i in range(250):
            revoke(b, f"r-{i}")
        bad = b.token_file("bad", bad_tokens + revoked_tokens)
        body = b.work + "/body.bin"
        open(body, "wb").write(os.urandom(1 << 20))
        post = (f'local f = io.open("{body}", "rb"); wrk.method = "POST"; wrk.body = f:read("*a"); f:close()')

        end = time.time() + args.minutes * 60
        stop = threading.Event()
        rss, reloads, cut = [], [], []

        def sampler():
            while not stop.is_set():
                rss.append((round(time.time() - (end - args.minutes * 60)), b.rss_kib()))
                stop.wait(10)

        def reloader():
            while not stop.wait(args.reload_every):
                os.kill(gw.pid, signal.SIGHUP)
                reloads.append(time.time())

        threads = [threading.Thread(target=f) for f in (sampler, reloader)]
        threads.append(threading.Thread(target=slow_clients, args=(b.gw_port, stop, cut)))
        for t in threads:
            t.start()
        results = {"valid": [], "bad": [], "upload": []}
        chunk = 30
        while time.time() < end:
            secs = int(max(5, min(chunk, end - time.time())))
            out = {}
            ts = [
                threading.Thread(target=lambda: out.update(valid=b.wrk(valid, secs, 16))),
                threading.Thread(target=lambda: out.update(bad=b.wrk(bad, secs, 4))),
                threading.Thread(target=lambda: out.update(upload=b.wrk(valid, secs, 2, path="/upload/x", script_extra=post))),
            ]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for k in results:
                results[k].append(out[k])
            v = out["valid"]
            print(f"t={int(time.time() - (end - args.minutes * 60))}s valid {v['reqs']} reqs p99 {v['p99_us']:.0f}us "
                  f"non2xx {v['non2xx']} err {v['errors']}; bad {out['bad']['reqs']} (2xx: {out['bad']['reqs'] - out['bad']['non2xx']}); "
                  f"upload {out['upload']['reqs']} non2xx {out['upload']['non2xx']}; rss {b.rss_kib()} KiB", flush=True)
        stop.set()
        for t in threads:
            t.join()
        if gw.poll() is not None:
            raise SystemExit(f"FAILED: the gateway exited ({gw.returncode})")
        v_err = sum(r["non2xx"] + r["errors"] for r in results["valid"])
        bad_ok = sum(r["reqs"] - r["non2xx"] for r in results["bad"])
        up_err = sum(r["non2xx"] + r["errors"] for r in results["upload"])
        warm = next((kib for t, kib in rss if t >= 60), rss[0][1] if rss else 0)
        last = rss[-1][1] if rss else 0
        growth = (last - warm) / max(warm, 1)
        p99 = statistics.median(r["p99_us"] for r in results["valid"])
        print(f"rss samples (s, KiB): {rss}")
        print(f"summary: {args.minutes} min, {len(reloads)} reloads; valid requests {sum(r['reqs'] for r in results['valid'])} "
              f"with {v_err} errors; forged/revoked {sum(r['reqs'] for r in results['bad'])} with {bad_ok} accepted; "
              f"1 MiB uploads {sum(r['reqs'] for r in results['upload'])} with {up_err} errors; slow clients cut {len(cut)} "
              f"(median {statistics.median(cut) if cut else 0:.1f}s); valid p99 median {p99:.0f}us; "
              f"RSS warm {warm} KiB -> end {last} KiB ({growth * 100:+.1f}%)")
        failed = v_err or bad_ok or up_err or growth > 0.10
        if failed:
            warnings = [l for l in open(f"{b.work}/gateway.log", errors="replace") if "WARN" in l or "ERROR" in l]
            print(f"gateway warnings/errors: {len(warnings)}; last ones:")
            for line in warnings[-20:]:
                print("  " + line.rstrip()[:300])
        return 1 if failed else 0
    finally:
        b.close(keep="failed" in locals() and bool(failed))


if __name__ == "__main__":
    sys.exit(main())
