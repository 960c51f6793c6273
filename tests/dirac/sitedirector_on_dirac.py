"""Run by the DIRAC venv's interpreter (stacks/dirac_venv.py), not collected by pytest: the SiteDirector's calls on
an ``IntercedeComputingElement`` made by DIRAC's own ``ComputingElementFactory`` (``CEType = Intercede``, found in the
IntercedeDIRAC extension), on DIRAC's real ``ComputingElement`` base, against one intercede CE.

    python -m tests.dirac.sitedirector_on_dirac <CE config JSON> <work dir> <report file>

Writes a JSON report to ``<report file>``: which base the plug-in derived from, each call's answer and whether DIRAC's
own ``isReturnStructure`` accepts it; the test (tests/contract/test_dirac_sitedirector.py) asserts on it. The file,
not stdout, carries the report: DIRAC's gLogger writes to stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from DIRAC.Core.Utilities.ReturnValues import isReturnStructure, returnValueOrRaise
from DIRAC.Resources.Computing.ComputingElement import ComputingElement
from DIRAC.Resources.Computing.ComputingElementFactory import ComputingElementFactory

from intercede.dirac import HAVE_DIRAC, IntercedeComputingElement


def main(config: dict[str, Any], work: Path, report_file: Path) -> None:
    answers: dict[str, Any] = {}
    made = ComputingElementFactory().getCE(ceType="Intercede", ceName="intercede-test-ce",
                                           ceParametersDict={"IntercedeCEConfig": json.dumps(config),
                                                             "MaxTotalJobs": 20, "MaxWaitingJobs": 10})
    ce = returnValueOrRaise(made)
    report: dict[str, Any] = {
        "have_dirac": HAVE_DIRAC, "ce_class": f"{type(ce).__module__}.{type(ce).__qualname__}",
        "is_intercede_ce": isinstance(ce, IntercedeComputingElement),
        "is_dirac_ce": isinstance(ce, ComputingElement), "ce_type": ce.ceType,
        "bases": [f"{c.__module__}.{c.__qualname__}" for c in type(ce).__mro__], "answers": answers,
    }
    try:
        answers["available"] = ce.available()
        wrapper = work / "pilotwrapper.sh"
        wrapper.write_text('#!/bin/bash\necho "pilot wrapper ran in $PWD"; echo "to stderr" >&2\n')
        wrapper.chmod(0o755)
        answers["submitJob"] = submitted = ce.submitJob(str(wrapper), "", 2)  # SiteDirector: proxy "" positional
        refs = returnValueOrRaise(submitted)
        stamped = [f"{ref}:::{submitted['PilotStampDict'][ref]}" for ref in refs]  # as PilotAgentsDB hands them
        deadline = time.monotonic() + 180
        while True:
            answers["getJobStatus"] = status = ce.getJobStatus(stamped)
            states = set(returnValueOrRaise(status).values())
            if states <= {"Done", "Failed", "Aborted"} or time.monotonic() > deadline:
                break
            time.sleep(1)
        answers["getJobOutput"] = ce.getJobOutput(stamped[0])
        answers["getJobLog"] = ce.getJobLog(refs[1])
        answers["getCEStatus"] = ce.getCEStatus()
        answers["getJobStatus of another CE"] = ce.getJobStatus(["intercede://some-other-ce/1"])
        answers["killJob of a non-reference"] = ce.killJob(["not-a-reference"])
        answers["cleanJob"] = ce.cleanJob(refs)
    finally:
        ce.close()
    report["return_structures"] = {name: isReturnStructure(answer) for name, answer in answers.items()}
    report_file.write_text(json.dumps(report, default=repr))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
