#!/usr/bin/env python3
"""Make DPoP proofs (RFC 9449) with an implementation independent of portcullis: jwcrypto.

Used by tests/dpop.rs at test time. Reads one JSON request on stdin:
  {"kty": "EC" | "OKP" | "RSA", "key": <private JWK, optional: generated when absent>,
   "proofs": [{"htm": "GET", "htu": "https://...", "token": "<access token, for ath>",
               "iat_offset": 0, "jti": "...", "nonce": "...", "ath": "<explicit>",
               "variant": "ok" | "private_jwk" | "alg_none" | "hs256" | "no_ath"}]}
and writes {"key": <private JWK>, "jkt": <RFC 7638 thumbprint>, "proofs": ["<jws>", ...]}.
"""
import base64
import hashlib
import json
import sys
import time
import uuid

from jwcrypto import jwk, jws
from jwcrypto.common import json_encode


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_for(key: jwk.JWK) -> str:
    kty = key.get("kty")
    return {"EC": "ES256", "OKP": "EdDSA", "RSA": "RS256"}[kty]


def proof(key: jwk.JWK, spec: dict) -> str:
    variant = spec.get("variant", "ok")
    claims = {
        "jti": spec.get("jti") or str(uuid.uuid4()),
        "htm": spec["htm"],
        "htu": spec["htu"],
        "iat": int(time.time()) + int(spec.get("iat_offset", 0)),
    }
    if "ath" in spec:
        claims["ath"] = spec["ath"]
    elif spec.get("token") and variant != "no_ath":
        claims["ath"] = b64(hashlib.sha256(spec["token"].encode()).digest())
    if spec.get("nonce"):
        claims["nonce"] = spec["nonce"]
    public = json.loads(key.export_public())
    header = {"typ": "dpop+jwt", "alg": alg_for(key), "jwk": public}
    payload = json_encode(claims)
    if variant == "private_jwk":
        header["jwk"] = json.loads(key.export_private())
    if variant == "alg_none":
        header["alg"] = "none"
        return f"{b64(json_encode(header).encode())}.{b64(payload.encode())}."
    if variant == "hs256":
        # The classic confusion: HMAC keyed with the public key's own bytes.
        secret = jwk.JWK(kty="oct", k=b64(json_encode(public).encode()))
        header["alg"] = "HS256"
        token = jws.JWS(payload.encode())
        token.add_signature(secret, None, json_encode(header))
        return token.serialize(compact=True)
    token = jws.JWS(payload.encode())
    token.add_signature(key, None, json_encode(header))
    return token.serialize(compact=True)


def main() -> None:
    req = json.load(sys.stdin)
    if req.get("key"):
        key = jwk.JWK(**req["key"])
    else:
        kty = req.get("kty", "EC")
        params = {"EC": {"crv": "P-256"}, "OKP": {"crv": "Ed25519"}, "RSA": {"size": 2048}}[kty]
        key = jwk.JWK.generate(kty=kty, **params)
    out = {
        "key": json.loads(key.export_private()),
        "jkt": key.thumbprint(),
        "proofs": [proof(key, spec) for spec in req.get("proofs", [])],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
