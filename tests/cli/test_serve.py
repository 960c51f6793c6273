"""``status``, ``cancel`` and ``collect`` attached to a live ``intercede run --serve``; its Prometheus metrics."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli.conftest import INTERCEDE, Service, assert_user_error, environment, intercede

pytestmark = pytest.mark.cli


def test_run_serve_prints_where_to_attach_and_where_the_metrics_are(service: Service) -> None:
    out = service.stdout.read_text()
    assert f"attach with `intercede status --address {service.address}`" in out
    assert re.search(r"metrics at http://\S+/metrics", out)
    assert out.count(" Done ") + out.count(" Failed ") == 4  # the sample jobs ended as the table shows


def test_status_shows_the_ce_and_every_sample_job(service: Service) -> None:
    result = service.run("status", "--address", service.address)
    assert result.code == 0, result
    assert "Traceback" not in result.both
    assert re.search(r"^intercede at \S+: 4 keys: Done 3, Failed 1", result.out, re.M), result.out
    assert re.search(r"^local\s+yes\s", result.out, re.M), result.out  # the CE table: local, reachable
    jobs = [line for line in result.out.splitlines() if line.startswith("demo-")]
    assert len(jobs) == 4 and all("collected" in line for line in jobs), result.out


def test_status_as_json_has_rows_ces_and_figures(service: Service) -> None:
    result = service.run("status", "--address", service.address, "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert sorted(r["state"] for r in data["rows"] if r["key"].startswith("demo-")) == ["Done", "Done", "Done",
                                                                                          "Failed"]
    assert [c["name"] for c in data["ces"]] == ["local"] and data["ces"][0]["reachable"]
    assert data["stats"]["ticks"] > 0


def test_cancel_stops_a_running_job_and_collect_fetches_outputs(service: Service, tmp_path: Path) -> None:
    service.declare("cli-sleeper=echo started; sleep 600", "cli-quick=echo quick-output")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # cancel what really runs, not a job not yet submitted
        rows = json.loads(service.run("status", "--address", service.address, "--json", "cli-sleeper").out)["rows"]
        if rows and rows[0]["state"] == "Running":
            break
        time.sleep(0.5)
    cancelled = service.run("cancel", "cli-sleeper", "--wait", "--timeout", "60", "--address", service.address)
    assert cancelled.code == 0, cancelled
    assert "cancel requested for 1 key(s)" in cancelled.out
    assert re.search(r"^cli-sleeper\s+local\s+cancelled\s+Aborted", cancelled.out, re.M), cancelled.out

    collected = service.run("collect", "cli-quick", "cli-sleeper", "--to", tmp_path / "out", "--timeout", "60",
                            "--address", service.address)
    assert collected.code == 0, collected
    assert re.search(r"^cli-quick\s+Done\s+0\s+yes\s", collected.out, re.M), collected.out
    assert (tmp_path / "out/cli-quick/stdout.txt").read_text() == "quick-output\n"
    assert (tmp_path / "out/cli-sleeper/stdout.txt").read_text() == "started\n"


def test_collect_puts_the_outputs_where_the_command_runs_not_where_the_actors_run(service: Service,
                                                                                  tmp_path: Path) -> None:
    # The command runs in a mount namespace of its own with a private tmpfs at --to: a file there can only have been
    # written by the command itself (the actors, outside the namespace, cannot even see it). It lists what it got
    # before the namespace (and the tmpfs) goes away.
    rows = json.loads(service.run("status", "--address", service.address, "--json").out)["rows"]
    key = next(r["key"] for r in rows if r["key"].startswith("demo-") and r["state"] == "Done")
    private = tmp_path / "private"
    private.mkdir()
    script = ('mount -t tmpfs intercede-test "$1" && "$2" collect "$3" --to "$1" --address "$4" --timeout 60 && '
              'cd "$1/$3" && find . -type f | sort | xargs sha256sum')
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(private),
                           INTERCEDE, key, service.address], env=environment(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert re.search(rf"^{key}\s+Done\s+0\s+yes\s+{private}/{key}$", proc.stdout, re.M), proc.stdout
    pulled = {name.removeprefix("./"): digest for digest, name in
              (line.split(maxsplit=1) for line in proc.stdout.splitlines() if re.match(r"^[0-9a-f]{64}  ", line))}
    area = service.folder / "intercede-data" / "fetched" / key  # the service's copy, verified by the CE actor
    expected = {str(p.relative_to(area)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in area.rglob("*") if p.is_file()}
    assert pulled == expected and "stdout.txt" in pulled, (pulled, expected)
    assert list(private.iterdir()) == [], "nothing was written where the actors run"


def test_cancel_of_an_unknown_key_changes_nothing_and_says_so(service: Service) -> None:
    result = service.run("cancel", "no-such-key", "demo-x", "--address", service.address)
    assert_user_error(result, "not declared in this intercede: no-such-key, demo-x", "`intercede status`")


def test_status_in_a_namespace_where_nothing_runs_says_how_to_start_one(service: Service) -> None:
    result = service.run("status", "--address", service.address, "--namespace", "elsewhere")
    assert_user_error(result, "no intercede is running in Ray namespace 'elsewhere'", "intercede run")


def test_the_prometheus_endpoint_has_jobs_actions_and_poll_latency(service: Service) -> None:
    endpoint = re.search(r"metrics at (http://\S+/metrics)", service.stdout.read_text())
    assert endpoint
    wanted = ("ray_intercede_jobs{", "ray_intercede_actions_total{", "ray_intercede_poll_latency_seconds_bucket{")
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # the metrics agent exports on its own schedule
        with urllib.request.urlopen(endpoint.group(1), timeout=10) as response:
            text = response.read().decode()
        if all(w in text for w in wanted):
            break
        time.sleep(1)
    assert all(w in text for w in wanted), text[-3000:]
    submits = [line for line in text.splitlines() if line.startswith("ray_intercede_actions_total{")
               and 'kind="Submit"' in line]
    assert submits and float(submits[0].rsplit(" ", 1)[1]) >= 4
    assert re.search(r'ray_intercede_jobs\{[^}]*ce="local"[^}]*state="Done"', text) or \
        re.search(r'ray_intercede_jobs\{[^}]*state="Done"[^}]*ce="local"', text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_when_no_intercede_runs_fails_fast_with_what_to_do(tmp_path: Path) -> None:
    start, port = time.monotonic(), _free_port()
    result = intercede("status", "--address", f"127.0.0.1:{port}", cwd=tmp_path, timeout=60)
    # Ray says 127.0.0.1 by the node's address
    assert_user_error(result, "no Ray cluster answers at ", f":{port};", "start it with `intercede run`")
    assert time.monotonic() - start < 30


def test_cancel_with_a_dead_ray_address_in_the_environment_fails_fast(tmp_path: Path) -> None:
    port = _free_port()
    result = intercede("cancel", "k", cwd=tmp_path, timeout=60, RAY_ADDRESS=f"127.0.0.1:{port}")
    assert_user_error(result, "no Ray cluster answers at ", f":{port};")
