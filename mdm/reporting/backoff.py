"""Moved to ``mdm.core.backoff`` (the EAS runner uses it too); this name stays until
``mdm.reporting.service`` imports the core module directly."""

from mdm.core.backoff import MAX_RETRY_AFTER, Backoff

__all__ = ["MAX_RETRY_AFTER", "Backoff"]
