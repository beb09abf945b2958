#!/usr/bin/env python3
"""Write tests/fixtures/jwe_jwcrypto.json: compact JWE tokens made by an
independent implementation (Python jwcrypto) for every alg/enc pair the
portcullis JWE module supports, with the keys and the expected plaintext.

Keys are fixed (symmetric keys derived from their kid, the RSA key read from
tests/fixtures/jwe_rsa_oaep_test_key.pem, created on first run); CEKs and IVs
are random, drawn by jwcrypto. Re-running changes the tokens, never the keys.

    pip install jwcrypto pyjwt cryptography
    npm install --prefix target/interop jose
    python3 scripts/gen_jwe_vectors.py [--check]

Also writes tests/fixtures/es512_interop.json (ES512 JWS from PyJWT, jwcrypto and jose),
and adds node `jose` tokens for every key-management and content-encryption mode added
in issue 11. The tests read the committed fixtures: CI needs neither Python nor node.

--check decrypts the existing fixture with jwcrypto instead of rewriting it.
These are TEST keys: never configure them anywhere.
"""

import hashlib
import os
import subprocess
import json
import pathlib
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
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
    "A192CBC-HS384": 48,
    "A256CBC-HS512": 64,
}

SYMMETRIC = {  # alg -> key length in bytes
    "A128KW": 16,
    "A192KW": 24,
    "A256KW": 32,
    "A128GCMKW": 16,
    "A192GCMKW": 24,
    "A256GCMKW": 32,
}
ECDH_ALGS = ["ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW"]
CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1(), "X25519": None}

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


def pkcs8(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ecdh_private(kid: str, crv: str):
    """A deterministic EC or X25519 private key derived from the kid."""
    seed = hashlib.sha512(("portcullis-jwe-fixture/" + kid).encode()).digest()
    if crv == "X25519":
        return x25519.X25519PrivateKey.from_private_bytes(seed[:32])
    curve = CURVES[crv]
    # Reduced well below the order of every NIST curve used here.
    return ec.derive_private_key(int.from_bytes(seed, "big") % (2**250) + 1, curve)


def build_keys():
    """(fixture entry, jwcrypto encryption key) per configured key. Each entry carries the
    private key as a JWK (`jwk`, for decryption_jwks_file) and as config material."""
    keys = []
    for enc, length in ENCS.items():
        kid = "dir-" + enc
        k = derived_key(kid, length)
        entry = {"kid": kid, "alg": "dir", "enc": enc, "k": base64url_encode(k)}
        keys.append((entry, jwk.JWK(kty="oct", k=base64url_encode(k))))
    for alg, length in SYMMETRIC.items():
        kid = "kw-" + alg
        k = derived_key(kid, length)
        entry = {"kid": kid, "alg": alg, "enc": None, "k": base64url_encode(k)}
        entry["jwk"] = {"kty": "oct", "kid": kid, "alg": alg, "k": base64url_encode(k)}
        keys.append((entry, jwk.JWK(kty="oct", k=base64url_encode(k))))
    pem = rsa_private_pem()
    private = jwk.JWK.from_pem(pem)
    public = jwk.JWK.from_json(private.export_public())
    for kid, alg in (("rsa-1", "RSA-OAEP-256"), ("rsa-oaep", "RSA-OAEP")):
        entry = {"kid": kid, "alg": alg, "enc": None, "pem": pem.decode()}
        entry["jwk"] = dict(json.loads(private.export_private()), kid=kid, alg=alg, use="enc")
        keys.append((entry, public))
    for alg in ECDH_ALGS:
        for crv in CURVES:
            kid = f"{alg}-{crv}"
            key = ecdh_private(kid, crv)
            pem = pkcs8(key)
            private = jwk.JWK.from_pem(pem)
            entry = {"kid": kid, "alg": alg, "enc": None, "pem": pem.decode()}
            entry["jwk"] = dict(json.loads(private.export_private()), kid=kid, alg=alg)
            keys.append((entry, jwk.JWK.from_json(private.export_public())))
    return keys


def asymmetric(alg: str) -> bool:
    return alg.startswith("RSA") or alg.startswith("ECDH")


def nested_jws(plaintext: bytes) -> str:
    """An HS256 JWS of the claims: what an asymmetric JWE must carry (cty "JWT")."""
    mac_key = jwk.JWK(kty="oct", k=base64url_encode(derived_key("nested-hs256", 32)))
    inner = jws.JWS(plaintext)
    inner.add_signature(mac_key, protected=json_encode({"alg": "HS256"}))
    return inner.serialize(compact=True)


def make_token(key, alg, enc, kid, plaintext: bytes, cty=None) -> str:
    header = {"alg": alg, "enc": enc}
    if kid is not None:
        header["kid"] = kid
    if cty is not None:
        header["cty"] = cty
    token = jwe.JWE(plaintext, protected=json_encode(header))
    token.add_recipient(key)
    return token.serialize(compact=True)


def jose_tokens(jobs):
    """Run node `jose` (NODE_PATH or target/interop/node_modules) over `jobs`."""
    script = HERE / "jose_tokens.mjs"
    out = subprocess.run(
        ["node", str(script)],
        input=json.dumps(jobs).encode(),
        capture_output=True,
        check=True,
        env=dict(os.environ, JOSE_DIR=os.environ.get("JOSE_DIR", str(HERE.parent / "target" / "interop"))),
    )
    return json.loads(out.stdout)


def jose_version():
    pkg = pathlib.Path(os.environ.get("JOSE_DIR", HERE.parent / "target" / "interop")) / "node_modules" / "jose" / "package.json"
    return json.loads(pkg.read_text())["version"]


def generate():
    plaintext = json.dumps(CLAIMS, ensure_ascii=False, separators=(",", ":")).encode()
    nested = nested_jws(plaintext)
    tokens = []
    jobs = []
    n = 0
    keys = build_keys()
    for entry, key in keys:
        encs = [entry["enc"]] if entry["alg"] == "dir" else list(ENCS)
        for enc in encs:
            # Every other token omits kid, so the ring's alg/enc fallback is used.
            kid = entry["kid"] if n % 2 == 0 else None
            n += 1
            # Under public-key management only a nested JWS is accepted (issue 11, hole 1).
            cty = "JWT" if asymmetric(entry["alg"]) else None
            body = nested if cty else plaintext.decode()
            tokens.append(
                {
                    "alg": entry["alg"],
                    "enc": enc,
                    "kid": kid,
                    "cty": cty,
                    "by": "jwcrypto",
                    "plaintext": body,
                    "token": make_token(key, entry["alg"], enc, kid, body.encode(), cty=cty),
                }
            )
            if entry["alg"] != "dir" and (enc in ("A192CBC-HS384", "A256GCM") or entry["alg"] not in ("A128KW", "A256KW", "RSA-OAEP-256")):
                header = {"alg": entry["alg"], "enc": enc, "kid": entry["kid"]}
                if cty:
                    header["cty"] = cty
                public = json.loads(key.export_public()) if asymmetric(entry["alg"]) else json.loads(key.export())
                jobs.append({"kind": "jwe", "header": header, "jwk": public, "plaintext": body})
    for enc in ("A192CBC-HS384", "A192GCM"):
        entry, key = keys[list(ENCS).index(enc)]
        jobs.append({"kind": "jwe", "header": {"alg": "dir", "enc": enc, "kid": entry["kid"]}, "jwk": json.loads(key.export()), "plaintext": plaintext.decode()})
    for t in jose_tokens(jobs):
        h = t["header"]
        tokens.append({"alg": h["alg"], "enc": h["enc"], "kid": h["kid"], "cty": h.get("cty"), "by": "jose", "plaintext": t["plaintext"], "token": t["token"]})
    # A nested JWT under dir (RFC 7519 section 5.2), and bare claims sets under public-key
    # management, which the gateway must refuse.
    dir_entry, dir_key = keys[2]  # dir + A256GCM
    tokens.append(
        {
            "alg": "dir",
            "enc": dir_entry["enc"],
            "kid": dir_entry["kid"],
            "cty": "JWT",
            "by": "jwcrypto",
            "plaintext": nested,
            "token": make_token(dir_key, "dir", dir_entry["enc"], dir_entry["kid"], nested.encode(), cty="JWT"),
        }
    )
    bare = []
    for entry, key in keys:
        if asymmetric(entry["alg"]) and entry["kid"] in ("rsa-oaep", "ECDH-ES-P-256", "ECDH-ES+A128KW-X25519", "ECDH-ES+A256KW-P-521"):
            bare.append({"alg": entry["alg"], "enc": "A256GCM", "kid": entry["kid"], "token": make_token(key, entry["alg"], "A256GCM", entry["kid"], plaintext)})
    fixture = {
        "generator": f"gen_jwe_vectors.py with jwcrypto {jwcrypto.version.__version__} and node jose {jose_version()}",
        "keys": [entry for entry, _ in keys],
        "tokens": tokens,
        "bare_asymmetric": bare,
    }
    OUT.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(tokens)} tokens to {OUT.relative_to(HERE.parent)}")
    write_es512()


def write_es512():
    """ES512 (P-521) JWS tokens from PyJWT, jwcrypto and node jose, with the public key."""
    import jwt as pyjwt

    key = ecdh_private("es512-signer", "P-521")
    pem = pkcs8(key)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = jwk.JWK.from_pem(pem)
    claims = dict(CLAIMS, sub="es512-user")
    tokens = []
    for kid in ("es512", None):
        headers = {"kid": kid} if kid else {}
        tokens.append({"by": "pyjwt", "token": pyjwt.encode(claims, pem, algorithm="ES512", headers=headers or None)})
        t = jws.JWS(json.dumps(claims).encode())
        t.add_signature(private, protected=json_encode(dict(headers, alg="ES512", typ="JWT")))
        tokens.append({"by": "jwcrypto", "token": t.serialize(compact=True)})
    job = {"kind": "jws", "header": {"alg": "ES512", "kid": "es512"}, "jwk": json.loads(private.export_private()), "plaintext": json.dumps(claims)}
    tokens.append({"by": "jose", "token": jose_tokens([job])[0]["token"]})
    out = FIXTURES / "es512_interop.json"
    out.write_text(json.dumps({
        "generator": f"gen_jwe_vectors.py with PyJWT {pyjwt.__version__}, jwcrypto {jwcrypto.version.__version__}, node jose {jose_version()}",
        "public_pem": public_pem.decode(),
        "public_jwk": dict(json.loads(private.export_public()), kid="es512", alg="ES512"),
        "sub": "es512-user",
        "tokens": tokens,
    }, indent=1) + "\n")
    print(f"wrote {len(tokens)} ES512 tokens to {out.relative_to(HERE.parent)}")


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
