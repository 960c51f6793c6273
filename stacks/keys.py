"""Throw-away SSH keys for the stacks: a client key pair, a host key pair, and the pinned known_hosts line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SSHKeys:
    """Keys in ``folder``: ``client`` (+ ``.pub``) logs in; ``hostkey`` (+ ``.pub``) is the server's identity."""

    folder: Path

    @property
    def client(self) -> Path:
        return self.folder / "client"

    @property
    def hostkey(self) -> Path:
        return self.folder / "hostkey"

    @property
    def authorized_keys(self) -> Path:
        return self.folder / "authorized_keys"

    def known_hosts(self, port: int, host: str = "127.0.0.1", name: str = "known_hosts") -> Path:
        """Write a known_hosts file pinning this host key for ``host:port``; return its path."""
        path = self.folder / name
        pub = self.hostkey.with_suffix(".pub").read_text().split()
        entry = host if port == 22 else f"[{host}]:{port}"
        path.write_text(f"{entry} {pub[0]} {pub[1]}\n")
        return path


def make_keys(folder: Path) -> SSHKeys:
    """Generate fresh ed25519 client and host keys in ``folder`` (created, mode 0700)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    keys = SSHKeys(folder)
    for path in (keys.client, keys.hostkey):
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                           check=True)
    keys.authorized_keys.write_text(keys.client.with_suffix(".pub").read_text())
    keys.authorized_keys.chmod(0o644)
    return keys
