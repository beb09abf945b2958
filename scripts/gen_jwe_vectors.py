#!/usr/bin/env python3
"""Write tests/fixtures/jwe_jwcrypto.json: compact JWE tokens made by an
independent implementation (Python jwcrypto) for every alg/enc pair the
portcullis JWE module supports, with the keys and the expected plaintext.

Keys are fixed (symmetric keys derived from their kid, the RSA key read from
tests/fixtures/jwe_rsa_oaep_test_key.pem, created on first run); CEKs and IVs
are random, drawn by jwcrypto. Re-running changes the tokens, never the keys.

    pip install jwcrypto
    python3 scripts/gen_jwe_vectors.py [--check]

--check decrypts the existing fixture with jwcrypto instead of rewriting it.
These are TEST keys: never configure them anywhere.
"""

import hashlib
import json
import pathlib
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import base64url_encode, json_encode
import jwcrypto.version

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"
OUT = FIXTURES / "jwe_jwcrypto.json"
RSA_PEM = FIXTURES / "jwe_rsa_oaep_test_key.pem"

ENCS = {  # enc -> CEK length in bytes (RFC 7518 sections 5.2 and 5.3)
    "A128GCM": 16,
    "A192GCM": 24,
    "A256GCM": 32,
    "A128CBC-HS256": 32,
    "A256CBC-HS512": 64,
}

# About 300 bytes of claims, with non-ASCII text so encoding slips show.
CLAIMS = {
    "iss": "https://issuer.example",
    "sub": "user-4711",
    "aud": "portcullis",
    "exp": 4102444800,
    "iat": 1700000000,
    "name": "Zoë Ångström-Nakamura",
    "email": "zoe@example.org",
    "roles": ["reader", "writer", "admin"],
    "tenant": "acme-corp",
    "note": "fixture token written by jwcrypto for the portcullis JWE tests",
}


def derived_key(kid: str, length: int) -> bytes:
    """Deterministic test key material: SHA-512 of a label, truncated."""
    return hashlib.sha512(("portcullis-jwe-fixture/" + kid).encode()).digest()[:length]


def rsa_private_pem() -> bytes:
    if not RSA_PEM.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        RSA_PEM.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return RSA_PEM.read_bytes()


def build_keys():
    """(fixture entry, jwcrypto encryption key) per configured key."""
    keys = []
    for enc, length in ENCS.items():
        kid = "dir-" + enc
        k = derived_key(kid, length)
        entry = {"kid": kid, "alg": "dir", "enc": enc, "k": base64url_encode(k)}
        keys.append((entry, jwk.JWK(kty="oct", k=base64url_encode(k))))
    for alg, length in (("A128KW", 16), ("A256KW", 32)):
        kid = "kw-" + alg
        k = derived_key(kid, length)
        entry = {"kid": kid, "alg": alg, "enc": None, "k": base64url_encode(k)}
        keys.append((entry, jwk.JWK(kty="oct", k=base64url_encode(k))))
    pem = rsa_private_pem()
    private = jwk.JWK.from_pem(pem)
    public = jwk.JWK.from_json(private.export_public())
    entry = {"kid": "rsa-1", "alg": "RSA-OAEP-256", "enc": None, "pem": pem.decode()}
    keys.append((entry, public))
    return keys


def make_token(key, alg, enc, kid, plaintext: bytes, cty=None) -> str:
    header = {"alg": alg, "enc": enc}
    if kid is not None:
        header["kid"] = kid
    if cty is not None:
        header["cty"] = cty
    token = jwe.JWE(plaintext, protected=json_encode(header))
    token.add_recipient(key)
    return token.serialize(compact=True)


def generate():
    plaintext = json.dumps(CLAIMS, ensure_ascii=False, separators=(",", ":")).encode()
    tokens = []
    n = 0
    for entry, key in build_keys():
        encs = [entry["enc"]] if entry["alg"] == "dir" else list(ENCS)
        for enc in encs:
            # Every other token omits kid, so the ring's alg/enc fallback is used.
            kid = entry["kid"] if n % 2 == 0 else None
            n += 1
            tokens.append(
                {
                    "alg": entry["alg"],
                    "enc": enc,
                    "kid": kid,
                    "cty": None,
                    "plaintext": plaintext.decode(),
                    "token": make_token(key, entry["alg"], enc, kid, plaintext),
                }
            )
    # A nested JWT: an HS256 JWS inside a JWE with cty "JWT" (RFC 7519 section 5.2).
    mac_key = jwk.JWK(kty="oct", k=base64url_encode(derived_key("nested-hs256", 32)))
    inner = jws.JWS(plaintext)
    inner.add_signature(mac_key, protected=json_encode({"alg": "HS256"}))
    nested = inner.serialize(compact=True)
    dir_entry, dir_key = build_keys()[2]  # dir + A256GCM
    tokens.append(
        {
            "alg": "dir",
            "enc": dir_entry["enc"],
            "kid": dir_entry["kid"],
            "cty": "JWT",
            "plaintext": nested,
            "token": make_token(dir_key, "dir", dir_entry["enc"], dir_entry["kid"], nested.encode(), cty="JWT"),
        }
    )
    fixture = {
        "generator": "gen_vectors.py with jwcrypto " + jwcrypto.version.__version__,
        "keys": [entry for entry, _ in build_keys()],
        "tokens": tokens,
    }
    OUT.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(tokens)} tokens to {OUT.relative_to(HERE)}")


def check():
    """Decrypt every fixture token with jwcrypto (sanity check of the file)."""
    fixture = json.loads(OUT.read_text())
    private = {}
    for entry in fixture["keys"]:
        if "pem" in entry:
            private[entry["kid"]] = jwk.JWK.from_pem(entry["pem"].encode())
        else:
            private[entry["kid"]] = jwk.JWK(kty="oct", k=entry["k"])
    ok = 0
    for t in fixture["tokens"]:
        candidates = [
            e["kid"] for e in fixture["keys"] if e["alg"] == t["alg"] and e["enc"] in (None, t["enc"])
        ]
        token = jwe.JWE()
        token.deserialize(t["token"])
        for kid in candidates:
            try:
                token.decrypt(private[kid])
            except Exception:
                continue
            assert token.payload.decode() == t["plaintext"], t
            ok += 1
            break
        else:
            raise SystemExit(f"no key decrypts {t['alg']}/{t['enc']}")
    print(f"{ok} passed, 0 failed")


if __name__ == "__main__":
    check() if "--check" in sys.argv[1:] else generate()
