"""Scheduler dialects: pure argv builders and output parsers (Slurm, Direct, HTCondor CLI)."""

from intercede.backends.schedulers.base import BatchJob, NativeStatus, Scheduler, SubmitRequest

__all__ = ["BatchJob", "NativeStatus", "Scheduler", "SubmitRequest"]
