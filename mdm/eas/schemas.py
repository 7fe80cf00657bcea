"""Admin API models of EAS discovery (``/api/v1/eas/discovery``, ``/eas/mailboxes``,
``/eas/devices/{id}``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mdm.api.schemas import PageQuery, Timestamp
from mdm.eas.tables import EasDiscovery, EasMailbox, EasPartnership

WIPE_NOTE = "Exchange wipes this device at every sync until it is removed"


class DiscoveryOut(BaseModel):
    requested_at: Timestamp | None = Field(description="a run asked for and not started yet")
    requested_by: str | None
    started_at: Timestamp | None = Field(description="the last (or current) run's start")
    finished_at: Timestamp | None = Field(description="null while a run is in progress")
    running: bool
    outcome: str | None = Field(description='"ok", "partial" (nothing marked vanished) or "failed"')
    error: str | None
    runner: str | None = Field(description="host:pid of the replica that ran it")
    mailboxes: int
    devices: int
    policies: int
    vanished: int
    failed_mailboxes: int

    @classmethod
    def of(cls, row: EasDiscovery | None) -> DiscoveryOut:
        if row is None:
            return cls(
                requested_at=None,
                requested_by=None,
                started_at=None,
                finished_at=None,
                running=False,
                outcome=None,
                error=None,
                runner=None,
                mailboxes=0,
                devices=0,
                policies=0,
                vanished=0,
                failed_mailboxes=0,
            )
        return cls(
            requested_at=row.requested_at,
            requested_by=row.requested_by,
            started_at=row.started_at,
            finished_at=row.finished_at,
            running=row.started_at is not None and row.finished_at is None,
            outcome=row.outcome,
            error=row.error,
            runner=row.runner,
            mailboxes=row.mailboxes,
            devices=row.devices,
            policies=row.policies,
            vanished=row.vanished,
            failed_mailboxes=row.failed_mailboxes,
        )


class MailboxQuery(PageQuery):
    q: str | None = Field(
        default=None, max_length=255, description="part of identity, name, display name or address"
    )


class WipeOut(BaseModel):
    state: str = Field(description='"none", "pending" (requested, not acknowledged) or "acknowledged"')
    requested_at: Timestamp | None
    sent_at: Timestamp | None
    acknowledged_at: Timestamp | None
    note: str | None = Field(description="set while a wipe is requested: what Exchange keeps doing")


class PartnershipOut(BaseModel):
    device_id: int
    mailbox_id: int
    mailbox: str | None = None
    exchange_identity: str
    device_type: str | None
    user_agent: str | None
    first_sync: Timestamp | None
    last_sync: Timestamp | None
    last_sync_attempt: Timestamp | None
    policy_applied: str | None
    policy_status: str | None
    access_state: str | None
    status: str | None
    wipe: WipeOut
    seen_at: Timestamp
    vanished_at: Timestamp | None

    @classmethod
    def of(cls, p: EasPartnership, mailbox: str | None = None) -> PartnershipOut:
        wipe = WipeOut(
            state=p.wipe_state,
            requested_at=p.wipe_requested_at,
            sent_at=p.wipe_sent_at,
            acknowledged_at=p.wipe_acknowledged_at,
            note=WIPE_NOTE if p.wipe_state != "none" else None,
        )
        return cls(
            device_id=p.device_id,
            mailbox_id=p.mailbox_id,
            mailbox=mailbox,
            exchange_identity=p.exchange_identity,
            device_type=p.device_type,
            user_agent=p.user_agent,
            first_sync=p.first_sync,
            last_sync=p.last_sync,
            last_sync_attempt=p.last_sync_attempt,
            policy_applied=p.policy_applied,
            policy_status=p.policy_status,
            access_state=p.access_state,
            status=p.status,
            wipe=wipe,
            seen_at=p.seen_at,
            vanished_at=p.vanished_at,
        )


class MailboxOut(BaseModel):
    id: int
    identity: str
    name: str
    display_name: str | None
    primary_smtp: str | None
    sam_account_name: str | None
    user_id: int | None
    activesync_enabled: bool
    policy: str | None
    has_partnership: bool
    seen_at: Timestamp
    vanished_at: Timestamp | None

    @classmethod
    def of(cls, m: EasMailbox) -> MailboxOut:
        return cls(
            id=m.id,
            identity=m.identity,
            name=m.name,
            display_name=m.display_name,
            primary_smtp=m.primary_smtp,
            sam_account_name=m.sam_account_name,
            user_id=m.user_id,
            activesync_enabled=m.activesync_enabled,
            policy=m.policy,
            has_partnership=m.has_partnership,
            seen_at=m.seen_at,
            vanished_at=m.vanished_at,
        )


class MailboxDetail(MailboxOut):
    partnerships: list[PartnershipOut]


class MailboxPage(BaseModel):
    items: list[MailboxOut]
    next_cursor: str | None


class EasDeviceOut(BaseModel):
    device_id: int
    identifier: str = Field(description="the EAS DeviceId")
    status: str
    model: str | None
    os_name: str | None
    os_version: str | None
    user_id: int | None
    last_seen_at: Timestamp | None
    partnerships: list[PartnershipOut]
