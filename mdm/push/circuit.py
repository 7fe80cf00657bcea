"""The circuit breaker both push clients keep: refused credentials open it, and until the
certificate or key is replaced (or it is reset) a send answers UNAVAILABLE without touching the
network, so that a revoked certificate does not turn into a retry storm against Apple or Google."""

from __future__ import annotations

import logging

from mdm.push.types import Outcome, PushResult

log = logging.getLogger("mdm.push")


class Circuit:
    def __init__(self, service: str) -> None:
        self.service = service
        self.reason = ""

    @property
    def is_open(self) -> bool:
        return bool(self.reason)

    def open(self, reason: str, alert: str) -> None:
        """Open it (``alert`` is logged once, when it opens)."""
        if not self.reason:
            log.error("%s", alert)
        self.reason = reason

    def reset(self) -> None:
        if self.reason:
            log.info("%s circuit closed again (was open: %s)", self.service, self.reason)
        self.reason = ""

    def refusal(self) -> PushResult | None:
        """The answer of a send while open, else None."""
        return PushResult(Outcome.UNAVAILABLE, f"circuit open: {self.reason}") if self.reason else None
