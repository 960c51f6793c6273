"""The Transport contract, the same for every transport: Local, SSH and SSH through a jump host."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercede.backends.transports.base import Transport
from intercede.errors import CommandNotFoundError, TimeoutError, TransferError
from tests.transport.conftest import make_transport

pytestmark = pytest.mark.transport

MB = 1024 * 1024


async def test_run_returns_stdout_stderr_and_a_zero_exit_status(transport: Transport) -> None:
    result = await transport.run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.exit_status, result.stdout, result.stderr) == (0, b"out\n", b"err\n")
    assert result.ok and result.argv == ("sh", "-c", "echo out; echo err >&2") and result.duration >= 0


@pytest.mark.parametrize("status", [1, 2, 3, 42, 126, 255])
async def test_a_non_zero_exit_status_is_returned_not_raised(transport: Transport, status: int) -> None:
    result = await transport.run(["sh", "-c", f"echo failing >&2; exit {status}"])
    assert result.exit_status == status and not result.ok and result.stderr == b"failing\n"


async def test_stdin_is_fed_to_the_command_and_closed(transport: Transport) -> None:
    assert (await transport.run(["cat"], stdin=b"line 1\nline 2\n")).stdout == b"line 1\nline 2\n"
    assert (await transport.run(["wc", "-c"], stdin=b"")).stdout.strip() == b"0"


async def test_a_command_without_stdin_sees_end_of_file_at_once(transport: Transport) -> None:
    result = await transport.run(["cat"], timeout=10)
    assert result.ok and result.stdout == b""


async def test_a_missing_program_raises_command_not_found(transport: Transport) -> None:
    with pytest.raises(CommandNotFoundError, match="no-such-program-x9"):
        await transport.run(["no-such-program-x9", "--help"])


async def test_output_of_more_than_10_mb_comes_back_whole(transport: Transport) -> None:
    result = await transport.run(["sh", "-c", "head -c 12582912 /dev/zero | tr '\\0' 'x'"])
    assert result.ok and len(result.stdout) == 12 * MB and result.stdout == b"x" * (12 * MB)


async def test_stdin_of_more_than_10_mb_reaches_the_command_intact(transport: Transport) -> None:
    data = os.urandom(11 * MB)
    result = await transport.run(["sha256sum"], stdin=data)
    assert result.text.split()[0] == hashlib.sha256(data).hexdigest()


async def test_put_then_get_round_trips_every_byte_value(transport: Transport, workdir: str,
                                                         tmp_path: Path) -> None:
    data = bytes(range(256)) * 257
    (tmp_path / "all-bytes").write_bytes(data)
    await transport.put(tmp_path / "all-bytes", f"{workdir}/all-bytes")
    assert (await transport.run(["cat", f"{workdir}/all-bytes"])).stdout == data
    await transport.get(f"{workdir}/all-bytes", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data


async def test_files_of_more_than_10_mb_round_trip_exactly(transport: Transport, workdir: str,
                                                           tmp_path: Path) -> None:
    data = os.urandom(13 * MB + 17)
    (tmp_path / "big").write_bytes(data)
    await transport.put(tmp_path / "big", f"{workdir}/big", timeout=120)
    remote_sum = (await transport.run(["sha256sum", f"{workdir}/big"])).check().text.split()[0]
    assert remote_sum == hashlib.sha256(data).hexdigest()
    await transport.get(f"{workdir}/big", tmp_path / "big.back", timeout=120)
    assert (tmp_path / "big.back").read_bytes() == data


async def test_a_file_written_by_a_command_can_be_fetched(transport: Transport, workdir: str, tmp_path: Path) -> None:
    await transport.run(["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", "made remotely", f"{workdir}/made"])
    await transport.get(f"{workdir}/made", tmp_path / "made")
    assert (tmp_path / "made").read_bytes() == b"made remotely"


async def test_put_of_a_missing_local_file_names_it(transport: Transport, workdir: str, tmp_path: Path) -> None:
    missing = tmp_path / "not-here.txt"
    with pytest.raises(TransferError, match=r"not-here\.txt"):
        await transport.put(missing, f"{workdir}/x")


async def test_get_of_a_missing_remote_file_names_it_and_leaves_nothing(transport: Transport, workdir: str,
                                                                        tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no-such-remote-file"):
        await transport.get(f"{workdir}/no-such-remote-file", tmp_path / "dest")
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a tiny local directory


async def test_a_command_past_its_timeout_is_killed_promptly_and_the_transport_stays_usable(
        transport: Transport) -> None:
    duration = f"30.{secrets.randbelow(10**6):06d}"  # a unique sleep, to find it among processes
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="within 1"):
        await transport.run(["sleep", duration], timeout=1)
    assert time.monotonic() - start < 5
    assert (await transport.run(["echo", "still usable"], timeout=10)).stdout == b"still usable\n"
    marker = b"sleep\0" + duration.encode() + b"\0"
    for _ in range(50):  # the kill is asynchronous: give it a moment
        listing = await transport.run(["sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null; true"])
        if marker not in listing.stdout:
            break
        await asyncio.sleep(0.1)
    assert marker not in listing.stdout, "the timed-out process is still running"


async def test_fifty_concurrent_commands_all_complete_with_their_own_output(transport: Transport) -> None:
    results = await asyncio.gather(*(transport.run(["sh", "-c", "sleep 0.2; echo $0", str(i)]) for i in range(60)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(60)]


HOSTILE = st.sampled_from(["'", '"', "\\", "$(id)", "`id`", "${HOME}", "$0", "\n", "\r\n", ";", "|", "&", "&&",
                           "*", "?", "[a-z]", "~", "-", "--", "-n", "-e", "#", "!", "%s", "%", " ", "\t", "é", "漢字",
                           "🚀", "\u200b", "\x7f", "\xff"])
LATIN1 = st.characters(min_codepoint=1, max_codepoint=255)
ANY_CHAR = st.characters(exclude_categories=["Cs"], min_codepoint=1)  # every character that can be UTF-8 encoded
ARG = st.lists(HOSTILE | LATIN1 | ANY_CHAR, max_size=12).map("".join)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(ARG, min_size=1, max_size=8))
async def test_hostile_arguments_reach_the_remote_process_exactly(transport: Transport, args: list[str]) -> None:
    result = await transport.run(["printf", "%s\\0", *args])
    # str arguments are sent UTF-8 encoded (the remote locale is POSIX: bytes pass through untouched)
    assert result.ok, result.stderr
    assert result.stdout.split(b"\0")[:-1] == [a.encode() for a in args]


async def test_every_byte_from_1_to_255_in_one_argument_arrives_exactly(transport: Transport) -> None:
    arg = "".join(map(chr, range(1, 256)))
    result = await transport.run(["printf", "%s", arg])
    assert result.stdout == arg.encode()


@pytest.mark.parametrize("kind", ["Local", "SSH", "SSH-jump"])
async def test_a_fresh_transport_works_and_closes_idempotently(kind: str, request: pytest.FixtureRequest) -> None:
    async with make_transport(kind, request) as fresh:
        assert (await fresh.run(["echo", "hi"])).stdout == b"hi\n"
        await fresh.aclose()
    await fresh.aclose()


async def test_stdin_the_command_never_reads_does_not_block(transport: Transport) -> None:
    result = await transport.run(["true"], stdin=os.urandom(11 * MB), timeout=30)
    assert result.ok


async def test_stream_hands_stdout_to_the_sink_in_order_and_keeps_none_of_it(transport: Transport) -> None:
    got = hashlib.sha256()
    sizes: list[int] = []

    def sink(chunk: bytes) -> None:
        got.update(chunk)
        sizes.append(len(chunk))

    result = await transport.stream(["sh", "-c", "head -c 12582912 /dev/zero; echo err >&2; exit 3"], sink)
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"", b"err\n")
    assert sum(sizes) == 12 * MB and got.hexdigest() == hashlib.sha256(bytes(12 * MB)).hexdigest()
    assert max(sizes) <= MB  # streamed in chunks, never gathered


async def test_a_sink_that_raises_stops_the_command_at_once_and_its_error_propagates(transport: Transport) -> None:
    class Enough(Exception):
        pass

    def sink(chunk: bytes) -> None:
        raise Enough

    start = time.monotonic()
    with pytest.raises(Enough):
        await transport.stream(["sh", "-c", "echo first; exec sleep 30"], sink)
    assert time.monotonic() - start < 10
    assert (await transport.run(["echo", "still usable"])).stdout == b"still usable\n"


async def test_a_stream_past_its_timeout_is_killed_and_raises_timeout(transport: Transport) -> None:
    with pytest.raises(TimeoutError):
        await transport.stream(["sleep", "30"], lambda chunk: None, timeout=0.5)
