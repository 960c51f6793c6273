"""Credentials: expiry read from the secret, files noticed when they change, providers plugged, secrets never shown,
and the keeper's refresh schedule (pure: files on disk and an in-test consumer that records what it was given)."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from intercede.actors.credentials import CredentialKeeper
from intercede.backends.credentials import (
    CallableCredentialProvider,
    Credential,
    CredentialNeed,
    FileCredentialProvider,
    credential_from_bytes,
    load_provider,
    problem,
    proxy_expiry,
    token_expiry,
)
from intercede.errors import CredentialExpiredError, InvalidSpecError, is_temporary

pytestmark = pytest.mark.credentials

SECRET_PART = "s3cr3t-signature-never-shown"


def jwt(exp: float, aud: str = "ce.example:9619") -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part({'exp': int(exp), 'aud': aud})}.{SECRET_PART}"


def proxy_pem(not_after: datetime) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tester")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_after - timedelta(days=1)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())


def test_a_token_expiry_is_its_exp_claim_and_a_proxy_expiry_its_not_after() -> None:
    assert token_expiry(jwt(1_900_000_000)) == 1_900_000_000
    assert token_expiry("not a jwt") is None
    end = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert proxy_expiry(proxy_pem(end)) == end.timestamp()
    assert proxy_expiry(b"no certificate") is None


def test_a_credential_never_shows_its_secret_in_repr_or_str() -> None:
    token = credential_from_bytes("token", jwt(time.time() + 60).encode(), "ce:9619")
    proxy = credential_from_bytes("proxy", proxy_pem(datetime.now(UTC) + timedelta(hours=1)))
    for c in (token, proxy):
        for shown in (repr(c), str(c), f"{c}", repr([c])):
            assert SECRET_PART not in shown and "PRIVATE KEY" not in shown and c.fingerprint in shown


async def test_the_file_provider_notices_a_renewed_file_and_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "token"
    need = CredentialNeed("idtoken", "token", None, path)
    provider = FileCredentialProvider()
    assert await provider.get(need, min_valid=0) is None
    path.write_text(jwt(time.time() + 30) + "\n")
    first = await provider.get(need, min_valid=0)
    assert first is not None and first.text().endswith(SECRET_PART)  # stripped of its newline
    again = await provider.get(need, min_valid=0)
    assert again is first  # unchanged file: not re-read
    path.write_text(jwt(time.time() + 3600))
    os.utime(path, (time.time() + 5, time.time() + 5))
    renewed = await provider.get(need, min_valid=0)
    assert renewed is not None and renewed.fingerprint != first.fingerprint
    assert renewed.expires_at is not None and renewed.expires_at > time.time() + 3000
    path.unlink()
    assert await provider.get(need, min_valid=0) is None


async def test_a_callable_provider_is_asked_again_only_within_the_margin() -> None:
    calls: list[str] = []

    async def mint(need: CredentialNeed) -> Credential:
        calls.append(need.slot)
        return credential_from_bytes("token", jwt(time.time() + 100).encode(), need.audience)

    provider = CallableCredentialProvider(mint)
    need = CredentialNeed("scitoken", "token", "ce:9619")
    await provider.get(need, min_valid=10)
    await provider.get(need, min_valid=10)
    assert calls == ["scitoken"]  # 100 s left > 10 s margin: the cached one
    await provider.get(need, min_valid=200)
    assert calls == ["scitoken", "scitoken"]  # within the margin: minted again
    assert "mint" in repr(provider)


def make_provider(lifetime: float = 50.0) -> CallableCredentialProvider:
    async def mint(need: CredentialNeed) -> Credential:
        return credential_from_bytes("token", jwt(time.time() + lifetime).encode(), need.audience)
    return CallableCredentialProvider(mint)


def test_a_provider_is_loaded_by_module_and_attribute_with_its_options() -> None:
    provider = load_provider(f"{__name__}:make_provider", {"lifetime": 5})
    assert isinstance(provider, CallableCredentialProvider)
    assert isinstance(load_provider(None), FileCredentialProvider)
    with pytest.raises(InvalidSpecError, match="unknown credential provider"):
        load_provider("no-such-provider")
    with pytest.raises(InvalidSpecError, match="cannot be loaded"):
        load_provider("no.such.module:thing")


def test_an_expired_credential_is_a_temporary_error_and_a_problem_naming_the_file(tmp_path: Path) -> None:
    need = CredentialNeed("idtoken", "token", None, tmp_path / "tok")
    assert problem(None, need, time.time()) == f"no token credential ({tmp_path / 'tok'})"
    old = credential_from_bytes("token", jwt(1000).encode())
    assert "expired at 1970-01-01 00:16:40 UTC" in problem(old, need, time.time())
    assert problem(credential_from_bytes("token", jwt(time.time() + 60).encode()), need, time.time()) == ""
    assert is_temporary(CredentialExpiredError("x"))


class Consumer:
    """Records the credentials it is given (what a backend's use_credential would install)."""

    def __init__(self, need: CredentialNeed) -> None:
        self.need, self.given = need, list[Credential]()

    def credential_needs(self) -> list[CredentialNeed]:
        return [self.need]

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None:
        self.given.append(credential)


async def test_the_keeper_installs_renewals_reports_expiry_and_recovers(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "token"
    consumer = Consumer(CredentialNeed("idtoken", "token", None, path))
    now = [time.time()]
    keeper = CredentialKeeper("ce-a", consumer, FileCredentialProvider(), margins={"token": 20}, interval=10,
                              clock=lambda: now[0])
    await keeper.ready()
    assert "no token credential" in keeper.problem
    path.write_text(jwt(now[0] + 100))
    delay = await keeper.refresh()
    assert keeper.problem == "" and len(consumer.given) == 1
    assert delay == 10  # the interval, sooner than expiry - margin (80 s)
    now[0] += 101  # the token expired and nobody renewed the file
    await keeper.refresh()
    assert "expired at" in keeper.problem and len(consumer.given) == 1
    path.write_text(jwt(now[0] + 100))
    os.utime(path, (time.time() + 7, time.time() + 7))
    await keeper.refresh()
    assert keeper.problem == "" and len(consumer.given) == 2  # recovered by itself, the new token installed
    assert SECRET_PART not in caplog.text and SECRET_PART not in repr(keeper.expiries())
