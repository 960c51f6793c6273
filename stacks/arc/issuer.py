#!/usr/bin/env python3
"""A minimal OIDC-style token issuer for the ARC stack (tests only).

  issuer.py serve                 https://localhost:8444/.well-known/openid-configuration and /jwks (A-REX reads them)
  issuer.py mint [--lifetime S]   print an RS256 JWT for subject tester (negative lifetime: already expired)
"""

import argparse
import base64
import http.server
import json
import ssl
import time
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ISSUER = "https://localhost:8444"
KEY = "/etc/issuer/signing.pem"
KID = "arc-test"


def enc(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load():
    with open(KEY, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def mint(sub: str, aud: str, lifetime: int, scope: str) -> str:
    now = int(time.time())
    head = {"alg": "RS256", "typ": "JWT", "kid": KID}
    body = {"iss": ISSUER, "sub": sub, "aud": aud, "scope": scope, "wlcg.ver": "1.0", "iat": now,
            "nbf": now - 60 if lifetime > 0 else now - 7200, "exp": now + lifetime, "jti": str(uuid.uuid4())}
    signing_input = f"{enc(json.dumps(head).encode())}.{enc(json.dumps(body).encode())}"
    sig = load().sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{enc(sig)}"


def jwks() -> dict:
    numbers = load().public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": KID, "n": enc(n), "e": enc(e)}]}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        docs = {"/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"},
                "/jwks": jwks()}
        body = json.dumps(docs.get(self.path, {})).encode()
        self.send_response(200 if self.path in docs else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve")
    m = sub.add_parser("mint")
    m.add_argument("--sub", default="tester")
    m.add_argument("--aud", default="https://localhost:8443/arex")
    m.add_argument("--lifetime", type=int, default=3600)
    m.add_argument("--scope", default="compute.create compute.read compute.modify compute.cancel")
    args = parser.parse_args()
    if args.cmd == "mint":
        print(mint(args.sub, args.aud, args.lifetime, args.scope))
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 8444), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain("/etc/grid-security/testCA-hostcert.pem", "/etc/grid-security/testCA-hostkey.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
