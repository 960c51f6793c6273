"""Signing an A-REX delegation request with the user's X.509 proxy (pure: bytes in, PEM out; no I/O).

A-REX answers ``POST /delegations?action=new`` with a certificate request (its own key pair); the client signs it
with its proxy's key into an RFC 3820 proxy certificate (``proxyCertInfo`` with the inherit-all policy, subject =
the proxy's subject + ``CN=<serial>``, valid no longer than the proxy itself) and PUTs it back with the proxy's chain.

ARC 6.17 sends requests whose version field is 2 (the only valid value is 0), which ``cryptography`` refuses to load;
only the public key is needed from the request, so such a request is read with its version byte set to 0 (its own
signature is then not checked: A-REX made it and the channel is TLS-authenticated).
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["load_request", "not_after", "sign_request"]

#: proxyCertInfo (RFC 3820), critical: ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { id-ppl-inheritAll } }
_PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
_INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")


def _header(der: bytes | bytearray, at: int) -> tuple[int, int]:
    """(offset of the content, content length) of the DER element at ``at``."""
    first = der[at + 1]
    if first < 0x80:
        return at + 2, first
    n = first & 0x7F
    return at + 2 + n, int.from_bytes(der[at + 2:at + 2 + n], "big")


def load_request(pem: bytes) -> x509.CertificateSigningRequest:
    """The request A-REX sent; a version-2 request (ARC 6.17) is read as version 0."""
    try:
        return x509.load_pem_x509_csr(pem)
    except x509.InvalidVersion:
        der = bytearray(_pem_body(pem))
        info, _ = _header(der, 0)        # CertificationRequest SEQUENCE -> CertificationRequestInfo
        version, _ = _header(der, info)  # CertificationRequestInfo SEQUENCE -> its first element, the version
        if der[version:version + 2] != b"\x02\x01":
            raise ValueError("the delegation request has no one-byte version field") from None
        der[version + 2] = 0
        return x509.load_der_x509_csr(bytes(der))


def _pem_body(pem: bytes) -> bytes:
    lines = [line for line in pem.decode("ascii").splitlines() if line and not line.startswith("-----")]
    return base64.b64decode("".join(lines))


def sign_request(request_pem: bytes, proxy_pem: bytes, now: datetime | None = None,
                 lifetime: timedelta = timedelta(hours=12)) -> bytes:
    """The proxy certificate for A-REX's request, followed by the signing proxy's chain (PEM)."""
    now = now or datetime.now(UTC)
    chain = x509.load_pem_x509_certificates(proxy_pem)
    signer_cert = chain[0]
    key = serialization.load_pem_private_key(_private_key(proxy_pem), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the proxy's key is not an RSA key")
    request = load_request(request_pem)
    serial = secrets.randbits(31) | 1
    subject = x509.Name([*signer_cert.subject, x509.NameAttribute(NameOID.COMMON_NAME, str(serial))])
    not_after = min(signer_cert.not_valid_after_utc, now + lifetime)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(signer_cert.subject)
            .public_key(request.public_key()).serial_number(serial)
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.UnrecognizedExtension(_PROXY_CERT_INFO, _INHERIT_ALL), critical=True)
            .sign(key, hashes.SHA256()))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])


_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)


def _private_key(proxy_pem: bytes) -> bytes:
    """The private key block of a proxy file (certificate, key, chain)."""
    found = _KEY.search(proxy_pem)
    if found is None:
        raise ValueError("the proxy file holds no private key")
    return found.group(0)


def not_after(chain_pem: bytes) -> datetime:
    """When the first certificate of ``chain_pem`` expires."""
    return x509.load_pem_x509_certificates(chain_pem)[0].not_valid_after_utc
