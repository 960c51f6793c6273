"""Record real A-REX REST answers for the parser tests: ``.venv/bin/python -m tests.data.arc.record [6.17 7.0 7.2]``.

For each release it starts the real stack (``stacks/arc_stack.py``), talks to it with the backend's own
:class:`~intercede.backends.arc._rest.RestClient` (proxy auth, verified TLS), drives jobs into the states it can
provoke (finished, failed with exit 3, running, killed, cleaned, refused at submit) and writes under
``tests/data/arc/<release>/``:

* ``<capture>.json`` — the JSON the CE answered (versions, GLUE2 ``info``, submit, bulk ``status``/``info``/``kill``/
  ``clean``, session listings),
* ``states.json`` — every REST state each job was seen in while polling every 0.3 s (the observed state map),
* ``captures.json`` — the ARC version and the ids.

Releases run one after another (CPU is scarce); one takes about a minute.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from intercede.backends.arc import _adl, _parse
from intercede.backends.arc._rest import RestClient
from intercede.model import JobSpec, OutputFile, Resources
from stacks import harness
from stacks.arc_stack import ARC_VERSIONS, ARCStack, arc_stack

HERE = Path(__file__).resolve().parent
UNKNOWN = "ffffffffffff"

SPECS = {
    "ok": JobSpec(executable="/bin/sh", arguments=["-c", "echo out; mkdir -p d/e; echo f > d/e/f"], tag="rec-ok",
                  output_files=[OutputFile(name="d/e/f")]),
    "fail": JobSpec(executable="/bin/sh", arguments=["-c", "exit 3"], tag="rec-fail"),
    "sleep": JobSpec(executable="/bin/sh", arguments=["-c", "sleep 600"], tag="rec-sleep"),
}


class Recorder:
    def __init__(self, stack: ARCStack, release: str) -> None:
        self.stack, self.out = stack, HERE / release
        self.rest = RestClient(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file)
        self.states: dict[str, list[str]] = {}

    def save(self, name: str, doc: Any) -> Any:
        (self.out / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return doc

    async def bulk(self, name: str, action: str, ids: list[str]) -> Any:
        answer = await self.rest.call("POST", "jobs", params={"action": action}, json={"job": [{"id": i} for i in ids]})
        return self.save(name, answer.json())

    async def poll(self, ids: dict[str, str], until: set[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self.rest.call("POST", "jobs", params={"action": "info"},
                                          json={"job": [{"id": i} for i in ids.values()]})
            entries = _parse.bulk(answer.json())
            done = True
            for role, job_id in ids.items():
                act = _parse.activity(entries[job_id]) if job_id in entries else None
                word = act.state if act else f"<{entries[job_id].code if job_id in entries else 'absent'}>"
                seen = self.states.setdefault(role, [])
                if not seen or seen[-1] != word:
                    seen.append(word)
                done = done and word in until
            if done:
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"not in {until} after {timeout} s: {self.states}")

    async def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        versions = self.save("rest_versions", (await self.rest._send("GET", self.rest._url("", False), "rest")).json())
        await self.rest.negotiate()
        self.save("glue2_info_idle", (await self.rest.call("GET", "info")).json())
        body = _adl.bundle([_adl.plan(s, 0).xml for s in SPECS.values()]
                           + [_adl.plan(JobSpec(executable="true", resources=Resources(queue="nosuch")), 0).xml])
        sub = self.save("submit", (await self.rest.call(
            "POST", "jobs", params={"action": "new"}, content=body.encode(),
            headers={"Content-Type": "application/xml"}, creates=True, expect_ok=False)).json())
        ids = {role: e.job_id for role, e in zip(SPECS, _parse.submitted(sub, 4), strict=False) if e.job_id}
        for role, spec in SPECS.items():  # the client-pushed inputs (the launcher) the jobs wait for
            for path, data in _adl.plan(spec, 0).uploads.items():
                await self.rest.call("PUT", f"jobs/{ids[role]}/session/{path}", content=data)
        await self.bulk("status_fresh", "status", list(ids.values()))
        await self.bulk("info_fresh", "info", list(ids.values()))
        await self.poll({"sleep": ids["sleep"]}, {"RUNNING"})
        self.save("glue2_info_busy", (await self.rest.call("GET", "info")).json())
        await self.bulk("info_running", "info", [ids["sleep"]])
        await self.bulk("kill", "kill", [ids["sleep"], UNKNOWN])
        await self.poll(ids, {"FINISHED", "FAILED", "KILLED"})
        await self.bulk("status_final", "status", [*ids.values(), UNKNOWN])
        await self.bulk("info_final", "info", [*ids.values(), UNKNOWN])
        self.save("list_session", (await self.rest.call("GET", f"jobs/{ids['ok']}/session")).json())
        self.save("list_session_d", (await self.rest.call("GET", f"jobs/{ids['ok']}/session/d")).json())
        self.save("list_session_d_e", (await self.rest.call("GET", f"jobs/{ids['ok']}/session/d/e")).json())
        self.save("jobs_list", (await self.rest.call("GET", "jobs")).json())
        diag = await self.rest.call("GET", f"jobs/{ids['fail']}/diagnose/failed", expect_ok=False)
        (self.out / "diagnose_failed.txt").write_text(diag.text)
        await self.bulk("clean", "clean", [*ids.values(), UNKNOWN])
        await self.poll(ids, {"<404>"}, 60)
        await self.bulk("info_cleaned", "info", list(ids.values()))
        self.save("states", self.states)
        self.save("captures", {"version": self.stack.version, "rest": _parse.versions(versions), "jobs": ids,
                               "unknown": UNKNOWN})
        await self.rest.aclose()


def main(releases: list[str]) -> None:
    harness.engine()
    for release in releases:
        with arc_stack(release) as stack:
            asyncio.run(Recorder(stack, release).run())
            print(f"[record] ARC {stack.version}: {HERE / release}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:] or list(ARC_VERSIONS))
