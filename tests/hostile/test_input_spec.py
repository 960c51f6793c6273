"""Hostile job specs refused at validation, with messages that never quote a secret (issue 14, item 5)."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest
from pydantic import ValidationError

from intercede.errors import InvalidSpecError
from intercede.model import Copy, JobSpec, parse_spec

pytestmark = pytest.mark.hostile

SECRET = "hunter2-0123456789-do-not-print"


def _everything_said(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """The message, the repr, the whole traceback with its causes, and what logging it prints."""
    logging.getLogger("tests.hostile").error("refused: %s", exc, exc_info=exc)
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc)), caplog.text])


@pytest.mark.parametrize(("case", "data"), [
    ("copies not a list", {"executable": "/bin/true", "copies": {"secrets": {"TOKEN": SECRET}}}),
    ("a copy with an unknown field", {"executable": "/bin/true", "copies": [{"secrets": {"TOKEN": SECRET},
                                                                               "bogus": 1}, "not a copy"]}),
    ("a secret that is not text", {"executable": "/bin/true", "copies": [{"secrets": {"TOKEN": [SECRET]}}]}),
    ("a secret with a lone surrogate", {"executable": "/bin/true",
                                        "copies": [{"secrets": {"TOKEN": SECRET + "\udcff"}}]}),
    ("a bad secret name", {"executable": "/bin/true", "copies": [{"secrets": {"BAD-NAME": SECRET, "OK": SECRET}}]}),
])
def test_an_invalid_spec_never_quotes_a_secret_in_its_message_traceback_or_logs(
        case: str, data: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidSpecError) as info:
        parse_spec(data)
    said = _everything_said(info.value, caplog)
    assert "copies" in str(info.value), case  # still names the bad field
    assert SECRET not in said and SECRET[:12] not in said, case


def test_a_spec_built_directly_never_quotes_a_secret_either(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec(executable="/bin/true", copies={"secrets": {"TOKEN": SECRET}})
    assert SECRET not in _everything_said(info.value, caplog)


@pytest.mark.parametrize(("field", "data"), [
    ("arguments.0", {"executable": "/bin/echo", "arguments": ["ok\udcff"]}),
    ("executable", {"executable": "/bin/\udcff"}),
    ("environment.NAME", {"executable": "/bin/true", "environment": {"NAME": "v\udcffv"}}),
    ("copies.0.variables.NAME", {"executable": "/bin/true", "copies": [{"variables": {"NAME": "\ud800"}}]}),
    ("copies.0.secrets.TOKEN", {"executable": "/bin/true", "copies": [{"secrets": {"TOKEN": "\udcff"}}]}),
    ("resources.queue", {"executable": "/bin/true", "resources": {"queue": "q\udcff"}}),
])
def test_lone_surrogates_are_refused_at_validation_naming_the_field(field: str, data: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpecError, match=r"surrogate|unicode string") as info:
        parse_spec(data)
    assert field in str(info.value)
    # The message itself can be printed and logged anywhere: it is valid UTF-8.
    str(info.value).encode("utf-8")


def test_valid_unicode_is_still_accepted_byte_exact() -> None:
    spec = JobSpec(executable="/bin/echo", arguments=["héllo", "日本", "emoji \U0001f600"],
                   environment={"GREETING": "grüß"}, copies=[Copy(secrets={"TOKEN": "pässwörd"})])
    assert spec.arguments[2] == "emoji \U0001f600"
    assert spec.copies[0].secrets["TOKEN"].get_secret_value() == "pässwörd"
