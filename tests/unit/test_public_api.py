"""The surface a WMS developer imports: ``from intercede import ...`` (one sorted ``__all__``), without Ray; and the
MockTransport shipped for their own unit tests (never a contract test: intercede's suites use real daemons)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import intercede
from intercede.backends.transports.base import CommandResult, Transport
from intercede.backends.transports.mock import MockTransport
from intercede.errors import ConnectivityError, TransferError


def test_all_is_sorted_and_unique() -> None:
    assert intercede.__all__ == sorted(set(intercede.__all__))


def test_every_public_name_imports() -> None:
    for name in intercede.__all__:
        assert getattr(intercede, name) is not None, name


def test_the_names_a_wms_needs_are_there() -> None:
    from intercede import Intercede, JobRequest, JobSpec, Phase, Settings  # noqa: F401

    assert Phase.COLLECTED.value == "collected"


def test_the_library_imports_and_builds_backends_without_ray() -> None:
    # Ray made unimportable: the model, the configuration and every backend still work; only the service needs it.
    script = """
import sys
sys.modules["ray"] = None
import intercede
from intercede import BatchConfig, JobSpec, Settings, build_backend
spec = JobSpec(executable="/bin/true")
ce = BatchConfig(name="x", scheduler="direct", root="/tmp/intercede-no-ray")
assert type(build_backend(ce)).__name__ == "BatchBackend"
assert Settings(ce=[ce]).ce[0] is ce
try:
    intercede.Intercede
except ImportError:
    print("service needs ray")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "service needs ray"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        intercede.no_such_name  # noqa: B018


async def test_mock_transport_answers_with_its_handler_and_records_the_calls(tmp_path: Path) -> None:
    def handler(argv: tuple[str, ...], stdin: bytes | None) -> CommandResult:
        if argv[0] == "squeue":
            return CommandResult(argv, 0, b"42|RUNNING\n", b"", 0.0)
        raise ConnectivityError("the login node is down")

    async with MockTransport(handler) as mock:
        assert isinstance(mock, Transport)
        result = await mock.run(["squeue", "--me"], stdin=b"in")
        assert (result.exit_status, result.text) == (0, "42|RUNNING\n")
        with pytest.raises(ConnectivityError):
            await mock.run(["sbatch"])
        assert mock.calls == [(("squeue", "--me"), b"in"), (("sbatch",), None)]
        (tmp_path / "in.txt").write_bytes(b"payload")
        await mock.put(tmp_path / "in.txt", "/remote/in.txt")
        await mock.get("/remote/in.txt", tmp_path / "back.txt")
        assert (tmp_path / "back.txt").read_bytes() == b"payload" == mock.files["/remote/in.txt"]
        with pytest.raises(TransferError, match="/remote/missing"):
            await mock.get("/remote/missing", tmp_path / "x")
    assert mock.closed


async def test_mock_transport_accepts_a_coroutine_handler() -> None:
    async def handler(argv: tuple[str, ...], stdin: bytes | None) -> CommandResult:
        return CommandResult(argv, 3, b"", b"no", 0.0)

    result = await MockTransport(handler).run(["false"])
    assert result.exit_status == 3 and not result.ok


def test_rows_are_typed_records_exported_from_the_package() -> None:
    import dataclasses

    from intercede import KeyRow, Phase

    row = KeyRow("k", "local", Phase.RUNNING, None, "", None, None, None, 0, None, None)
    assert dataclasses.is_dataclass(row) and row.key == "k" and row.phase == "running"
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.key = "other"  # type: ignore[misc]
