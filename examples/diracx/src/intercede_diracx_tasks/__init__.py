"""An example DiracX task package: pilots submitted and checked through intercede (see docs/diracx.md)."""

from intercede_diracx_tasks.tasks import (
    CheckPilotsTask,
    PilotContext,
    SubmitPilotsTask,
    SubmitPilotsToCETask,
    configure,
    current,
)

__all__ = ["CheckPilotsTask", "PilotContext", "SubmitPilotsTask", "SubmitPilotsToCETask", "configure", "current"]
