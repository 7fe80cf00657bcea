"""The ``[bulk]`` configuration section (bulk operations, ``mdm.core.bulk``)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from mdm.config import Section


class BulkConfig(Section):
    model_config = ConfigDict(extra="forbid")
    name = "bulk"

    # Devices queued per transaction. Larger batches are cheaper per device but hold SQLite's one
    # writer longer (device polls that write wait behind a batch).
    batch_size: int = Field(default=2000, ge=1, le=50_000)
    # How often an idle worker looks for operations another replica recorded (seconds); this
    # server's own requests wake it at once.
    idle_seconds: float = Field(default=5.0, gt=0, le=300)
    # How long DELETE /bulk/{id} recalls within the request (seconds); a longer recall (10^6
    # commands: tens of seconds) is answered 202 "recalling" and finished by the worker.
    recall_seconds: float = Field(default=5.0, ge=0, le=300)
