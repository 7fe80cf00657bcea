"""Request and response models of the admin API (they are also its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from mdm.core.library import LIBRARY
from mdm.core.tokens import SCOPES
from mdm.db.enums import CommandStatus, DeviceStatus, Protocol, Severity
from mdm.db.models import ApiToken, Command, CommandJournalEntry, Device, Event, Group, User
from mdm.db.types import as_utc

# Every time the API returns carries its offset (RFC 3339). Columns are aware already
# (``UtcDateTime``); values from elsewhere (a certificate) may not be.
Timestamp = Annotated[datetime, AfterValidator(as_utc)]

PROTOCOL_NAMES = {p.value: p.name.lower() for p in Protocol}
ProtocolName = Literal["ios", "kes", "eas"]
CommandTypeName = Literal[tuple(sorted(LIBRARY))]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- pagination ---------------------------------------------------------------------------------
class PageQuery(Strict):
    limit: int = Field(default=50, ge=1, le=500, description="page size (1..500)")
    cursor: str | None = Field(
        default=None, max_length=18, pattern=r"^[0-9]+$", description="opaque cursor from next_cursor"
    )


# ---- devices ------------------------------------------------------------------------------------
class DeviceListQuery(PageQuery):
    protocol: ProtocolName | None = None
    status: Literal[tuple(s.value for s in DeviceStatus)] | None = None  # type: ignore[valid-type]
    user: str | None = Field(default=None, max_length=255, description="owner user name")
    group: int | None = Field(default=None, ge=1, le=2**62, description="group id (includes subgroups)")
    q: str | None = Field(
        default=None,
        max_length=255,
        description="case-insensitive substring of name, serial or identifier; 3 characters or more are "
        "answered from an index, 1-2 characters scan every device (slow on a large fleet)",
    )
    count: bool = Field(
        default=False,
        description="also return `total`, the number of devices matching the filters on every page "
        "(a pass over the matching index entries: ask for it when it is shown, not on every page)",
    )


class DeviceOut(BaseModel):
    id: int
    protocol: ProtocolName
    identifier: str
    user: str | None
    group_id: int | None
    name: str | None
    model: str | None
    os_name: str | None
    os_version: str | None
    build_version: str | None
    serial_number: str | None
    imei: str | None
    phone_number: str | None
    status: str
    enrolled_at: Timestamp
    last_seen_at: Timestamp | None
    push_valid: bool
    cert_serial: str | None
    cert_not_after: Timestamp | None

    @classmethod
    def of(cls, d: Device, user: str | None = None) -> DeviceOut:
        return cls(
            id=d.id,
            protocol=PROTOCOL_NAMES[d.protocol],  # type: ignore[arg-type]
            identifier=d.identifier,
            user=user,
            group_id=d.group_id,
            name=d.name,
            model=d.model,
            os_name=d.os_name,
            os_version=d.os_version,
            build_version=d.build_version,
            serial_number=d.serial_number,
            imei=d.imei,
            phone_number=d.phone_number,
            status=d.status,
            enrolled_at=d.enrolled_at,
            last_seen_at=d.last_seen_at,
            push_valid=bool(d.push_valid),
            cert_serial=d.cert_serial,
            cert_not_after=d.cert_not_after,
        )


class DeviceDetail(DeviceOut):
    inventory: dict[str, Any]
    attributes: dict[str, Any]
    active_commands: int

    @classmethod
    def detail(cls, d: Device, user: str | None, active_commands: int) -> DeviceDetail:
        base = DeviceOut.of(d, user).model_dump()
        return cls(
            **base, inventory=d.inventory or {}, attributes=d.attributes or {},
            active_commands=active_commands,
        )


# A search (``q``) is counted up to this many matches: a common term at 10^6 devices would
# otherwise count every match (~1 s); the answer then says "more than this" (``total_capped``).
SEARCH_COUNT_CAP = 10_000


class DevicePage(BaseModel):
    items: list[DeviceOut]
    next_cursor: str | None
    total: int | None = Field(default=None, description="with `count=true`: devices matching the filters "
                              f"(with `q`, at most {SEARCH_COUNT_CAP:,}: see `total_capped`)")
    total_capped: bool | None = Field(
        default=None, description=f"with `count=true`: true when `q` matches more than {SEARCH_COUNT_CAP:,} "
        "devices and `total` is that cap, not the exact number",
    )


# ---- users & groups -----------------------------------------------------------------------------
class UserIn(Strict):
    # Explicit ranges, not \s: Python, Rust (pydantic) and ECMA (the document's readers) disagree on \s.
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x20\x7f-\x9f/\\]+$")
    email: str | None = Field(
        default=None, max_length=320, pattern=r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"
    )
    display_name: str | None = Field(default=None, max_length=255)


class UserListQuery(PageQuery):
    name: str | None = Field(default=None, max_length=255, description="exactly this user name")


class UserOut(BaseModel):
    id: int
    name: str
    email: str | None
    display_name: str | None
    created_at: Timestamp

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(id=u.id, name=u.name, email=u.email, display_name=u.display_name, created_at=u.created_at)


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class GroupIn(Strict):
    name: str = Field(min_length=1, max_length=255)
    parent_id: int | None = Field(default=None, ge=1, le=2**62)


class GroupOut(BaseModel):
    id: int
    name: str
    parent_id: int | None
    created_at: Timestamp

    @classmethod
    def of(cls, g: Group) -> GroupOut:
        return cls(id=g.id, name=g.name, parent_id=g.parent_id, created_at=g.created_at)


class GroupList(BaseModel):
    items: list[GroupOut]


class GroupParentIn(Strict):
    parent_id: int | None = Field(ge=1, le=2**62, description="the new parent group; null: top level")


class DeviceGroupIn(Strict):
    group_id: int | None = Field(ge=1, le=2**62)


# ---- commands -----------------------------------------------------------------------------------
class CommandIn(Strict):
    type: CommandTypeName  # type: ignore[valid-type]
    args: dict[str, Any] = Field(default_factory=dict)


class GroupTarget(Strict):
    group: int = Field(ge=1, le=2**62)


DeviceId = Annotated[int, Field(ge=1, le=2**62)]


def _positive_id(value: Any) -> bool:
    # JSON Schema counts 3.0 as an integer, and so does pydantic; true/false are not.
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return integral and not isinstance(value, bool) and 1 <= value <= 2**62
DeviceIds = Annotated[list[DeviceId], Field(min_length=1, max_length=10000)]


class BulkCommandIn(Strict):
    devices: DeviceIds | Literal["all"] | GroupTarget = Field(
        description="device ids (1..10000 of them), \"all\", or {\"group\": id} (with its subgroups)"
    )
    type: CommandTypeName  # type: ignore[valid-type]
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("devices", mode="before")
    @classmethod
    def _explain_ids(cls, value: Any) -> Any:
        # Before the union is tried, so that a bad list gets one clear message, not one per branch.
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one device id, 'all' or {'group': id}")
            if len(value) > 10000:
                raise ValueError("at most 10000 ids per request; use a group or 'all'")
            if not all(_positive_id(v) for v in value):
                raise ValueError("device ids are positive integers")
        return value


class JournalOut(BaseModel):
    at: Timestamp
    status: str
    detail: str | None

    @classmethod
    def of(cls, j: CommandJournalEntry) -> JournalOut:
        return cls(at=j.at, status=j.status, detail=j.detail)


class CommandOut(BaseModel):
    guid: str
    device_id: int
    type: str
    args: dict[str, Any]
    status: Literal[tuple(s.value for s in CommandStatus)]  # type: ignore[valid-type]
    result_info: str | None
    result_data: dict[str, Any] | None
    created_by: str | None
    created_at: Timestamp
    updated_at: Timestamp
    delivered_at: Timestamp | None
    finished_at: Timestamp | None
    attempts: int
    journal: list[JournalOut] | None = None

    @classmethod
    def of(cls, c: Command, journal: list[CommandJournalEntry] | None = None) -> CommandOut:
        return cls(
            guid=c.guid,
            device_id=c.device_id,
            type=c.type,
            args=c.args or {},
            status=c.status,
            result_info=c.result_info,
            result_data=c.result_data,
            created_by=c.created_by,
            created_at=c.created_at,
            updated_at=c.updated_at,
            delivered_at=c.delivered_at,
            finished_at=c.finished_at,
            attempts=c.attempts,
            journal=None if journal is None else [JournalOut.of(j) for j in journal],
        )


class CommandLogQuery(PageQuery):
    pass


class CommandPage(BaseModel):
    items: list[CommandOut]
    next_cursor: str | None


class CommandTypesQuery(Strict):
    args: bool = Field(default=False, description="include each type's argument schema per protocol")


class CommandTypeOut(BaseModel):
    name: str
    description: str
    protocols: list[str]
    args: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="with ?args=true: the JSON Schema of the arguments per protocol whose translator "
        "describes them (examples under each property's `examples`)",
    )


class CommandTypeList(BaseModel):
    items: list[CommandTypeOut]


# ---- events -------------------------------------------------------------------------------------
# Severities from the least to the most severe: min_severity=S means S or worse.
SEVERITY_ORDER = [s.value for s in Severity]
SeverityName = Literal[tuple(SEVERITY_ORDER)]  # type: ignore[valid-type]


class EventQuery(PageQuery):
    type: str | None = Field(default=None, max_length=64)
    severity: SeverityName | None = Field(default=None, description="exactly this severity")  # type: ignore[valid-type]
    min_severity: SeverityName | None = Field(  # type: ignore[valid-type]
        default=None, description="this severity or worse (info < warning < functional_failure < critical)"
    )
    device: int | None = Field(default=None, ge=1, le=2**62)
    since: datetime | None = None
    after: int | None = Field(default=None, ge=0, le=2**62, description="only events with a larger id")


class EventOut(BaseModel):
    id: int
    uuid: str
    type: str
    severity: str
    device_id: int | None
    user_id: int | None
    body: dict[str, Any]
    created_at: Timestamp
    delivered_at: Timestamp | None

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            id=e.id,
            uuid=e.uuid,
            type=e.type,
            severity=e.severity,
            device_id=e.device_id,
            user_id=e.user_id,
            body=e.body or {},
            created_at=e.created_at,
            delivered_at=e.delivered_at,
        )


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


# ---- tokens -------------------------------------------------------------------------------------
ScopeName = Literal[tuple(SCOPES)]  # type: ignore[valid-type]


class TokenIn(Strict):
    # The name is a path parameter of DELETE /tokens/{name}: the same characters as any such parameter.
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:@-]+$")
    scopes: list[ScopeName] = Field(min_length=1, max_length=16)  # type: ignore[valid-type]


class TokenOut(BaseModel):
    name: str
    scopes: list[str]
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked: bool
    token: str | None = Field(default=None, description="the secret, returned once at creation")

    @classmethod
    def of(cls, row: ApiToken, secret: str | None = None) -> TokenOut:
        return cls(name=row.name, scopes=row.scopes.split(), created_at=row.created_at,
                   last_used_at=row.last_used_at, revoked=row.revoked, token=secret)


class TokenList(BaseModel):
    items: list[TokenOut]


# ---- health -------------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
