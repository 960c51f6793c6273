#!/usr/bin/env python3
"""A minimal SciTokens issuer for the CE stand-in (tests only).

  issuer.py serve              serve https://issuer.intercede.test:8443/.well-known/openid-configuration and /jwks
  issuer.py mint --aud A ...   print a signed SciToken (ES256) for subject tester

The signing key and the TLS certificate are made by start.sh under /etc/condor-ce/issuer.
"""

import argparse
import base64
import http.server
import json
import ssl
import time
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HOME = "/etc/condor-ce/issuer"
ISSUER = "https://issuer.intercede.test:8443"
KID = "intercede-test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key() -> ec.EllipticCurvePrivateKey:
    with open(f"{HOME}/signing.pem", "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def jwks() -> dict:
    numbers = key().public_key().public_numbers()
    return {"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
                      "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}]}


def mint(aud: str, sub: str, lifetime: int, scope: str) -> str:
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": KID}
    claims = {"iss": ISSUER, "sub": sub, "aud": aud, "scope": scope, "ver": "scitoken:2.0", "iat": now,
              "nbf": now - 60 if lifetime > 0 else now - 3600, "exp": now + lifetime, "jti": str(uuid.uuid4())}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key().sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        docs = {"/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"},
                "/jwks": jwks()}
        body = json.dumps(docs[self.path]).encode() if self.path in docs else b"{}"
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
    m.add_argument("--aud", required=True)
    m.add_argument("--sub", default="tester")
    m.add_argument("--lifetime", type=int, default=3600, help="seconds; negative: already expired")
    # A plain schedd grants only the condor:/ scopes a token carries; compute.* is what an HTCondor-CE reads.
    m.add_argument("--scope", default="condor:/READ condor:/WRITE "
                   "compute.create compute.read compute.modify compute.cancel")
    args = parser.parse_args()
    if args.cmd == "mint":
        print(mint(args.aud, args.sub, args.lifetime, args.scope))
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 8443), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{HOME}/server.crt", f"{HOME}/server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
