"""Typed keys of the SCEP services in ``ServerContext.services`` (set by the SCEP plugin)."""

from __future__ import annotations

from mdm.scep.approval_service import ScepApprovals
from mdm.scep.service import ScepService
from mdm.server.context import ServiceKey

# The protocol service; present only when ``scep.enabled``.
SCEP = ServiceKey("scep.service", ScepService)
# The approval queue; always present (requests left pending stay manageable).
APPROVALS = ServiceKey("scep.approvals", ScepApprovals)
