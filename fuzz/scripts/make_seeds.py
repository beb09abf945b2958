#!/usr/bin/env python3
"""Write the hand-made seed corpus of every fuzz target into fuzz/corpus/.

Token seeds are signed with the fixed keys the `token` target verifies with: the HMAC secret
below and the RSA key pair whose public half is fuzz/keys/rsa.pub.pem. Only the public key is
kept in the repository; to re-sign the RS256 seeds, generate a new pair
(`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out /tmp/rsa.key.pem &&
openssl pkey -in /tmp/rsa.key.pem -pubout -out fuzz/keys/rsa.pub.pem`) and run
`python3 fuzz/scripts/make_seeds.py /tmp/rsa.key.pem` from the repository root.
Needs the `cryptography` package only for the RS256 seeds.
"""
import base64, hashlib, hmac, json, os, struct, sys, zlib

HS_SECRET = b"fuzz-hs256-secret-0123456789abcdef"  # keep in sync with fuzz_targets/token.rs
NOW = 1_800_000_000                                  # keep in sync with fuzz_targets/token.rs
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def seg(obj):
    return b64(obj.encode() if isinstance(obj, str) else json.dumps(obj, separators=(",", ":")).encode())


def hs256(header, payload):
    inp = f"{seg(header)}.{seg(payload)}"
    return inp + "." + b64(hmac.new(HS_SECRET, inp.encode(), hashlib.sha256).digest())


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


claims = {"sub": "alice", "iss": "https://issuer.fuzz", "aud": "api", "iat": NOW, "exp": NOW + 3600,
          "jti": "j-1", "roles": ["a", "b"]}

# token
write("token", "hs256-valid", hs256({"alg": "HS256", "kid": "hs"}, claims))
write("token", "hs256-no-kid", hs256({"alg": "HS256"}, claims))
write("token", "hs256-dup-sub", hs256({"alg": "HS256", "kid": "hs"},
      '{"sub":"alice","sub":"admin","iss":"https://issuer.fuzz","aud":"api","exp":1800003600}'))
write("token", "hs256-expired", hs256({"alg": "HS256", "kid": "hs"}, dict(claims, exp=NOW - 3600)))
write("token", "alg-none", f"{seg({'alg': 'none'})}.{seg(claims)}.")
write("token", "crit", hs256({"alg": "HS256", "kid": "hs", "crit": ["b64"], "b64": False}, claims))
write("token", "jwe-shape", f"{seg({'alg': 'dir', 'enc': 'A256GCM'})}..AAAAAAAAAAAAAAAA.{seg(claims)}.AAAAAAAAAAAAAAAAAAAAAA")
try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    AESGCM = None
if AESGCM is not None:
    # dir + A256GCM with the key the target configures (bytes 0..32), fixed IV: a JWE around
    # a nested JWS (cty JWT) and one around a bare claims set.
    for name, header, plaintext in [
        ("jwe-dir-nested", {"alg": "dir", "enc": "A256GCM", "kid": "jwe", "cty": "JWT"},
         hs256({"alg": "HS256", "kid": "hs"}, claims).encode()),
        ("jwe-dir-claims", {"alg": "dir", "enc": "A256GCM", "kid": "jwe"},
         json.dumps(claims, separators=(",", ":")).encode()),
    ]:
        h = seg(header)
        iv = bytes(12)
        sealed = AESGCM(bytes(range(32))).encrypt(iv, plaintext, h.encode())
        write("token", name, f"{h}..{b64(iv)}.{b64(sealed[:-16])}.{b64(sealed[-16:])}")
if len(sys.argv) > 1:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    with open(sys.argv[1], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    inp = f"{seg({'alg': 'RS256', 'kid': 'rsa'})}.{seg(claims)}"
    sig = key.sign(inp.encode(), padding.PKCS1v15(), hashes.SHA256())
    write("token", "rs256-valid", inp + "." + b64(sig))

# bearer
for i, v in enumerate(["Bearer abc.def.ghi", "bearer   x  ", "BEARER\tx", "Basic YWxhZGRpbjpvcGVu",
                       "Bearer ", "Bearer \xe9", "Bearerx"]):
    write("bearer", f"seed-{i}", v)

# path
for i, v in enumerate(["/", "/api/v1/users", "/public/../admin", "/public/%2e%2e/admin", "//a///b/",
                       "/a/%7euser/b%20c", "/public/..;/admin", "/a%2fb", "/a/./b/../c/", "/%41%42%25"]):
    write("path", f"seed-{i}", v)

# config
write("config", "minimal", '[listen]\naddr = "127.0.0.1:0"\n\n[[routes]]\nprefix = "/"\nupstream = "http://127.0.0.1:9"\nauth = "public"\n')
write("config", "full", """[listen]
addr = "127.0.0.1:8443"
header_read_timeout = "10s"
handshake_timeout = "5s"
workers = 2

[jwt]
issuer = "https://issuer.example"
audience = ["api", "web"]
leeway = "30s"
max_token_bytes = 4096
cache_size = 100

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "${HOME}-0123456789abcdef0123456789abcdef"

[[jwt.keys]]
kid = "hs2"
alg = "HS512"
secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"
secret_base64 = true

[identity]
user_header = "x-user-id"
user_claim = "sub"
claims = { roles = "x-user-roles" }

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:9000/base"
auth = "jwt"
host = "api.example"
timeout = "5s"

[[routes]]
prefix = "/public"
upstream = "http://127.0.0.1:9001"
auth = "public"

[revocation]
store = "memory"
sweep_interval = "1m"

[log]
format = "json"
level = "info"

[limits]
max_connections = 100
max_header_bytes = 16384
max_headers = 64
h2_max_concurrent_streams = 100

[upstream]
connect_timeout = "1s"
pool_idle_timeout = "30s"
pool_max_idle_per_host = 8
""")

# revocation_records: a header and one record of each kind (crc32 IEEE like crc32fast).
MAGIC = b"PCRVLOG\x01"


def record(kind, key, a, b):
    body = bytes([kind]) + key + struct.pack("<QQ", a, b)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


key = hashlib.sha256(b"j-1").digest()[:16]
recs = [record(1, key, NOW + 3600, 0), record(2, key, 0, 0), record(3, key, NOW, NOW + 86400), record(4, key, 0, 0)]
write("revocation_records", "four-kinds", MAGIC + b"".join(recs))
write("revocation_records", "torn-tail", MAGIC + b"".join(recs) + recs[0][:20])
write("revocation_records", "corrupt-middle", MAGIC + recs[0] + b"\x00" * 37 + recs[1])
write("revocation_records", "header-only", MAGIC)
write("revocation_records", "bad-version", b"PCRVLOG\x02" + recs[0])

# session_journal: journal bodies (after the 8-byte header): u32 LE length, body, CRC32 of
# length and body. START, ROTATE and END of one family.
def frame(body):
    head = struct.pack("<I", len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)


fam = hashlib.sha256(b"family").digest()[:16]
acc = hashlib.sha256(b"access-1").digest()[:16]
ref1, ref2 = hashlib.sha256(b"refresh-1").digest(), hashlib.sha256(b"refresh-2").digest()
start = frame(bytes([1]) + fam + acc + struct.pack("<Q", NOW + 900) + ref1 + struct.pack("<Q", NOW + 86400) + b"u-1")
rotate = frame(bytes([2]) + fam + ref1 + struct.pack("<Q", NOW + 86400) + ref2 + struct.pack("<Q", NOW + 86400)
               + hashlib.sha256(b"access-2").digest()[:16] + struct.pack("<Q", NOW + 900))
end = frame(bytes([3]) + fam)
write("session_journal", "start-rotate-end", start + rotate + end)
write("session_journal", "torn-tail", start + rotate + end[:9])
write("session_journal", "damaged-length", start + b"\xff\xff\x00\x00" + rotate[4:] + end)
