"""Typed records of what Exchange answers, parsed from the objects a cmdlet writes.

The runner hands every output object over as a ``PSRecord``: a plain mapping of property name to
value, values already converted from CLIXML to ``str``, ``int``, ``bool``, ``datetime`` (aware,
UTC), ``timedelta``, ``list`` or ``None``; an enum or any other complex value arrives as its
string form. The parsers here turn those into the records the service works with, and refuse an
object that lacks what identifies it (``ExchangeProtocolError``), never guessing.

Exchange writes "Unlimited" for an ``Unlimited<T>`` that has no limit; those fields are ``None``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mdm.eas.cmdlets import ParamValue, legacy_policy_properties
from mdm.eas.errors import ExchangeProtocolError

PSRecord = Mapping[str, Any]
# .NET TimeSpan's invariant form: [d.]hh:mm:ss[.fffffff]
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$")


def _str(rec: PSRecord, key: str) -> str | None:
    value = rec.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(rec: PSRecord, key: str, what: str) -> str:
    value = _str(rec, key)
    if value is None:
        raise ExchangeProtocolError(f"{what} without {key}: {sorted(rec)[:12]}")
    return value


def _bool(rec: PSRecord, key: str) -> bool | None:
    value = rec.get(key)
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    return None


def _int(rec: PSRecord, key: str) -> int | None:
    """An int, or None for "Unlimited" / absent / not a number."""
    value = rec.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _time(rec: PSRecord, key: str) -> datetime | None:
    value = rec.get(key)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _span(rec: PSRecord, key: str) -> timedelta | None:
    """A TimeSpan ("00:15:00", "1.00:00:00" or a timedelta), or None for "Unlimited"."""
    value = rec.get(key)
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        return None
    match = _TIMESPAN.match(value.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    return timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds))


# ---- mailboxes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A mailbox's Client Access settings (Get-CASMailbox)."""

    identity: str  # what later cmdlets are given (-Identity / -Mailbox)
    guid: str | None
    name: str
    display_name: str | None
    sam_account_name: str | None
    primary_smtp: str | None
    activesync_enabled: bool
    policy: str | None  # ActiveSyncMailboxPolicy (the policy's name)
    has_partnership: bool  # HasActiveSyncDevicePartnership

    @property
    def owner(self) -> str:
        """The user this mailbox belongs to, as the common device list names owners."""
        return (self.primary_smtp or self.sam_account_name or self.name).lower()


def parse_mailbox(rec: PSRecord) -> Mailbox:
    identity = _required(rec, "Identity", "a CASMailbox")
    return Mailbox(
        identity=identity,
        guid=_str(rec, "Guid"),
        name=_str(rec, "Name") or identity,
        display_name=_str(rec, "DisplayName"),
        sam_account_name=_str(rec, "SamAccountName"),
        primary_smtp=_str(rec, "PrimarySmtpAddress"),
        activesync_enabled=bool(_bool(rec, "ActiveSyncEnabled")),
        policy=_str(rec, "ActiveSyncMailboxPolicy"),
        has_partnership=bool(_bool(rec, "HasActiveSyncDevicePartnership")),
    )


# ---- devices --------------------------------------------------------------------------------


class WipeState(enum.StrEnum):
    NONE = "none"
    # Requested (Clear-…Device ran); Exchange sends the wipe at the device's next sync and keeps
    # sending it at every sync until the device is removed.
    PENDING = "pending"
    # The device acknowledged the wipe (DeviceWipeAckTime); it is still listed, and would be wiped
    # again, until it is removed.
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True, slots=True)
class DeviceStatistics:
    """One ActiveSync device of a mailbox (Get-ActiveSyncDeviceStatistics)."""

    identity: str  # the device's Exchange identity (Clear/Remove -Identity)
    device_id: str  # the EAS DeviceId: the device's identifier in the common list
    device_type: str | None
    model: str | None
    os: str | None
    friendly_name: str | None
    imei: str | None
    user_agent: str | None
    first_sync: datetime | None
    last_sync: datetime | None  # LastSuccessSync
    last_sync_attempt: datetime | None
    policy_applied: str | None  # DevicePolicyApplied
    policy_status: str | None  # DevicePolicyApplicationStatus
    access_state: str | None  # DeviceAccessState (Allowed, Blocked, Quarantined...)
    status: str | None  # Status (DeviceOk, DeviceWipePending, DeviceWipeSucceeded...)
    wipe_requested: datetime | None  # DeviceWipeRequestTime
    wipe_sent: datetime | None  # DeviceWipeSentTime
    wipe_acknowledged: datetime | None  # DeviceWipeAckTime

    @property
    def wipe_state(self) -> WipeState:
        if self.wipe_acknowledged is not None:
            return WipeState.ACKNOWLEDGED
        if self.wipe_requested is not None or (self.status or "").startswith("DeviceWipe"):
            return WipeState.PENDING
        return WipeState.NONE


def parse_device_statistics(rec: PSRecord) -> DeviceStatistics:
    return DeviceStatistics(
        identity=_required(rec, "Identity", "an ActiveSync device"),
        device_id=_required(rec, "DeviceID", "an ActiveSync device"),
        device_type=_str(rec, "DeviceType"),
        model=_str(rec, "DeviceModel"),
        os=_str(rec, "DeviceOS"),
        friendly_name=_str(rec, "DeviceFriendlyName"),
        imei=_str(rec, "DeviceIMEI"),
        user_agent=_str(rec, "DeviceUserAgent"),
        first_sync=_time(rec, "FirstSyncTime"),
        last_sync=_time(rec, "LastSuccessSync"),
        last_sync_attempt=_time(rec, "LastSyncAttemptTime"),
        policy_applied=_str(rec, "DevicePolicyApplied"),
        policy_status=_str(rec, "DevicePolicyApplicationStatus"),
        access_state=_str(rec, "DeviceAccessState"),
        status=_str(rec, "Status"),
        wipe_requested=_time(rec, "DeviceWipeRequestTime"),
        wipe_sent=_time(rec, "DeviceWipeSentTime"),
        wipe_acknowledged=_time(rec, "DeviceWipeAckTime"),
    )


# ---- ActiveSync mailbox policies ------------------------------------------------------------


class PolicySettings(BaseModel):
    """The typed settings of an ActiveSync mailbox policy that this service manages. ``None`` on
    a limit means "Unlimited". In an edit only the fields given are changed (``model_fields_set``)."""

    model_config = ConfigDict(extra="forbid")

    password_required: bool | None = None  # DevicePasswordEnabled
    min_password_length: int | None = Field(default=None, ge=1, le=16)  # MinDevicePasswordLength
    alphanumeric_password_required: bool | None = None  # AlphanumericDevicePasswordRequired
    min_complex_characters: int | None = Field(default=None, ge=1, le=4)  # MinDevicePasswordComplexCharacters
    allow_simple_password: bool | None = None  # AllowSimpleDevicePassword
    # MaxInactivityTimeDeviceLock: Exchange takes 1 minute to 1 hour.
    inactivity_lock_seconds: int | None = Field(default=None, ge=60, le=3600)
    # MaxDevicePasswordFailedAttempts
    wipe_after_failed_attempts: int | None = Field(default=None, ge=4, le=16)
    password_expiration_days: int | None = Field(default=None, ge=1, le=730)  # DevicePasswordExpiration
    password_history: int | None = Field(default=None, ge=0, le=50)  # DevicePasswordHistory
    require_device_encryption: bool | None = None  # RequireDeviceEncryption
    require_storage_card_encryption: bool | None = None  # RequireStorageCardEncryption
    camera_allowed: bool | None = None  # AllowCamera
    storage_card_allowed: bool | None = None  # AllowStorageCard
    allow_non_provisionable_devices: bool | None = None  # AllowNonProvisionableDevices

    def to_parameters(self, *, only_set: bool = False) -> dict[str, ParamValue]:
        """Exchange parameter names to values; limits left None are sent as "Unlimited"."""
        out: dict[str, ParamValue] = {}
        for field, (param, kind) in _POLICY_FIELDS.items():
            if only_set and field not in self.model_fields_set:
                continue
            value = getattr(self, field)
            if kind == "bool":
                if value is not None:
                    out[param] = bool(value)
            elif kind == "int":
                out[param] = "Unlimited" if value is None and param in _UNLIMITED else value
            elif kind == "seconds":
                out[param] = "Unlimited" if value is None else timedelta(seconds=value)
            elif kind == "days":
                out[param] = "Unlimited" if value is None else timedelta(days=value)
        return {k: v for k, v in out.items() if v is not None}


# field -> (Exchange parameter/property, kind)
_POLICY_FIELDS: Mapping[str, tuple[str, str]] = {
    "password_required": ("DevicePasswordEnabled", "bool"),
    "min_password_length": ("MinDevicePasswordLength", "int"),
    "alphanumeric_password_required": ("AlphanumericDevicePasswordRequired", "bool"),
    "min_complex_characters": ("MinDevicePasswordComplexCharacters", "int"),
    "allow_simple_password": ("AllowSimpleDevicePassword", "bool"),
    "inactivity_lock_seconds": ("MaxInactivityTimeDeviceLock", "seconds"),
    "wipe_after_failed_attempts": ("MaxDevicePasswordFailedAttempts", "int"),
    "password_expiration_days": ("DevicePasswordExpiration", "days"),
    "password_history": ("DevicePasswordHistory", "int"),
    "require_device_encryption": ("RequireDeviceEncryption", "bool"),
    "require_storage_card_encryption": ("RequireStorageCardEncryption", "bool"),
    "camera_allowed": ("AllowCamera", "bool"),
    "storage_card_allowed": ("AllowStorageCard", "bool"),
    "allow_non_provisionable_devices": ("AllowNonProvisionableDevices", "bool"),
}
# Parameters whose "no limit" is the literal Unlimited (the others are simply not set).
_UNLIMITED = frozenset({"MaxDevicePasswordFailedAttempts"})
POLICY_PARAMETERS = frozenset(param for param, _ in _POLICY_FIELDS.values())


@dataclass(frozen=True, slots=True)
class MailboxPolicy:
    """An ActiveSync mailbox policy (Get-ActiveSyncMailboxPolicy)."""

    identity: str
    name: str
    guid: str | None
    is_default: bool
    settings: PolicySettings


def parse_policy(rec: PSRecord) -> MailboxPolicy:
    rec = legacy_policy_properties(rec)  # 2013+ shows PasswordEnabled for DevicePasswordEnabled...
    identity = _required(rec, "Identity", "an ActiveSync mailbox policy")
    values: dict[str, Any] = {}
    for field, (param, kind) in _POLICY_FIELDS.items():
        if kind == "bool":
            values[field] = _bool(rec, param)
        elif kind == "int":
            values[field] = _int(rec, param)
        elif kind == "seconds":
            span = _span(rec, param)
            values[field] = int(span.total_seconds()) if span is not None else None
        else:
            span = _span(rec, param)
            values[field] = span.days if span is not None else None
    try:
        settings = PolicySettings.model_construct(**values)
    except (TypeError, ValueError) as exc:  # pragma: no cover - model_construct does not validate
        raise ExchangeProtocolError(f"unreadable policy {identity}: {exc}") from exc
    return MailboxPolicy(
        identity=identity,
        name=_str(rec, "Name") or identity,
        guid=_str(rec, "Guid"),
        # 2010 calls it IsDefaultPolicy, 2013+ IsDefault.
        is_default=bool(_bool(rec, "IsDefault") or _bool(rec, "IsDefaultPolicy")),
        settings=settings,
    )


@dataclass(frozen=True, slots=True)
class AcceptedDomain:
    name: str
    domain_name: str
    is_default: bool


def parse_accepted_domain(rec: PSRecord) -> AcceptedDomain:
    name = _required(rec, "Name", "an accepted domain")
    return AcceptedDomain(name=name, domain_name=_str(rec, "DomainName") or name,
                          is_default=bool(_bool(rec, "Default")))
