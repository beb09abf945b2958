#!/usr/bin/env python3
"""Flood benchmark (issue 8): honest clients' p99 and success rate while another process
sends many more requests with forged tokens.

  python3 scripts/bench-flood.py --gateway target/release/portcullis [--seconds 10] [--rounds 3]

Each round runs the honest load alone (the baseline), then the same honest load together with
an attacker (`wrk` with forged tokens: valid header and claims, wrong signature) on 10x the
connections with the same pacing, so it offers 10x the honest request rate. Prints the honest p99 with and without the flood, the honest
success rate under flood (must be 100%), and how many forged requests the attacker sent per
honest request. Loopback only; bounded in time.
"""
import argparse, statistics, sys, threading

from loadlib import Bench, mint


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--honest-connections", type=int, default=4)
    ap.add_argument("--honest-delay-ms", type=int, default=2, help="pause between a connection's requests")
    ap.add_argument("--flood-factor", type=int, default=10,
                    help="attacker connections per honest connection, paced alike: the attacker offers this many "
                         "times the honest request rate")
    args = ap.parse_args()
    b = Bench(args.gateway)
    try:
        b.start_gateway()
        honest = b.token_file("honest", [mint(f"user{i}", f"h-{i}") for i in range(200)])
        forged = b.token_file("forged", [mint(f"user{i}", f"f-{i}", secret="not-the-secret-0123456789abcdef") for i in range(200)])
        base_p99, flood_p99, ratios, success = [], [], [], []
        for r in range(args.rounds):
            alone = b.wrk(honest, args.seconds, args.honest_connections, rate_delay_ms=args.honest_delay_ms)
            attack = {}
            t = threading.Thread(target=lambda: attack.update(
                b.wrk(forged, args.seconds + 2, args.honest_connections * args.flood_factor,
                      rate_delay_ms=args.honest_delay_ms)))
            t.start()
            under = b.wrk(honest, args.seconds, args.honest_connections, rate_delay_ms=args.honest_delay_ms)
            t.join()
            ok = 1.0 - (under["non2xx"] + under["errors"]) / max(under["reqs"], 1)
            ratio = attack.get("reqs", 0) / max(under["reqs"], 1)
            print(f"round {r + 1}: honest alone p99 {alone['p99_us']:.0f}us ({alone['reqs']} reqs); "
                  f"under flood p99 {under['p99_us']:.0f}us ({under['reqs']} reqs, success {ok * 100:.2f}%); "
                  f"attacker sent {attack.get('reqs', 0)} forged ({ratio:.1f}x), "
                  f"{attack.get('reqs', 0) - attack.get('non2xx', 0)} of them 2xx")
            if attack.get("reqs", 0) != attack.get("non2xx", 0):
                raise SystemExit("FAILED: a forged token got a 2xx answer")
            base_p99.append(alone["p99_us"])
            flood_p99.append(under["p99_us"])
            ratios.append(ratio)
            success.append(ok)
        print(f"summary: honest p99 alone {statistics.median(base_p99):.0f}us, under a {statistics.median(ratios):.1f}x "
              f"forged flood {statistics.median(flood_p99):.0f}us (x{statistics.median(flood_p99) / max(statistics.median(base_p99), 1):.2f}); "
              f"honest success {min(success) * 100:.2f}% (worst round)")
        return 0 if min(success) == 1.0 else 1
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
