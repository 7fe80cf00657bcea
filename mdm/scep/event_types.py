"""Events of SCEP: the approval queue of requests under ``scep.manual_approval``, and one-time
tokens (SCEP challenges, which enrollment tokens and links build on) presented again."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class ScepRequestPending(EventBody):
    request_id: int
    transaction_id: str
    subject: str


class ScepRequestApproved(EventBody):
    request_id: int
    transaction_id: str
    serial: str | None
    by: str


class ScepRequestRejected(EventBody):
    request_id: int
    transaction_id: str
    by: str


class TokenReused(EventBody):
    # What was presented again: "scep_challenge" or "enrollment_link"
    kind: str
    challenge: int | None = None
    transaction_id: str | None = None
    enrollment_id: int | None = None
    peer: str | None = None


SCEP_REQUEST_PENDING = EventType(
    "scep_request_pending", Severity.INFO, ScepRequestPending, "A SCEP request waits for an administrator",
    example={"request_id": 9, "transaction_id": "4F1C0A9E2B7D", "subject": "CN=printer-3"},
)
SCEP_REQUEST_APPROVED = EventType(
    "scep_request_approved", Severity.INFO, ScepRequestApproved,
    "A pending SCEP request was approved and issued",
    example={"request_id": 9, "transaction_id": "4F1C0A9E2B7D", "serial": "5A3F9C0D1200", "by": "ops"},
)
SCEP_REQUEST_REJECTED = EventType(
    "scep_request_rejected", Severity.WARNING, ScepRequestRejected, "A pending SCEP request was rejected",
    example={"request_id": 9, "transaction_id": "4F1C0A9E2B7D", "by": "ops"},
)
SECURITY_TOKEN_REUSED = EventType(
    "security_token_reused", Severity.WARNING, TokenReused,
    "A one-time token was presented again after it was used (refused): a SCEP challenge password in "
    "a new SCEP transaction, or a one-time enrollment link after its download. Written at most once "
    "per token per hour. (An Android enrollment token presented again is "
    "security_kes_identity_rejected with code token_used.)",
    example={"kind": "scep_challenge", "challenge": 31, "transaction_id": "4F1C0A9E2B7D"},
)
