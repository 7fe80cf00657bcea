"""Typed keys of the reporting services in ``ServerContext.services``."""

from __future__ import annotations

from mdm.reporting.service import OutboxWorker
from mdm.reporting.service_dead import DeadLetters
from mdm.server.context import ServiceKey

WORKER = ServiceKey("reporting.worker", OutboxWorker)
DEAD_LETTERS = ServiceKey("reporting.dead_letters", DeadLetters)
