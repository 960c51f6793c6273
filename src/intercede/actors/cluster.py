"""Joining a Ray cluster: where ``address`` points, failing fast when nothing answers there, and the local token.

Part of the Ray seam (with :mod:`.seam`): ``ray.init`` retries a dead address for minutes and Ray 2.60 does not send
its auth token to an explicit address, so intercede resolves and probes the address first, the way Ray itself would.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import ray

from intercede.errors import ConnectivityError

__all__ = ["joined_address", "recorded_cluster_is_dead", "require_cluster", "use_local_token"]

log = logging.getLogger(__name__)


def joined_address() -> str | None:
    """The GCS address of the cluster this process joined, or None."""
    if not ray.is_initialized():
        return None
    address: str = ray.get_runtime_context().gcs_address
    return address


def _resolve(address: str | None) -> str | None:
    """The host:port Ray would connect to for ``address`` (None: it would start a local cluster); raises
    :class:`ConnectionError` for "auto" when no cluster is known."""
    if address == "local" or (address is not None and "://" in address):
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address  # Ray's own lookup, so we agree with it
    except ImportError:  # pragma: no cover - a Ray without it: let ray.init decide
        return None
    resolved: str | None = canonicalize_bootstrap_address(address)  # type: ignore[arg-type]  # takes None too
    return resolved


def _answers(address: str, timeout: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def require_cluster(address: str | None) -> str | None:
    """Fail in seconds when no Ray cluster answers at ``address`` (ray.init retries a dead address for minutes);
    return the host:port it resolved to."""
    try:
        resolved = _resolve(address)
    except ConnectionError as exc:
        raise ConnectivityError("no Ray cluster is running here; start intercede with `intercede run` "
                                "(or pass the cluster's address)") from exc
    except ValueError as exc:
        raise ConnectivityError(f"{address!r} is not a Ray cluster address (host:port, or auto)") from exc
    if resolved is not None and not _answers(resolved):
        raise ConnectivityError(f"no Ray cluster answers at {resolved}; is intercede running? start it with "
                                "`intercede run`, or pass the address it printed with --address")
    return resolved


def use_local_token() -> None:
    """Authenticate with this machine's Ray token, if there is one and RAY_AUTH_MODE does not say otherwise."""
    with contextlib.suppress(ImportError):
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level, quiet.level = quiet.level, logging.ERROR  # its "token authentication is enabled" is no news here
        try:
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        finally:
            quiet.setLevel(level)


def recorded_cluster_is_dead() -> bool:
    """Whether Ray would join a cluster recorded by an earlier `ray start` that no longer answers (a stale record
    makes ray.init hang for minutes)."""
    with contextlib.suppress(Exception):
        resolved = _resolve(None)
        if resolved is not None and not _answers(resolved):
            log.warning("the Ray cluster recorded at %s does not answer; starting a local one", resolved)
            return True
    return False
