"""How the reconciler retries: per-job exponential backoff, temporary vs permanent errors, per-CE submit limits."""

from __future__ import annotations

import builtins
import random
from dataclasses import dataclass

from intercede.errors import OutputBoundError, TransferError, is_temporary

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry and rate settings of a reconciler.

    ``delay(n)`` is the wait after the ``n``-th consecutive failure of a job's step: ``base * factor**(n-1)``, capped
    at ``cap`` seconds. With ``jitter`` > 0 the delay is shortened by up to that fraction, drawn deterministically from
    ``(seed, key, n)`` so that a plan stays reproducible while jobs failing together do not retry in lockstep.
    ``submits_per_tick`` bounds the submits planned per CE in one tick (a caller may pass a tighter per-CE budget).
    ``cancel_resend_after`` is how long a cancel is given to show up as a terminal state before it is sent again.
    ``purge_cancelled_after`` is how long after its cancel was sent a cancelled job's remote files are kept (a
    ``collect`` may still fetch them) before they are purged.
    ``live_attempt_tries`` is how many times Adopt looks again for a job that claimed an earlier attempt's fence (it
    runs, but its tag does not find it) before giving the key a permanent error rather than ever resubmitting it.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.0
    seed: int = 0
    submits_per_tick: int = 100
    cancel_resend_after: float = 60.0
    purge_cancelled_after: float = 600.0
    live_attempt_tries: int = 6

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("backoff needs base >= 0, cap >= 0 and factor >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter is a fraction in [0, 1], got {self.jitter}")
        if self.submits_per_tick < 0 or self.cancel_resend_after < 0 or not self.purge_cancelled_after >= 0:
            raise ValueError("submits_per_tick, cancel_resend_after and purge_cancelled_after must not be negative")
        if self.live_attempt_tries < 1:
            raise ValueError("live_attempt_tries must be at least 1")

    def delay(self, attempts: int, key: str = "") -> float:
        """Seconds to wait after ``attempts`` consecutive failures (``attempts`` >= 1)."""
        exponent = max(attempts, 1) - 1
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.cap
        delay = min(raw, self.cap)
        if self.jitter:
            # random.Random seeded with a str hashes it with SHA-512: stable across processes and PYTHONHASHSEED.
            draw = random.Random(f"{self.seed}:{key}:{attempts}").random()  # noqa: S311 - not for security
            delay *= 1.0 - self.jitter * draw
        return delay

    @staticmethod
    def is_temporary(error: BaseException) -> bool:
        """Whether retrying later may help. The rest is permanent and surfaced to the WMS.

        Temporary: what :func:`intercede.errors.is_temporary` says (ConnectivityError, TimeoutError), the builtin
        timeouts and dropped connections a gateway may let through, and a failed transfer (including a fetched
        manifest that does not verify), except :class:`OutputBoundError`, which the same outputs would hit again.
        Permanent: InvalidSpecError, AuthenticationError, UnsupportedError, CommandError (a refusal) and anything
        unexpected, so that a bug stops one key loudly instead of retrying it forever.
        """
        if is_temporary(error):
            return True
        if isinstance(error, OutputBoundError):
            return False
        return isinstance(error, TransferError | builtins.TimeoutError | ConnectionError)
