"""What only SSHTransport has: one reused connection, reconnects, and every connection fault as its own typed error."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.errors import AuthenticationError, ConnectivityError, HostKeyError
from stacks import harness
from stacks.ssh_stack import SSHStack

pytestmark = pytest.mark.transport


def restarted(transport: SSHTransport, sshd: SSHStack, jump_sshd: SSHStack) -> SSHStack:
    """The sshd whose restart drops ``transport``'s connection: the jump host's when there is one."""
    return jump_sshd if transport.jump else sshd


# -- one connection -----------------------------------------------------------------------------------------------

async def test_sequential_and_concurrent_commands_share_one_connection(ssh_transport: SSHTransport) -> None:
    await ssh_transport.run(["true"])
    before = ssh_transport.connections_opened
    for _ in range(5):
        assert (await ssh_transport.run(["true"])).ok
    results = await asyncio.gather(*(ssh_transport.run(["echo", str(i)]) for i in range(60)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(60)]
    assert ssh_transport.connections_opened == before


async def test_concurrent_first_calls_open_exactly_one_connection(sshd: SSHStack, jump_sshd: SSHStack) -> None:
    for jump in (None, jump_sshd.endpoint()):
        async with SSHTransport(sshd.endpoint(), jump=jump) as fresh:
            assert fresh.connections_opened == 0  # construction does no I/O
            results = await asyncio.gather(*(fresh.run(["sh", "-c", "sleep 0.1; echo $0", str(i)])
                                             for i in range(50)))
            assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(50)]
            assert fresh.connections_opened == 1


async def test_more_channels_than_the_server_allows_wait_instead_of_failing(sshd: SSHStack) -> None:
    # sshd allows MaxSessions=10 channels per connection; 40 allowed here means the server refuses some opens.
    async with SSHTransport(sshd.endpoint(), max_sessions=40) as t:
        results = await asyncio.gather(*(t.run(["sh", "-c", "sleep 0.3; echo $0", str(i)]) for i in range(50)))
        assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(50)]
        assert t.connections_opened == 1


async def test_transfers_and_commands_share_the_connection(ssh_transport: SSHTransport, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"payload")
    await ssh_transport.run(["true"])
    before = ssh_transport.connections_opened
    await asyncio.gather(*(ssh_transport.put(tmp_path / "f", f"/tmp/shared-{i}") for i in range(20)),
                         *(ssh_transport.run(["true"]) for _ in range(20)))
    await ssh_transport.run(["sh", "-c", "rm -f /tmp/shared-*"])
    assert ssh_transport.connections_opened == before


# -- reconnect ----------------------------------------------------------------------------------------------------

async def test_a_restarted_sshd_is_reconnected_to_transparently(ssh_transport: SSHTransport, sshd: SSHStack,
                                                                jump_sshd: SSHStack, tmp_path: Path) -> None:
    await ssh_transport.run(["true"])
    before = ssh_transport.connections_opened
    await asyncio.to_thread(restarted(ssh_transport, sshd, jump_sshd).restart_sshd)
    assert (await ssh_transport.run(["echo", "back"])).stdout == b"back\n"
    (tmp_path / "f").write_bytes(b"after restart")
    await ssh_transport.put(tmp_path / "f", "/tmp/after-restart")
    assert (await ssh_transport.run(["cat", "/tmp/after-restart"])).stdout == b"after restart"
    assert ssh_transport.connections_opened == before + 1


async def test_a_drop_not_yet_noticed_is_retried_once_on_a_new_connection(ssh_transport: SSHTransport,
                                                                          sshd: SSHStack, jump_sshd: SSHStack) -> None:
    await ssh_transport.run(["true"])
    before = ssh_transport.connections_opened
    restarted(ssh_transport, sshd, jump_sshd).restart_sshd()  # blocks the loop: the drop is seen only by the next call
    results = await asyncio.gather(*(ssh_transport.run(["echo", str(i)]) for i in range(20)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(20)]
    assert ssh_transport.connections_opened == before + 1


async def test_a_transfer_after_an_unnoticed_drop_succeeds_on_a_new_connection(
        ssh_transport: SSHTransport, sshd: SSHStack, jump_sshd: SSHStack, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    await ssh_transport.put(tmp_path / "f", "/tmp/before-drop")  # the SFTP session exists now
    before = ssh_transport.connections_opened
    restarted(ssh_transport, sshd, jump_sshd).restart_sshd()  # blocks the loop: the drop is seen only by the put
    await ssh_transport.put(tmp_path / "f", "/tmp/after-drop")
    await ssh_transport.get("/tmp/after-drop", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"x" * 100_000
    assert ssh_transport.connections_opened == before + 1


async def test_a_command_running_when_the_connection_drops_raises_and_is_not_rerun(
        ssh_transport: SSHTransport, sshd: SSHStack, jump_sshd: SSHStack) -> None:
    log = f"/tmp/ran-{id(ssh_transport)}-{time.monotonic_ns()}"
    running = asyncio.create_task(ssh_transport.run(["sh", "-c", 'echo ran >> "$0"; sleep 5', log]))
    for _ in range(100):  # wait until it has started
        if (await ssh_transport.run(["cat", log])).ok:
            break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(restarted(ssh_transport, sshd, jump_sshd).restart_sshd)
    with pytest.raises(ConnectivityError, match="may have run"):
        await running
    assert (await ssh_transport.run(["cat", log])).stdout == b"ran\n"


# -- faults: each its own typed error, with a message that says what to fix --------------------------------------

async def test_a_wrong_pinned_host_key_is_refused(sshd: SSHStack, jump_sshd: SSHStack, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {jump_sshd.keys.hostkey.with_suffix('.pub').read_text()}")
    async with SSHTransport(sshd.endpoint(known_hosts=wrong)) as t:
        with pytest.raises(HostKeyError, match=re.escape(f"pinned for 127.0.0.1:{sshd.port} in {wrong}")):
            await t.run(["true"])


async def test_a_known_hosts_without_the_host_is_refused(sshd: SSHStack, tmp_path: Path) -> None:
    other = sshd.keys.known_hosts(port=sshd.port + 1, name="other_known_hosts")
    async with SSHTransport(sshd.endpoint(known_hosts=other)) as t:
        with pytest.raises(HostKeyError, match="host missing there, or its key changed"):
            await t.run(["true"])


async def test_a_wrong_pinned_key_for_the_jump_host_names_the_jump_host(sshd: SSHStack, jump_sshd: SSHStack) -> None:
    async with SSHTransport(sshd.endpoint(), jump=jump_sshd.endpoint(known_hosts=sshd.known_hosts)) as t:
        with pytest.raises(HostKeyError, match=r"jump host"):
            await t.run(["true"])


async def test_a_missing_known_hosts_file_is_named(sshd: SSHStack, tmp_path: Path) -> None:
    async with SSHTransport(sshd.endpoint(known_hosts=tmp_path / "absent_known_hosts")) as t:
        with pytest.raises(HostKeyError, match="absent_known_hosts"):
            await t.run(["true"])


async def test_a_missing_client_key_file_is_named(sshd: SSHStack, tmp_path: Path) -> None:
    async with SSHTransport(sshd.endpoint(client_keys=[tmp_path / "no_such_key"])) as t:
        with pytest.raises(AuthenticationError, match=re.escape(f"cannot read client key {tmp_path}/no_such_key")):
            await t.run(["true"])


async def test_a_client_key_the_server_does_not_know_is_refused(sshd: SSHStack, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    keygen = await asyncio.create_subprocess_exec("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    assert await keygen.wait() == 0
    async with SSHTransport(sshd.endpoint(client_keys=[key])) as t:
        with pytest.raises(AuthenticationError, match="refused the client key") as err:
            await t.run(["true"])
    assert not isinstance(err.value, HostKeyError)


async def test_an_unreachable_host_raises_connectivity_error_within_the_connect_timeout(sshd: SSHStack) -> None:
    # 203.0.113.0/24 is TEST-NET-3: packets are dropped (or the network is unreachable). Either way the resource
    # cannot be reached: ConnectivityError (temporary), never a hang past connect_timeout.
    start = time.monotonic()
    async with SSHTransport(sshd.endpoint(host="203.0.113.1", port=22), connect_timeout=1.0) as t:
        with pytest.raises(ConnectivityError, match=re.escape("203.0.113.1")):
            await t.run(["true"])
    assert time.monotonic() - start < 5


async def test_a_server_that_never_answers_raises_connectivity_error_after_the_connect_timeout(
        sshd: SSHStack) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    start = time.monotonic()
    try:
        async with SSHTransport(sshd.endpoint(port=port), connect_timeout=1.0) as t:
            with pytest.raises(ConnectivityError, match=r"no SSH answer within the 1\.0 s connect timeout"):
                await t.run(["true"])
    finally:
        server.close()
    assert 1 <= time.monotonic() - start < 5


async def test_a_refused_port_raises_connectivity_error(sshd: SSHStack) -> None:
    port = harness.free_port()
    async with SSHTransport(sshd.endpoint(port=port), connect_timeout=5.0) as t:
        with pytest.raises(ConnectivityError, match=re.escape(f"127.0.0.1:{port}: cannot connect: Connection refused")):
            await t.run(["true"])


async def test_a_failed_connect_is_not_retried_forever_and_the_next_call_tries_again(sshd: SSHStack) -> None:
    port = harness.free_port()
    async with SSHTransport(sshd.endpoint(port=port), connect_timeout=5.0) as t:
        for _ in range(2):
            with pytest.raises(ConnectivityError):
                await t.run(["true"])
        assert t.connections_opened == 0


# -- no secrets in reprs ------------------------------------------------------------------------------------------

async def test_reprs_never_show_key_material(ssh_transport: SSHTransport, sshd: SSHStack) -> None:
    await ssh_transport.run(["true"])  # keys are loaded now
    secret_lines = [line for line in sshd.client_key.read_text().splitlines() if "PRIVATE KEY" not in line]
    shown = " ".join([repr(ssh_transport), str(ssh_transport), repr(sshd.endpoint()), str(sshd.endpoint()),
                      repr(sshd), sshd.endpoint().model_dump_json(), repr(vars(ssh_transport))])
    assert all(line not in shown for line in secret_lines)
    assert "ssh://tester@127.0.0.1:" in repr(ssh_transport)


def test_the_name_says_user_host_port_and_jump() -> None:
    ep = SSHEndpoint(host="ce.example.org", username="wms", client_keys=[Path("/k")], known_hosts=Path("/kh"))
    assert SSHTransport(ep).name == "ssh://wms@ce.example.org:22"
    assert SSHTransport(ep, jump=ep).name == "ssh://wms@ce.example.org:22 via jump"
    with pytest.raises(ValueError):
        SSHTransport(ep, max_sessions=0)
