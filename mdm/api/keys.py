"""Typed keys of the services the admin API builds at start-up (``ctx.services[KEY]``)."""

from __future__ import annotations

from mdm.api.auth import TokenCache
from mdm.core.bulk import BulkService
from mdm.server.context import ServiceKey

# Bulk operations: the worker that queues them, and the push service's ``PushReceipts``.
BULK = ServiceKey("api.bulk", BulkService)
# The admin API's token cache (cleared by revocations here and, on PostgreSQL, on other replicas).
TOKENS = ServiceKey("api.tokens", TokenCache)
