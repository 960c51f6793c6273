"""ARCConfig (the ``arc`` kind) and the delegation signer: pure, no daemon."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from intercede.backends.arc import ARCBackend, _delegation
from intercede.backends.arc.config import ARCConfig


def test_the_arc_kind_is_registered_validated_and_builds_without_io(tmp_path: Path) -> None:
    (ep,) = [e for e in entry_points(group="intercede.backends") if e.name == "arc"]
    assert ep.load() is ARCConfig
    cfg = ARCConfig.model_validate({"kind": "arc", "name": "site-1", "endpoint": "https://ce.example:443/arex",
                                    "token_file": str(tmp_path / "does-not-exist-yet"), "queue": "grid"})
    backend = cfg.build()  # the token file is read only when a request is made
    assert isinstance(backend, ARCBackend) and backend.name == "site-1" and backend.queue == "grid"
    for bad in ({"endpoint": "http://ce/arex"}, {"name": "-x"}, {"token_file": None}, {"surprise": 1}):
        with pytest.raises(ValidationError):
            ARCConfig.model_validate({"kind": "arc", "name": "s", "endpoint": "https://ce/arex",
                                      "token_file": "/t"} | bad)


def _proxy() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TestCA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "tester")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(hours=2))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem


def _request(version: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    at = der.index(b"\x02\x01\x00")  # CertificationRequestInfo's version INTEGER, the first INTEGER in the DER
    der[at + 2] = version  # 6.17 sends 2
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n".encode()


@pytest.mark.parametrize("version", [0, 2], ids=["csr-v0 (7.x)", "csr-v2 (6.17)"])
def test_a_delegation_request_is_signed_into_a_proxy_certificate_with_the_chain(version: int) -> None:
    proxy = _proxy()
    if version == 2:
        with pytest.raises(x509.InvalidVersion):
            x509.load_pem_x509_csr(_request(2))  # what breaks pyarcrest's signer on 6.17
    request = _request(version)
    signed = _delegation.sign_request(request, proxy, lifetime=timedelta(hours=12))
    cert, signer = x509.load_pem_x509_certificates(signed)
    assert cert.issuer == signer.subject and cert.subject.rdns[:-1] == signer.subject.rdns
    assert cert.public_key() == _delegation.load_request(request).public_key()
    info = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14"))
    assert info.critical and cert.not_valid_after_utc <= signer.not_valid_after_utc  # never past the proxy
    assert _delegation.not_after(signed) == cert.not_valid_after_utc
    assert b"PRIVATE KEY" not in signed
