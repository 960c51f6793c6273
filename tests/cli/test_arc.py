"""An ARC CE configured in the service's TOML (kind ``arc``), on the real A-REX of ARC 7.2: ``intercede ce check`` on it
(proxy and token auth, and each way a credential fails), and ``intercede serve --config`` + ``intercede declare``
driving an ARC job to collected through the CE actors.

The A-REX is the session's shared 7.2 stack (``tests.contract.cases_arc.arc_7_2``): no copy of its own.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from stacks.arc_stack import ARCStack
from tests.cli.conftest import assert_user_error, intercede
from tests.cli.test_ce_check import _steps
from tests.cli.test_declare import _until_collected, serving
from tests.contract.cases_arc import arc_7_2  # noqa: F401 - the session's shared ARC 7.2 stack

pytestmark = [pytest.mark.cli, pytest.mark.arc]


@pytest.fixture(params=["7.2"], ids=["arc-7.2"])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


def arc_config(folder: Path, stack: ARCStack, *, proxy: Path | None = None, token: Path | None = None,
               head: str = "") -> Path:
    """A config with one CE named ``arc`` of kind ``arc`` on ``stack``, CA verified, with the given credential(s)."""
    lines = [head, "[[ce]]", 'name = "arc"', 'kind = "arc"', f'endpoint = "{stack.url}"',
             f'ca_file = "{stack.ca_file}"', "poll_interval = 1.0"]
    if proxy is not None:
        lines.append(f'proxy_file = "{proxy}"')
    if token is not None:
        lines.append(f'token_file = "{token}"')
    path = folder / "arc.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _credential(stack: ARCStack, auth: str) -> dict[str, Path]:
    if auth == "token":
        return {"token": stack.token("cli-token")}
    return {"proxy": stack.proxy_file}


@pytest.mark.parametrize("auth", ["proxy", "token"])
def test_an_arc_ce_passes_every_step(stack: ARCStack, auth: str, tmp_path: Path) -> None:
    config = arc_config(tmp_path, stack, **_credential(stack, auth))
    result = intercede("ce", "check", "arc", "--config", config, cwd=tmp_path, timeout=300)
    assert result.code == 0, result
    assert "OK: CE 'arc' is usable" in result.out
    assert set(_steps(result).values()) == {"ok"}, result.out
    assert f"ce check arc: arc {stack.url}" in result.out
    assert re.search(rf"reach\s+{re.escape(stack.host)}:8443 accepts TCP connections", result.out), result.out
    assert re.search(r"authenticate\s+authenticated; A-REX speaks REST 1\.[01]", result.out), result.out
    assert re.search(r"test job\s+job \w+: Done, exit 0 \(native FINISHED\)", result.out), result.out
    assert re.search(r"clean up\s+job (\w+) purged", result.out), result.out


def test_an_arc_ce_with_a_missing_proxy_fails_at_credentials(stack: ARCStack, tmp_path: Path) -> None:
    missing = tmp_path / "x509up_missing"
    result = intercede("ce", "check", "arc", "--config", arc_config(tmp_path, stack, proxy=missing), cwd=tmp_path,
                       timeout=120)
    assert_user_error(result, "FAILED: CE 'arc' failed the credentials step",
                      f"proxy_file file {missing} does not exist", "what to do: create it or correct `proxy_file`",
                      code=1)
    assert _steps(result)["reach"] == "skip"


def test_an_arc_ce_at_a_wrong_port_fails_at_reach(stack: ARCStack, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    config = arc_config(tmp_path, stack, proxy=stack.proxy_file)
    config.write_text(config.read_text().replace(stack.url, f"https://127.0.0.1:{closed}/arex"))
    result = intercede("ce", "check", "arc", "--config", config, cwd=tmp_path, timeout=120)
    assert_user_error(result, f"FAILED: CE 'arc' failed the reach step: cannot connect to 127.0.0.1:{closed}",
                      "what to do: check `endpoint` (https://host:port/path), that A-REX runs there", code=1)


def test_an_arc_ce_with_an_expired_token_fails_at_authenticate(stack: ARCStack, tmp_path: Path) -> None:
    expired = stack.token("cli-expired", lifetime=-60)
    result = intercede("ce", "check", "arc", "--config", arc_config(tmp_path, stack, token=expired), cwd=tmp_path,
                       timeout=120)
    assert_user_error(result, "FAILED: CE 'arc' failed the authenticate step", "refused the credentials",
                      "what to do: renew the credential", "`token_file`", code=1)
    steps = _steps(result)
    assert (steps["credentials"], steps["reach"], steps["test job"]) == ("ok", "ok", "skip"), result.out
    assert expired.read_text().strip() not in result.both  # the token itself never shown


def test_an_arc_ce_with_an_expired_proxy_fails_at_authenticate(stack: ARCStack, tmp_path: Path) -> None:
    stack.check("su tester -s /bin/sh -c 'arcproxy -c validityPeriod=1 -P /tmp/x509cli' >/dev/null")
    short = stack.path("cli-short-proxy")
    short.write_text(stack.check(["cat", "/tmp/x509cli"]))
    short.chmod(0o600)
    time.sleep(2.5)  # the proxy's own validity (1 s) must pass: nothing to poll, it is the clock
    result = intercede("ce", "check", "arc", "--config", arc_config(tmp_path, stack, proxy=short), cwd=tmp_path,
                       timeout=120)
    assert_user_error(result, "FAILED: CE 'arc' failed the authenticate step", "what to do: renew the credential",
                      "`proxy_file`", code=1)
    assert _steps(result)["reach"] == "ok"
    assert "PRIVATE KEY" not in result.both


@pytest.mark.service
@pytest.mark.parametrize("stack", ["7.2"], ids=["service-arc-7.2"], indirect=True)
def test_the_service_drives_an_arc_job_to_collected(stack: ARCStack, tmp_path: Path) -> None:
    config = arc_config(tmp_path, stack, proxy=stack.proxy_file, head=f'data_dir = "{tmp_path}/data"')
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(f"""
[[job]]
key = "arc-1"
ce = "arc"
phase = "collected"
destination = "{tmp_path / 'out'}"
[job.spec]
executable = "/bin/sh"
arguments = ["-c", "echo from-arc-{stack.release}; echo kept > r.txt"]
output_files = [{{ name = "r.txt" }}]
""")
    with serving(tmp_path, "--config", config) as service:
        assert "CEs: arc" in service.stdout.read_text()
        result = service.run("declare", jobs, "--address", service.address)
        assert result.code == 0, result
        assert "declared 1 key(s) on arc" in result.out
        (row,) = _until_collected(service, "arc-1", timeout=240)
    assert row["state"] == "Done", row
    assert (tmp_path / "out/stdout.txt").read_text() == f"from-arc-{stack.release}\n"  # stdout fetched from A-REX
    assert (tmp_path / "out/r.txt").read_text() == "kept\n"
