"""Copies on a real A-REX (ARC 7.2, REST 1.1): identical descriptions go as one ``instances=N`` request, others as one
``ActivityDescriptions`` bundle; per-copy outcomes either way, per-copy secrets only in 0600 files.

Which request the backend sent is read from its own REST client (a recording wrapper around ``RestClient.call``,
which still talks to the real A-REX); what the jobs did is read from their real outputs and A-REX's own copy of each
description (``diagnose/description``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from intercede.backends.arc import ARCBackend
from intercede.model import Copy, JobSpec, JobState
from stacks.arc_stack import ARCStack
from tests.contract.cases_arc import backend_for
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.bulk]

SCRIPT = 'printf "%s %s %s" "$COPY" "$(stat -c %a "$KEY_FILE")" "$(cat "$KEY_FILE")"'


@pytest.fixture(params=["7.2"], ids=["arc-7.2"])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


def _record(backend: ARCBackend) -> list[dict[str, str]]:
    """The query parameters of every job-creating POST the backend sends from now on."""
    sent: list[dict[str, str]] = []
    call = backend.rest.call

    async def recording(method: str, path: str, **kwargs: Any) -> Any:
        if method == "POST" and path == "jobs" and (kwargs.get("params") or {}).get("action") == "new":
            sent.append(dict(kwargs["params"]))
        return await call(method, path, **kwargs)

    backend.rest.call = recording  # type: ignore[method-assign]
    return sent


async def test_untagged_copies_differing_by_variables_and_secrets_are_one_instances_request(
        stack: ARCStack, tmp_path: Path) -> None:
    copies = [Copy(variables={"COPY": str(i)}, secrets={"KEY": SecretStr(f"s3cr3t-{i}-x")}) for i in range(3)]
    spec = JobSpec(executable="/bin/sh", arguments=["-c", SCRIPT], copies=copies)
    async with backend_for(stack, "proxy") as backend:
        assert isinstance(backend, ARCBackend)
        sent = _record(backend)
        result = await backend.submit(spec)
        assert [p.get("instances") for p in sent] == ["3"], sent
        assert not result.failures and len(set(result.job_ids)) == 3
        statuses = await until_terminal(backend, result.job_ids, timeout=240)
        assert {s.state for s in statuses} == {JobState.DONE}, statuses
        for i, job_id in enumerate(result.job_ids):
            manifest = await backend.fetch(job_id, spec, tmp_path / str(i))
            assert (manifest.destination / "stdout.txt").read_text() == f"{i} 600 s3cr3t-{i}-x"
            description = (await backend.peek(job_id, "diagnose/description")).decode()
            assert "s3cr3t" not in description and "COPY" not in description
        assert all(o.ok for o in await backend.purge(result.job_ids))


async def test_tagged_copies_are_one_bundle_each_named_by_its_own_tag(stack: ARCStack) -> None:
    spec = JobSpec(executable="/bin/true", copies=[Copy(), Copy()], tag="inst-tagged-copies")
    async with backend_for(stack, "proxy") as backend:
        assert isinstance(backend, ARCBackend)
        sent = _record(backend)
        result = await backend.submit(spec)
        assert len(sent) == 1 and "instances" not in sent[0], sent
        assert not result.failures and len(result.job_ids) == 2
        found = await backend.find_by_tag([f"{spec.tag}.0", f"{spec.tag}.1"])
        assert found == {f"{spec.tag}.0": [result.job_ids[0]], f"{spec.tag}.1": [result.job_ids[1]]}
        await until_terminal(backend, result.job_ids, timeout=240)
        assert all(o.ok for o in await backend.purge(result.job_ids))


async def test_identical_copies_without_instances_are_still_one_bundle(stack: ARCStack) -> None:
    spec = JobSpec(executable="/bin/true", copies=[Copy(), Copy()])
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file, instances=False) as backend:
        sent = _record(backend)
        result = await backend.submit(spec)
        assert len(sent) == 1 and "instances" not in sent[0] and len(result.job_ids) == 2
        await until_terminal(backend, result.job_ids, timeout=240)
        assert all(o.ok for o in await backend.purge(result.job_ids))
