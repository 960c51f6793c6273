"""The backends the contract suite runs against: every backend x stack x version, each a real resource.

A :class:`Case` knows how to build its backend inside a running stack and carries what differs per resource
(e.g. a spec the resource refuses). Stacks are started once per session by the fixtures in ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from intercede.backends.capabilities import JobBackend
from intercede.model import JobSpec, Resources


@dataclass(frozen=True)
class Case:
    id: str
    marks: tuple[pytest.MarkDecorator, ...]
    #: fixture name of the session-scoped stack this case needs (None: runs on this machine)
    stack: str | None
    #: builds a fresh backend from the stack object (or None)
    build: Callable[[Any], JobBackend]
    #: a spec this resource must refuse at submit, with a word the reason must contain
    refused: tuple[JobSpec, str] = field(
        default=(JobSpec(executable="true", container="docker://nope"), "container"))
    #: for resources with a queue a finished job leaves: waits (given the stack and the job id) until it has left,
    #: so the test can check that history still reports it
    left_queue: Callable[[Any, str], Awaitable[None]] | None = None


def slurm_refused() -> tuple[JobSpec, str]:
    return JobSpec(executable="true", resources=Resources(queue="no-such-partition")), "partition"
