"""Desired vs observed job state -> idempotent actions: the pure diff, its durable journal, and the executor.

Never imports ``intercede.backends`` or ``ray``: a CE is reached through the :class:`CEGateway` Protocol.
"""

from intercede.reconcile.clock import Clock, FakeClock, SystemClock
from intercede.reconcile.diff import Plan, apply_success, decide, diff, plan, wake_at
from intercede.reconcile.executor import Executor
from intercede.reconcile.gateway import CEGateway
from intercede.reconcile.journal import Journal
from intercede.reconcile.journal_store import JournalStore
from intercede.reconcile.journals import open_journal
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.reconciler import KeyRow, Reconciler
from intercede.reconcile.state import (
    Action,
    Adopt,
    Cancel,
    Desired,
    Fetch,
    Forget,
    Observation,
    Phase,
    Progress,
    Purge,
    Reachability,
    Submit,
    validate_key,
)
from intercede.reconcile.tracker import ReconcileState
from intercede.reconcile.verify import ManifestConflictError, ManifestMismatchError, verify_manifest

__all__ = [
    "Action",
    "Adopt",
    "CEGateway",
    "Cancel",
    "Clock",
    "Desired",
    "Executor",
    "FakeClock",
    "Fetch",
    "Forget",
    "Journal",
    "JournalStore",
    "KeyRow",
    "ManifestConflictError",
    "ManifestMismatchError",
    "Observation",
    "Phase",
    "Plan",
    "Progress",
    "Purge",
    "Reachability",
    "ReconcileState",
    "Reconciler",
    "RetryPolicy",
    "Submit",
    "SystemClock",
    "apply_success",
    "decide",
    "diff",
    "open_journal",
    "plan",
    "validate_key",
    "verify_manifest",
    "wake_at",
]
