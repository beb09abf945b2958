#!/usr/bin/env python3
"""Login-storm benchmark (issue 5): proxied-request p99 while 50 clients hammer the login
endpoint with wrong passwords, against the same proxied load alone.

  python3 scripts/bench-login-storm.py --gateway target/release/portcullis [--seconds 10] [--rounds 3]

The gateway runs with `[signin]` and one argon2id user (added with `portcullis users add`, so
the real default cost). The login rate limits are raised out of the way, so every failed login
costs a full password hash: the storm measures what hashing does to proxied traffic, not
what a 429 costs. Each round runs the proxied load alone (paced, well below saturation),
then the same load beside `--storm-connections` wrk connections posting wrong passwords back
to back. Prints both p99s per round and the ratio of the medians (issue 5 asks for at most
2x), plus how many logins the storm got answered and that none of them succeeded.
Loopback only; bounded in time.
"""
import argparse, json, statistics, subprocess, sys, threading

from loadlib import Bench, mint


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4, help="proxied-load connections")
    ap.add_argument("--delay-ms", type=int, default=2, help="pause between a proxied connection's requests")
    ap.add_argument("--storm-connections", type=int, default=50)
    ap.add_argument("--max-concurrent-hashes", type=int, help="[signin] max_concurrent_hashes (default: the gateway's)")
    args = ap.parse_args()
    signin = """
[signin]
users_file = "users.toml"
signing_kid = "hs256"
ip_attempts_per_minute = 100000000
user_attempts_per_minute = 100000000
"""
    if args.max_concurrent_hashes:
        signin += f"max_concurrent_hashes = {args.max_concurrent_hashes}\n"
    b = Bench(args.gateway, extra_config=signin)
    try:
        subprocess.run([b.gateway, "users", "add", "--file", f"{b.work}/users.toml", "--id", "u-1",
                        "--username", "alice"], input=b"correct horse battery staple\n", check=True,
                       capture_output=True)
        b.start_gateway()
        tokens = b.token_file("valid", [mint(f"user{i}", f"v-{i}") for i in range(200)])
        body = json.dumps({"username": "alice", "password": "wrong password"})
        storm = ('request = function() return wrk.format("POST", "/auth/login", '
                 '{["content-type"] = "application/json"}, ' + json.dumps(body) + ') end')
        alone_p99, storm_p99, answered = [], [], []
        for r in range(args.rounds):
            alone = b.wrk(tokens, args.seconds, args.connections, rate_delay_ms=args.delay_ms)
            logins = {}
            t = threading.Thread(target=lambda: logins.update(
                b.wrk(tokens, args.seconds + 2, args.storm_connections, script_extra=storm)))
            t.start()
            under = b.wrk(tokens, args.seconds, args.connections, rate_delay_ms=args.delay_ms)
            t.join()
            for run, what in ((alone, "alone"), (under, "under the storm")):
                if run["non2xx"] or run["errors"] or not run["reqs"]:
                    raise SystemExit(f"FAILED: proxied requests {what}: {run}")
            if logins.get("reqs", 0) != logins.get("non2xx", -1):
                raise SystemExit(f"FAILED: a wrong password was answered 2xx: {logins}")
            print(f"round {r + 1}: proxied p99 alone {alone['p99_us']:.0f}us ({alone['reqs']} reqs); "
                  f"beside {args.storm_connections} failed-login clients {under['p99_us']:.0f}us "
                  f"({under['reqs']} reqs); failed logins answered {logins.get('reqs', 0)} "
                  f"({logins.get('rps', 0):.0f}/s)", flush=True)
            alone_p99.append(alone["p99_us"])
            storm_p99.append(under["p99_us"])
            answered.append(logins.get("rps", 0))
        a, s = statistics.median(alone_p99), statistics.median(storm_p99)
        print(f"summary: proxied p99 alone {a:.0f}us, during the login storm {s:.0f}us (x{s / max(a, 1):.2f}); "
              f"failed logins {statistics.median(answered):.0f}/s, none accepted")
        return 0
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
